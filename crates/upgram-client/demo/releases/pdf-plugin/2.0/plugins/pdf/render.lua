-- PDF renderer 2.0
return function(doc) return "rendered with pdf-plugin 2.0: " .. doc end
