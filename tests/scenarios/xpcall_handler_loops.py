# Issue 12.2: an xpcall message handler that never returns escaped both the timeout and
# cancellation (LuaJIT runs the handler of an error raised by the hook).  Now the call
# fails with CallTimeout / Cancelled and the VM answers the next call.
from common import *
import tempfile, threading
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function loop() while true do end end
local function handler_loops() xpcall(loop, loop) end
local function handler_loops_on_error() xpcall(function() error("boom") end, loop) end
local function nested_handlers()
    xpcall(loop, function() xpcall(loop, function() while true do end end) end)
end
function polyplug_init()
    return { ["t.xp"] = { factory = function() return {} end, functions = {
        [0] = handler_loops, handler_loops_on_error, nested_handlers,
        function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 7 end,
    } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "xp", LUA)

def attempt(label, fn):
    try:
        fn()
        print(label, "returned", flush=True)
    except polyplug.PolyplugError as exc:
        print(label, type(exc).__name__, flush=True)

def main():
    rt = runtime(polyplug.LuaConfig(call_timeout=0.2))
    rt.load_bundle(d)
    c = rt.contract("t.xp", 1)
    for fn in (0, 1, 2):
        attempt("timeout fn %d:" % fn, c.function(fn))
        print("next call:", c.function(3, [], "u32")(), flush=True)
    rt2 = runtime()
    rt2.load_bundle(d)
    for fn in (0, 1, 2):
        token = polyplug.CancelToken()
        limited = rt2.contract("t.xp", 1, cancel=token)
        threading.Timer(0.2, token.cancel).start()
        attempt("cancel fn %d:" % fn, limited.function(fn))
    print("next call after cancel:", rt2.contract("t.xp", 1).function(3, [], "u32")(), flush=True)
    rt.close()
    rt2.close()

run_with_timeout(main, 60)
