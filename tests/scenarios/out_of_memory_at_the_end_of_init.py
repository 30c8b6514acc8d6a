# memory_limit + polyplug_init that ends right at the limit: run_entry's unprotected
# lua_pushcfunction(collect_registrations) raises LUA_ERRMEM outside any pcall -> panic/exit.
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
function polyplug_init()
    jit.off()
    local regs = { ["t.m"] = { factory = function() return {} end, functions = { [0] = function() end } } }
    local status = { code = 0 }
    local keep = {}
    for i = 1, 4096 do keep[i] = false end
    local ct = ffi.typeof("uint8_t[?]")
    collectgarbage("collect"); collectgarbage("stop")
    local size, i = 1048576, 0
    while size >= 1 do
        local ok, cd = pcall(ffi.new, ct, size)
        if ok then i = i + 1; keep[i] = cd else size = math.floor(size / 2) end
    end
    _G.keep = keep
    return regs, status
end
"""
d = make_bundle(tmp, "m", LUA)
rt = runtime(polyplug.LuaConfig(memory_limit=4 << 20))
try:
    rt.load_bundle(d)
    print("loaded")
except polyplug.PolyplugError as e:
    print("clean failure:", type(e).__name__, e)
print("process survived")
