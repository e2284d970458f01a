-- PDF forms, new in 2.0
return {}
