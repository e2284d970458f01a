-- compatibility shims for main program 0.x, removed in 5.1
return {}
