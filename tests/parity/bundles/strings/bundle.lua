-- parity.strings@1: StringView arguments, results allocated from the call arena.
-- fn 0: upper(sv) -> sv          fn 1: join(sv a, sv b) -> "a|b"
-- fn 2: rep(sv s, u32 n) -> s*n  fn 3: len(sv) -> u64
-- fn 4: describe(u32, i32, u64, i64, f64) -> sv
-- fn 5: alloc(u32 n) -> u64: n bytes from arena_alloc, filled; 1 if it got memory
-- fn 6: fail(u32 n): allocates n bytes, then raises
local ffi = require("ffi")
local pg = require("polyplug_guest")
local abi = require("abi")

ffi.cdef[[
typedef struct { StringView a; StringView b; } parity_join_args;
typedef struct { StringView s; uint32_t n; } parity_rep_args;
typedef struct { uint32_t a; int32_t b; uint64_t c; int64_t d; double e; } parity_num_args;
]]

local function result(out_ptr, arena_alloc, arena_ptr, text)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text)
end

local function upper(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local s = abi.to_str(pg.ptr(args_ptr, "const StringView *")[0])
    result(out_ptr, arena_alloc, arena_ptr, s:upper())
end

local function join(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local a = pg.ptr(args_ptr, "const parity_join_args *")
    result(out_ptr, arena_alloc, arena_ptr, abi.to_str(a.a) .. "|" .. abi.to_str(a.b))
end

local function rep(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local a = pg.ptr(args_ptr, "const parity_rep_args *")
    result(out_ptr, arena_alloc, arena_ptr, abi.to_str(a.s):rep(a.n))
end

local function len(_, args_ptr, out_ptr)
    pg.ptr(out_ptr, "uint64_t *")[0] = pg.ptr(args_ptr, "const StringView *")[0].len
end

local function describe(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local a = pg.ptr(args_ptr, "const parity_num_args *")
    local text = string.format("a=%d b=%d c=%s d=%s e=%.3f", a.a, a.b,
        tostring(a.c):gsub("ULL$", ""), tostring(a.d):gsub("LL$", ""), a.e)
    result(out_ptr, arena_alloc, arena_ptr, text)
end

local function alloc(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local n = pg.ptr(args_ptr, "const uint32_t *")[0]
    local addr = arena_alloc(n, arena_ptr)
    if addr ~= 0 then ffi.fill(pg.ptr(addr, "uint8_t *"), n, 0x5a) end
    pg.ptr(out_ptr, "uint64_t *")[0] = addr ~= 0 and 1 or 0
end

local function fail(_, args_ptr, _out_ptr, arena_ptr, arena_alloc)
    arena_alloc(pg.ptr(args_ptr, "const uint32_t *")[0], arena_ptr)
    error("failed after allocating from the arena")
end

function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["parity.strings"] = {
            contract_version = 1,
            plugin_name      = "parity-strings",
            factory          = function() return {} end,
            functions        = { [0] = upper, join, rep, len, describe, alloc, fail },
        },
    }, { code = 0 }
end
