-- generated/guest/host_contracts.lua
--
-- Written by hand in the shape of what upstream's `polyplugc generate --lang lua`
-- emits for an api.toml with one host contract (see the spec's lua-loader.md §6.1):
-- a caller class per host contract with `from_host(host_ptr, min_version)`, methods
-- that pack arguments (one StringView from a Lua string, one scalar, or a pack struct
-- for several), dispatch through `dispatch.native.functions[fn_id]` cast to
-- `void (*)(const void *impl, const void *args, void *out, AbiError *err)` with
-- impl = the instance data, and return nil silently on any failure.  It checks that
-- such generated callers work against host contracts provided by polyplug for Python
-- (from Python callables, or from C).
local ffi = require("ffi")
require("polyplug_abi")

local ok, err = pcall(ffi.cdef, [[
typedef struct HostParityHostContractAddArgs { uint32_t a; uint32_t b; } HostParityHostContractAddArgs;
]])
if not ok and not tostring(err):find("redefine") then
    error(err)
end

local M = {}

-- host_contract_id("parity.host", 1) = FNV-1a 64 of "host_contract:parity.host@1"
M.HOST_PARITY_HOST_CONTRACT_ID = 0xdc65b9c366ed1088ULL

local HostParityHostContract = {}
HostParityHostContract.__index = HostParityHostContract
M.HostParityHostContract = HostParityHostContract

function HostParityHostContract.from_host(host_ptr, min_version)
    if host_ptr == nil then
        return nil
    end
    local host = ffi.cast("HostApi*", ffi.cast("uintptr_t", host_ptr))
    local min = min_version or 0
    local iface = host.resolve_host_contract_interface(host, M.HOST_PARITY_HOST_CONTRACT_ID, min)
    if iface == nil then
        return nil
    end
    local inst = host.get_host_contract(host, M.HOST_PARITY_HOST_CONTRACT_ID, min)
    return setmetatable({ _host = host, _iface = iface, _inst = inst }, HostParityHostContract)
end

local function dispatch(self, fn_id, args, out)
    local err = ffi.new("AbiError[1]")
    local iface = self._iface
    if iface.dispatch_type == 0 then
        if fn_id >= iface.dispatch.native.function_count then
            return false
        end
        local fn = ffi.cast("void (*)(const void*, const void*, void*, AbiError*)",
                            iface.dispatch.native.functions[fn_id])
        fn(self._inst.data, args, out, err)
    elseif iface.dispatch_type == 1 then
        iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"),
                               fn_id, args, out, nil, err)
    else
        return false
    end
    return err[0].code == 0
end

function HostParityHostContract:add(a, b)
    local args = ffi.new("HostParityHostContractAddArgs", a, b)
    local out = ffi.new("uint32_t[1]")
    if not dispatch(self, 0, args, out) then
        return nil
    end
    return out[0]
end

function HostParityHostContract:greet(name)
    local args = ffi.new("StringView[1]")
    args[0].ptr = name
    args[0].len = #name
    local out = ffi.new("StringView[1]")
    if not dispatch(self, 1, args, out) then
        return nil
    end
    return ffi.string(out[0].ptr, out[0].len)
end

function HostParityHostContract:fail(text)
    local args = ffi.new("StringView[1]")
    args[0].ptr = text
    args[0].len = #text
    if not dispatch(self, 2, args, nil) then
        return nil
    end
    return true
end

return M
