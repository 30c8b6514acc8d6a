# Fresh-eyes review of cperf2: a guest that reloads another bundle from inside a call
# waited for the call running in that bundle as long as the loader's busy wait allows
# (its call_timeout, 10 s without one), holding its own VM lock, past its own call's
# time limit: a call limited to 0.2 s took as long as the other bundle's call (3 s).
# The wait now ends at the calling call's deadline (the reload is then not applied).
from common import *
import tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
B = """
local function hold() local t = os.clock() + 3 while os.clock() < t do end end
function polyplug_init()
    return { ["t.b"] = { factory = function() return {} end, functions = { [0] = hold } } }, { code = 0 }
end
"""
A = """
local ffi = require("ffi")
require("abi")
local host
local path = %r
local function f(_, _, out)
    local err = ffi.new("AbiError[1]")
    host.reload_bundle(host, path, #path, err)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = err[0].code
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.a"] = { factory = function() return {} end, functions = { [0] = f } } }, { code = 0 }
end
"""
bdir = make_bundle(tmp, "b", B)
rt = runtime(hot_reload_enabled=True)
rt.load_bundle(bdir)
rt.load_bundle(make_bundle(tmp, "a", A % str(bdir)))
b = rt.contract("t.b", 1, signatures={"hold": signature("hold", 0)})
a = rt.contract("t.a", 1, signatures={"f": signature("f", 0, [], "u32")})
th = threading.Thread(target=b.hold)
th.start()
time.sleep(0.2)
t0 = time.monotonic()
try:
    outcome = "reload code %d" % a.with_limits(timeout=0.2).f()
except polyplug.PolyplugError as exc:
    outcome = type(exc).__name__
took = time.monotonic() - t0
print("limited call reloading a busy bundle:", outcome, "within its limit:", took < 1.5,
      flush=True)
th.join()
print("reload from a call after the other call ended:", a.f())
rt.close()
print("finished")
