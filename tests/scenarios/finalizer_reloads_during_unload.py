# unload_locked (pp_runtime.c) retires the bundle and closes its VM -- which runs the
# guest's __gc finalizers on this thread, with the (recursive) flow lock held -- and
# only afterwards resets the instance counts, invalidates the registry entries and drops
# the declared dependencies *by bundle id*.  A finalizer that loads the same bundle
# again (HostApi.load_bundle, allowed: loads nest) gets a fresh registration under the
# same id, which the unload then wipes: the runtime and the loader say the bundle is
# loaded (load_bundle answers BundleAlreadyLoaded, list_bundles lists it), but none of
# its contracts can be found, and it never comes back until unloaded again.
# Expected: either the nested load is refused (the bundle is being unloaded) or it
# stays fully usable.
from common import *
import os, tempfile
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
d = Path(tmp) / "phoenix"
LUA = r"""
local ffi = require("ffi")
require("abi")
local path = %r
local host
function polyplug_init(h)
    host = ffi.cast("const HostApi *", ffi.cast("uintptr_t", h))
    -- when this VM is closed, load the bundle again
    PHOENIX = ffi.gc(ffi.new("int[1]"), function()
        local err = ffi.new("AbiError[1]")
        host.load_bundle(host, path, #path, err)
        io.stdout:write("finalizer: load_bundle code ", tostring(err[0].code), "\n")
        io.stdout:flush()
    end)
    return { ["t.phoenix"] = { factory = function() return {} end, functions = {
        [0] = function(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 7 end } } },
        { code = 0 }
end
""" % str(d)
make_bundle(tmp, "phoenix", LUA)
SIG = {"answer": signature("answer", 0, [], "u32")}

def main():
    rt = runtime()
    rt.load_bundle(d)
    print("before:", rt.contract("t.phoenix", 1, signatures=SIG).answer(), flush=True)
    rt.unload_bundle("phoenix")
    bid = polyplug.bundle_id("phoenix")
    print("listed after unload:", bid in [b for b in rt.list_bundles()], flush=True)
    try:
        print("contract after unload:", rt.contract("t.phoenix", 1, signatures=SIG).answer())
    except polyplug.PolyplugError as exc:
        print("contract after unload:", type(exc).__name__)
    try:
        rt.load_bundle(d)
        print("load again: ok")
    except polyplug.PolyplugError as exc:
        print("load again:", type(exc).__name__)
    os._exit(0)

run_with_timeout(main, 20)
