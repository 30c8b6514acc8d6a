# Issue 11.4: a Runtime garbage-collected without close(), whose guest has a __gc
# finalizer that logs.  The callback handle died before the C runtime: the finalizer's
# log record reached Python with a dead handle (Fatal Python error, exit 134).
from common import *
import gc, tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local pg = require("polyplug_guest")
keep = nil
function polyplug_init(h)
    keep = ffi.gc(ffi.new("int[1]"), function()
        pg.log(h, pg.LogLevel.Warn, "guest", "finalizer ran")
    end)
    return { ["t.fin"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
records = []
def make():
    rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
        lambda level, scope, message: records.append(message)).build()
    rt.load_bundle(make_bundle(tmp, "fin", LUA))
make()
gc.collect()
print("finalizer logged:", "finalizer ran" in records)
print("process survived")
