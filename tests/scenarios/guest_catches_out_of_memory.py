# Issue 12.4: a guest that catches its own out-of-memory error left the heap full of
# garbage; the next innocent call failed with GuestOutOfMemory.
from common import *
import tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function hog_and_catch()
    pcall(function()
        local t = {}
        for i = 1, 1e9 do t[i] = string.rep("x", 1000) .. i end
    end)
end
local function small(_, _, out)
    local t = {}
    for i = 1, 1000 do t[i] = string.rep("y", 100) .. i end
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = #t
end
function polyplug_init()
    return { ["t.oom"] = { factory = function() return {} end, functions = { [0] = hog_and_catch, small } } }, { code = 0 }
end
"""
rt = runtime(polyplug.LuaConfig(memory_limit=8 * 1024 * 1024))
rt.load_bundle(make_bundle(tmp, "oom", LUA))
c = rt.contract("t.oom", 1, signatures={"hog": signature("hog", 0), "small": signature("small", 1, [], "u32")})
c.hog()
print("hog caught its own error")
print("next call:", c.small())
