-- main module engine 5.1
local M = {}
function M.start() return "engine 5.1" end
function M.plugins() return {"pdf"} end
return M
