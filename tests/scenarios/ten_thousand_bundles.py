# Issue 19: 10,000 bundles in one runtime.  Every lookup finds its own bundle's
# contract, a contract all of them provide lists its providers in load order, unloading
# half of them hands that contract on and makes their handles stale, new bundles take
# the lowest free slots, and everything unloads.  Timings are printed, not judged.
from common import *
import random, time
from polyplug import BundleSource, ManifestData, bundle_id, guest_contract_id

N = 10_000
# the function needs ffi only when it runs, so most VMs never load it
LUA = """
function polyplug_init()
    local function put(v)
        return function(_, _, out)
            local ffi = require("ffi")
            ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = v
        end
    end
    return {
        ["scale.c%(i)d"] = { contract_version = 1, plugin_name = "own",
                             factory = function() return {} end, functions = { [0] = put(%(i)d) } },
        ["scale.shared"] = { contract_version = 1, plugin_name = "shared",
                             factory = function() return {} end, functions = { [0] = put(%(i)d) } },
    }, { code = 0 }
end
"""

def load(rt, name, i):
    m = ManifestData(id=bundle_id(name), name=name, loader="lua", file="scale.lua", path=".")
    rt.load_bundle_from_source(m, BundleSource.Code(LUA % {"i": i}))
    return m.id

def value(rt, handle):
    iface = rt.resolve_guest_contract(handle)
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, out, ffi.NULL, err)
    assert err.code == 0, err.code
    return out[0]

def own(i):
    return guest_contract_id(f"scale.c{i}", 1)

SHARED = guest_contract_id("scale.shared", 1)
rt = runtime()
t0 = time.perf_counter()
ids = [load(rt, f"scale_{i:05d}", i) for i in range(N)]
t1 = time.perf_counter()
print(f"loaded {N} bundles: {(t1 - t0) / N * 1e3:.3f} ms each")
assert rt.list_bundles() == ids  # in load order

sample = sorted({0, 1, N // 2, N - 1, *random.Random(19).sample(range(N), 200)})
handles = {}
for i in sample:
    h = rt.find_guest_contract(own(i), 1)
    assert rt.registry().info(h)["bundle_id"] == ids[i]
    assert value(rt, h) == i
    assert rt.contract(f"scale.c{i}", 1).function(0, [], "u32")() == i
    handles[i] = h
providers = rt.find_all_by_contract(SHARED, 1)
assert len(providers) == N and providers[0] == rt.find_guest_contract(SHARED, 1)
assert [value(rt, h) for h in providers[:3] + providers[-3:]] == [0, 1, 2, N - 3, N - 2, N - 1]
t2 = time.perf_counter()
print(f"lookups ok ({(t2 - t1) * 1e3:.0f} ms)")

for i in range(0, N, 2):
    rt.unload_bundle(ids[i])
t3 = time.perf_counter()
print(f"unloaded half: {(t3 - t2) / (N // 2) * 1e3:.3f} ms each")
for i in sample:
    if i % 2 == 0:
        try:
            rt.resolve_guest_contract(handles[i])
            raise AssertionError(f"handle of unloaded bundle {i} still resolves")
        except polyplug.StaleHandle:
            pass
    else:
        assert value(rt, handles[i]) == i
for i in (0, N // 2, N - 2):  # (a PluginNotFound lists what is loaded: not cheap here)
    try:
        rt.find_guest_contract(own(i), 1)
        raise AssertionError(f"contract of unloaded bundle {i} still found")
    except polyplug.PluginNotFound:
        pass
assert value(rt, rt.find_guest_contract(SHARED, 1)) == 1  # the oldest provider left
assert [value(rt, h) for h in rt.find_all_by_contract(SHARED, 1)] == list(range(1, N, 2))
assert rt.list_bundles() == ids[1::2]

# bundle 0 held slots 0 and 1: the next bundle gets them back, one generation on
late = load(rt, "late", N + 77)
h = rt.find_guest_contract(own(N + 77), 1)
assert h.index in (0, 1) and h.generation == 1, h
assert rt.find_guest_contract_by_bundle(late, SHARED, 1).index in (0, 1)
print("slots reused")

for bid in rt.list_bundles():
    rt.unload_bundle(bid)
assert rt.list_bundles() == []
try:
    rt.find_guest_contract(SHARED, 1)
    raise AssertionError("the shared contract outlived every provider")
except polyplug.PluginNotFound:
    pass
print(f"all unloaded ({(time.perf_counter() - t3) * 1e3:.0f} ms)")
rt.close()
