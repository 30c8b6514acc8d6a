# vm_destroy_instance: lua_rawseti(instances, id, nil) outside a pcall inserts a new key
# for an unknown id (table rehash = allocation); at the memory limit that is an
# unprotected LUA_ERRMEM -> exit(1).
from common import *
import tempfile
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local keep = {}
for i = 1, 4096 do keep[i] = false end
local ct = ffi.typeof("uint8_t[?]")
local function fill()
    jit.off()
    collectgarbage("collect"); collectgarbage("stop")
    local size, i = 1048576, 0
    while size >= 1 do
        local ok, cd = pcall(ffi.new, ct, size)
        if ok then i = i + 1; keep[i] = cd else size = math.floor(size / 2) end
    end
end
function polyplug_init()
    return { ["t.d"] = { factory = function() return {} end, functions = { [0] = fill } } }, { code = 0 }
end
"""
d = make_bundle(tmp, "dd", LUA)
rt = runtime(polyplug.LuaConfig(memory_limit=4 << 20))
rt.load_bundle(d)
h = handle(rt, "t.d"); iface = rt.resolve_guest_contract(h)
host = rt.host_api
inst = ffi.new("GuestContractInstance *")
host.create_guest_instance(host, iface, ffi.NULL, inst)
print("instance", int(ffi.cast("uintptr_t", inst.data)))
err = ffi.new("AbiError *")
lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, ffi.NULL, ffi.NULL, err); print("fill call", err.code)
bogus = ffi.new("GuestContractInstance *"); bogus.data = ffi.cast("void *", 12345); bogus.contract_id = inst.contract_id
iface.destroy_instance(iface.dispatch.vm.loader_data, host, bogus[0])
print("process survived")
