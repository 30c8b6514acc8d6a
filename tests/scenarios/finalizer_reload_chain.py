# Lifecycle review finding: a guest whose __gc finalizer reloads its own bundle (HostApi.reload_bundle).
# Each reload retires the old VM; its close is deferred until the thread releases the
# flow lock and then runs *inside* ppi_ops_unlock -> ppi_run_deferred, i.e. nested in
# the finalizer that started the reload.  So every generation's finalizer runs one
# C stack level deeper: lua_close -> __gc -> reload -> ppi_ops_unlock ->
# ppi_run_deferred -> lua_close -> ...  Expected: a bounded amount of work per
# operation (deferred closes run iteratively, not nested).
# Observed: see the output (a deep recursion that ends in RecursionError in the
# Python path hook, or a stack overflow for a C host whose path hook reloads).
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scenarios"))
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
require("abi")
local path = %r
keep = nil
function polyplug_init(h)
    local host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    keep = ffi.gc(ffi.new("int[1]"), function()
        local err = ffi.new("AbiError[1]")
        host.reload_bundle(host, path, #path, err)
    end)
    return { ["t.r"] = { factory = function() return {} end, functions = { [0] = function() end } } }, { code = 0 }
end
"""
d = Path(tmp) / "r"
make_bundle(tmp, "r", LUA % str(d))
count = [0]
def on_reload(phase):
    if phase.type == polyplug.ReloadPhaseType.Reloaded:
        count[0] += 1
rt = polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(hot_reload_enabled=True)).loader(
    polyplug.LuaLoader()).on_reload(on_reload).build()
rt.load_bundle(d)
t0 = time.monotonic()
def go():
    try:
        rt.reload_bundle(d)
        print("outer reload: ok")
    except BaseException as e:
        print("outer reload raised:", type(e).__name__, str(e)[:200])
run_with_timeout(go, secs=60)
print("reloads completed: %d in %.1f s" % (count[0], time.monotonic() - t0))
os._exit(0)
