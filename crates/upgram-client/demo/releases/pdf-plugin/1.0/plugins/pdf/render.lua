-- PDF renderer 1.0
return function(doc) return "rendered with pdf-plugin 1.0: " .. doc end
