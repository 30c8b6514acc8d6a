# Issue 11.3: two threads whose guests destroy instances of each other's bundles.
# destroy_instance waited for the other bundle's VM lock without a bound: deadlock.
from common import *
import tempfile, time
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
require("abi")
local host, other, inst = nil, nil, nil
local function setup(_, args, _)
    local a = ffi.cast("uint64_t *", ffi.cast("uintptr_t", args))
    other = ffi.cast("const GuestContractInterface *", a[0])
    inst = ffi.new("GuestContractInstance", ffi.cast("void *", a[1]), a[2])
end
local function hold_then_destroy(_, _, _)
    local t = os.clock() + 0.5
    while os.clock() < t do end
    host.destroy_guest_instance(host, other, inst)
end
function polyplug_init(h)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", h))
    return { ["t.%s"] = { factory = function() return {} end,
        functions = { [0] = setup, [1] = hold_then_destroy } } }, { code = 0 }
end
"""
rt = runtime()
for n in ("p", "q"):
    rt.load_bundle(make_bundle(tmp, n, LUA % n))
ifaces = {n: rt.resolve_guest_contract(handle(rt, "t." + n)) for n in ("p", "q")}
insts = {}
for n in ("p", "q"):
    out = ffi.new("GuestContractInstance *")
    host = rt.host_api
    host.create_guest_instance(host, ifaces[n], ffi.NULL, out)
    insts[n] = out
for me, other in (("p", "q"), ("q", "p")):
    args = ffi.new("uint64_t[3]", [int(ffi.cast("uintptr_t", ifaces[other])),
                                   int(ffi.cast("uintptr_t", insts[other].data)),
                                   insts[other].contract_id])
    assert raw_call(ifaces[me], 0, args)[0] == 0
results = {}
def run(n):
    t0 = time.monotonic()
    results[n] = raw_call(ifaces[n], 1)
    results[n + "_s"] = time.monotonic() - t0
finish([lambda: run("p"), lambda: run("q")], secs=30)
print("p:", results.get("p"), "q:", results.get("q"))
print("bounded:", max(results.get("p_s", 99), results.get("q_s", 99)) < 12)
