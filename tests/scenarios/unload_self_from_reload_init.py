# Lifecycle review finding: during a hot reload, the *new* version's polyplug_init unloads its own
# bundle (HostApi.unload_bundle).  The unload retires the bundle record `b` (VM
# reaped, L = NULL, record buried) while reload() in pp_lua_bundle.c still holds `b`;
# after init it swaps the new VM into the retired record (old == NULL) and the runtime
# commits the window.  Expected: the reload fails (or the bundle is gone).
# Observed: reload "succeeds"; the contract is published again though the runtime no
# longer knows the bundle (not listed, unload: BundleNotFound); the first call runs,
# and its vm_leave sees `retired` and closes the VM under the published contract.
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
V1 = """
local ffi = require("ffi")
function polyplug_init(h)
    return { ["t.z"] = { factory = function() return {} end,
        functions = { [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 1 end } } }, { code = 0 }
end
"""
V2 = """
local ffi = require("ffi")
require("abi")
function polyplug_init(h)
    local host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    local err = ffi.new("AbiError[1]")
    host.unload_bundle(host, %dULL, err)
    return { ["t.z"] = { factory = function() return {} end,
        functions = { [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 2 end } } }, { code = 0 }
end
""" % polyplug.bundle_id("z")
d = make_bundle(tmp, "z", V1)
rt = runtime(hot_reload_enabled=True)
rt.load_bundle(d)
(d / "bundle.lua").write_text(V2)
try:
    rt.reload_bundle(d)
    print("reload: ok")
except Exception as e:
    print("reload raised:", type(e).__name__, e)
print("listed bundles:", rt.list_bundles())
try:
    h = handle(rt, "t.z")
except polyplug.PluginNotFound:
    h = polyplug.GuestContractHandle.null()
print("handle found:", not h.is_null())
for i in range(2):
    out = ffi.new("uint32_t[1]")
    print("call %d:" % i, checked_call(rt, h, 0, out) if not h.is_null() else None, "out", out[0])
try:
    rt.unload_bundle(polyplug.bundle_id("z"))
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
