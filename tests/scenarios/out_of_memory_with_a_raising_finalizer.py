from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function f()
    ffi.gc(ffi.new("int[1]"), function() error("finalizer boom") end)
    local t = {}
    while true do t[#t + 1] = {} end      -- hit the memory limit: rc == LUA_ERRMEM
end
function polyplug_init()
    return { ["t.f"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "fin", LUA)
rt = runtime(polyplug.LuaConfig(memory_limit=1 << 20))
rt.load_bundle(d)
iface = rt.resolve_guest_contract(handle(rt, "t.f"))
err = ffi.new("AbiError *")
lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, err)
print("code", err.code, ffi.string(err.message.ptr, err.message.len))
print("process survived")
