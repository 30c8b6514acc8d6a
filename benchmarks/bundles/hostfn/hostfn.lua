-- Guest -> host-function benchmark.  Each loop calls add(u32, u32) -> u32 of the host
-- contract bench.host@1 n times and returns the sum, so the host can check it:
--   fn 0 loop_sdk(n): through the SDK's typed method, h:add(s, 1)
--   fn 1 loop_ffi(n): the floor, one hand-written FFI call of the same native slot
--   fn 2 rebind():    look the contract up again (after the host replaced it)
local ffi = require("ffi")
local pg = require("polyplug_guest")

local SIGS = { add = { id = 0, args = { "u32", "u32" }, returns = "u32" } }
local HostFn = ffi.typeof("void (*)(void *, const void *, void *, AbiError *)")
local host_ptr, h, slot, A, O, E

local function bind()
    h = pg.host_contract(host_ptr, "bench.host", 1, SIGS)
    slot = ffi.cast(HostFn, h.interface.dispatch.native.functions[0])
    A = ffi.new("uint32_t[2]")
    O = ffi.new("uint32_t[1]")
    E = ffi.new("AbiError[1]")
end

local function loop_sdk(_, args_ptr, out_ptr)
    local n = pg.ptr(args_ptr, "const uint32_t *")[0]
    local s = 0
    for _ = 1, n do
        s = h:add(s, 1)
    end
    pg.ptr(out_ptr, "uint32_t *")[0] = s
end

local function loop_ffi(_, args_ptr, out_ptr)
    local n = pg.ptr(args_ptr, "const uint32_t *")[0]
    local inst, f = h.instance, slot
    local s = 0
    for _ = 1, n do
        A[0] = s
        A[1] = 1
        f(inst, A, O, E)
        if E[0].code ~= 0 then
            error("host call failed", 0)
        end
        s = O[0]
    end
    pg.ptr(out_ptr, "uint32_t *")[0] = s
end

function polyplug_init(host, _ctx)
    host_ptr = host
    bind()
    return {
        ["bench.hostfn"] = {
            contract_version = 1,
            plugin_name = "hostfn",
            factory = function(_) return {} end,
            functions = { [0] = loop_sdk, [1] = loop_ffi, [2] = function() bind() end },
        },
    }, { code = 0 }
end
