-- main module engine 5.0
local M = {}
function M.start() return "engine 5.0" end
return M
