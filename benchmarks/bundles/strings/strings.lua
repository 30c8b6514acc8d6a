-- Entry file of the string benchmark bundle: contract bench.strings@1, each function
-- a body from bodies.lua wrapped in the vm.call protocol the way the guest SDK's
-- documentation shows (docs/guest-authoring.md, "Strings").
local ffi = require("ffi")
local pg = require("polyplug_guest")
local body = require("bodies")

local U32_PAIR = ffi.typeof("const uint32_t *")
local U32_OUT = ffi.typeof("uint32_t *")
local VIEW_IN = ffi.typeof("const StringView *")
local VIEW_OUT = ffi.typeof("StringView *")

local function add(_, args_ptr, out_ptr)
    local a = pg.ptr(args_ptr, U32_PAIR)
    pg.ptr(out_ptr, U32_OUT)[0] = body.add(a[0], a[1])
end

local function slen(_, args_ptr, out_ptr)
    pg.ptr(out_ptr, U32_OUT)[0] = body.slen(pg.read_string(pg.ptr(args_ptr, VIEW_IN)[0]))
end

local function const(_, _, out_ptr, arena_ptr, arena_alloc)
    pg.ptr(out_ptr, VIEW_OUT)[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, body.const())
end

local function upper(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local s = pg.read_string(pg.ptr(args_ptr, VIEW_IN)[0])
    pg.ptr(out_ptr, VIEW_OUT)[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, body.upper(s))
end

local function echo(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local b = pg.read_string(pg.ptr(args_ptr, VIEW_IN)[0])
    pg.ptr(out_ptr, VIEW_OUT)[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, body.echo(b))
end

function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["bench.strings"] = {
            contract_version = 1,
            plugin_name = "strings",
            factory = function(_host) return {} end,
            functions = { [0] = add, [1] = slen, [2] = const, [3] = upper, [4] = echo },
        },
    }, { code = 0 }
end
