# Issue 12.7: call_timeout=1e10 timed out at once (int64 overflow); memory_limit=2**64-1
# failed init (the cap wrapped); inf, 1e30 and 2**64 raised cffi's OverflowError.
from common import *
import tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function f(_, _, out) local t = {} for i = 1, 1000 do t[i] = i end ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = #t end
function polyplug_init()
    return { ["t.huge"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "huge", LUA)
sig = {"f": signature("f", 0, [], "u32")}
for kw in ({"call_timeout": 1e10}, {"call_timeout": float("inf")}, {"call_timeout": 1e30},
           {"memory_limit": 2**64 - 1}, {"memory_limit": 2**64}, {"memory_limit": 10**30}):
    rt = runtime(polyplug.LuaConfig(**kw))
    rt.load_bundle(d)
    print(kw, "->", rt.contract("t.huge", 1, signatures=sig).f())
    rt.close()
rt = runtime()
rt.load_bundle(d)
for t in (1e10, float("inf"), 1e30):
    print("per-call", t, "->", rt.contract("t.huge", 1, signatures=sig, timeout=t).f())
for bad in (0, -1, float("nan")):
    try:
        polyplug.LuaConfig(call_timeout=bad)._to_c()
    except polyplug.InvalidArgument as exc:
        print("rejected", bad, "names the field:", "LuaConfig.call_timeout" in str(exc))
