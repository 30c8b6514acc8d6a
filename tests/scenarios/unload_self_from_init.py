# Lifecycle review finding: a bundle's polyplug_init calls HostApi.unload_bundle(<its own id>).
# Expected: the load fails (or the bundle is cleanly gone); close() is prompt.
# Observed: the load *succeeds*, the bundle's contract is published and callable, but
# the runtime no longer lists it, unload says "bundle not found", and close() waits its
# whole timeout and raises RuntimeBusy (pp_runtime_free then waits 10 s and leaks).
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
require("abi")
function polyplug_init(h)
    local host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    local err = ffi.new("AbiError[1]")
    host.unload_bundle(host, %dULL, err)
    return { ["t.zombie"] = { factory = function() return {} end,
        functions = { [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 42 end } } }, { code = 0 }
end
""" % polyplug.bundle_id("zombie")
d = make_bundle(tmp, "zombie", LUA)
rt = runtime()
try:
    rt.load_bundle(d)
    print("load: ok")
except Exception as e:
    print("load raised:", type(e).__name__, e)
print("listed bundles:", rt.list_bundles())
try:
    h = handle(rt, "t.zombie")
except polyplug.PluginNotFound:
    h = polyplug.GuestContractHandle.null()
print("handle found:", not h.is_null())
if not h.is_null():
    out = ffi.new("uint32_t[1]")
    print("call:", checked_call(rt, h, 0, out), "out", out[0])
try:
    rt.unload_bundle(polyplug.bundle_id("zombie"))
    print("unload: ok")
except Exception as e:
    print("unload raised:", type(e).__name__, e)
t0 = time.monotonic()
try:
    rt.close(timeout=2)
    print("close: ok in %.2f s" % (time.monotonic() - t0))
except Exception as e:
    print("close raised after %.2f s:" % (time.monotonic() - t0), type(e).__name__, e)
os._exit(0)
