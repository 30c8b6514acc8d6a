-- parity.reenter@1: guest code that calls back into the host from inside a call.
-- fn 0: value() -> u32 7
-- fn 1: nested vm.call into its own contract (refused: ReentrantCall)  -> sv report
-- fn 2: nested vm.call into test.add@1 of another bundle (allowed)     -> sv report
-- fn 3: create_guest_instance of its own contract from inside a call   -> sv report
-- fn 4: nested vm.call into parity.sibling@1 of the same bundle (allowed, as upstream)
-- fn 5: create_guest_instance of parity.sibling from inside a call (allowed)
-- fn 6: parity.sibling fn 1, which calls back into parity.reenter (refused)
-- parity.sibling@1: fn 0 value() -> u32 9; fn 1 nested vm.call into parity.reenter fn 0
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

local function report(out_ptr, arena_ptr, arena_alloc, text)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text)
end

local function sibling_call(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    report(out_ptr, arena_ptr, arena_alloc, nested_call(self, "parity.sibling", 0, nil))
end

local function sibling_instance(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    local host, iface = resolve(self, "parity.sibling")
    local inst = ffi.new("GuestContractInstance")
    host.create_guest_instance(host, iface, nil, inst)
    report(out_ptr, arena_ptr, arena_alloc,
           string.format("data=%d", tonumber(ffi.cast("uintptr_t", inst.data))))
end

local function round_trip(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    local _, iface = resolve(self, "parity.sibling")
    local text = ffi.new("StringView[1]")
    local err = ffi.new("AbiError")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"), 1,
                           nil, text, arena_ptr == 0 and nil or ffi.cast("CallArena *", arena_ptr),
                           err)
    report(out_ptr, arena_ptr, arena_alloc, string.format("code=%d inner=%s", err.code,
                                                          abi.to_str(text[0])))
end

local function sibling_back(self, _args_ptr, out_ptr, arena_ptr, arena_alloc)
    report(out_ptr, arena_ptr, arena_alloc, nested_call(self, "parity.reenter", 0, nil))
end

function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["parity.reenter"] = {
            contract_version = 1,
            plugin_name      = "parity-reenter",
            factory          = new,
            functions        = { [0] = value, self_call, other_call, nested_instance,
                                 sibling_call, sibling_instance, round_trip },
        },
        ["parity.sibling"] = {
            contract_version = 1,
            plugin_name      = "parity-sibling",
            factory          = new,
            functions        = {
                [0] = function(_, _, out_ptr) pg.ptr(out_ptr, "uint32_t *")[0] = 9 end,
                sibling_back,
            },
        },
    }, { code = 0 }
end
