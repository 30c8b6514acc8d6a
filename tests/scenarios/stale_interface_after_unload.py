# Issue 11.6: a raw vm.call through an interface pointer saved before unload_bundle
# crashed (freed loader record) or ran the slot's next occupant.  It answers StaleHandle.
from common import *
import tempfile
tmp = tempfile.mkdtemp()
def lua(name, value):
    return f"""
local ffi = require("ffi")
local function f(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = {value} end
function polyplug_init()
    return {{ ["t.{name}"] = {{ factory = function() return {{}} end, functions = {{ [0] = f }} }} }}, {{ code = 0 }}
end
"""
rt = runtime()
rt.load_bundle(make_bundle(tmp, "first", lua("first", 1)))
h1 = handle(rt, "t.first")
iface = rt.resolve_guest_contract(h1)
copy = ffi.new("GuestContractInterface *", iface[0])  # a by-value copy, as C hosts keep
print("before:", raw_call(iface, 0, ret="uint32_t"))
rt.unload_bundle(polyplug.bundle_id("first"))
print("after unload:", raw_call(iface, 0, ret="uint32_t"))
print("copy after unload:", raw_call(copy, 0, ret="uint32_t")[0])
rt.load_bundle(make_bundle(tmp, "second", lua("second", 2)))
h2 = handle(rt, "t.second")
print("slot reused:", h2.index == h1.index and h2.generation != h1.generation)
print("old pointer after reuse:", raw_call(iface, 0, ret="uint32_t")[0])
print("new contract:", raw_call(rt.resolve_guest_contract(h2), 0, ret="uint32_t"))
out = ffi.new("GuestContractInstance *")
host = rt.host_api
host.create_guest_instance(host, iface, ffi.NULL, out)
print("instance through old pointer:", out.data == ffi.NULL)
print("process survived")
