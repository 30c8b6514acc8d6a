# Breaker (issue 11 item 4 comes back): a Runtime with a logger is dropped inside
# another runtime's flow (here rt1's log callback while rt1 loads a bundle).
# pp_runtime_free(rt2) cannot close rt2's VM (its close is deferred until this thread
# releases rt1->ops), waits 10 s, and leaves the runtime allocated; the ffi.gc lambda
# then returns and the callback handle dies.  When rt1's load finishes, the deferred
# close runs rt2's guest __gc finalizer, which logs through the dead handle:
# "Fatal Python error: ffi.from_handle() ... garbage" (exit 134), or worse.
import sys, os, time, gc
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LOGGING = """
local pg = require("polyplug_guest")
function polyplug_init(h)
    pg.log(h, pg.LogLevel.Warn, "guest", "init")
    return { ["t.a"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
FIN = """
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
a = make_bundle(tmp, "a", LOGGING)
f = make_bundle(tmp, "fin", FIN)
seen = []
def log(level, scope, message):
    if message != "init":
        return
    rt2 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
        lambda lv, sc, msg: seen.append(msg)).build()
    rt2.load_bundle(f)
    t0 = time.monotonic()
    del rt2
    gc.collect()
    print("rt2 dropped after %.2f s" % (time.monotonic() - t0), flush=True)
rt1 = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(log).build()
rt1.load_bundle(a)
print("rt1 load returned; finalizer records seen:", seen, flush=True)
print("process survived")
