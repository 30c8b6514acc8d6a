-- parity.reenter@1: guest code that calls back into the host from inside a call.
-- fn 0: value() -> u32 7
-- fn 1: nested vm.call into its own contract (refused: ReentrantCall)  -> sv report
-- fn 2: nested vm.call into test.add@1 of another bundle (allowed)     -> sv report
-- fn 3: create_guest_instance of its own contract from inside a call   -> sv report
local ffi = require("ffi")
local pg = require("polyplug_guest")
local abi = require("abi")

local function new(host_ptr) return { host = host_ptr } end

local function resolve(self, contract)
    local host = pg.cast_host_interface(self.host)
    local h = host.find_guest_contract(host, abi.guest_contract_id(contract, 1), 0)
    local iface = host.resolve_guest_contract(host, h)
    if iface == nil then error("cannot resolve " .. contract) end
    return host, iface
end

local function nested_call(self, contract, fn, args)
    local _, iface = resolve(self, contract)
    local out = ffi.new("uint32_t[1]")
    local err = ffi.new("AbiError")
    local inst = ffi.new("GuestContractInstance")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, inst, fn, args, out, nil, err)
    return string.format("code=%d out=%d msg=%s", err.code, out[0], abi.to_str(err.message))
end

local function value(_, _args_ptr, out_ptr)
    pg.ptr(out_ptr, "uint32_t *")[0] = 7
end

local function self_call(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    local text = nested_call(self, "parity.reenter", 0, nil)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text)
end

local function other_call(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    local args = ffi.new("uint32_t[2]", 20, 22)
    local text = nested_call(self, "test.add", 0, args)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text)
end

local function nested_instance(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    local host, iface = resolve(self, "parity.reenter")
    local inst = ffi.new("GuestContractInstance")
    host.create_guest_instance(host, iface, nil, inst)
    local text = string.format("data=%d", tonumber(ffi.cast("uintptr_t", inst.data)))
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text)
end

function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["parity.reenter"] = {
            contract_version = 1,
            plugin_name      = "parity-reenter",
            factory          = new,
            functions        = { [0] = value, self_call, other_call, nested_instance },
        },
    }, { code = 0 }
end
