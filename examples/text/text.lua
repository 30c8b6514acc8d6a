-- example.text@1: text processing on UTF-8 strings passed as StringViews.
--   fn 0  upper(s) -> string         ASCII, Latin-1 and basic Cyrillic letters upper-cased
--   fn 1  count_words(s) -> u32      runs of non-whitespace
--   fn 2  reverse(s) -> string       by code point (invalid UTF-8 is an error)
--   fn 3  length(s) -> u32           number of code points (invalid UTF-8 is an error)
--   fn 4  repeat(s, n) -> string     s repeated n times (at most 16 MiB)
-- A string argument is a StringView { const uint8_t *ptr; size_t len } in the argument
-- block; a string result is a StringView written to out_ptr, over bytes copied into
-- the caller's per-call arena (pg.alloc_string_arena), which outlive the call.
-- Byte patterns ([a-z], explicit whitespace) are used instead of %l / %s, which
-- depend on the C locale of the host process.
local pg = require("polyplug_guest")
local ffi = require("ffi")

local byte, char, concat = string.byte, string.char, table.concat
local MAX_RESULT = 16 * 1024 * 1024

-- The argument block of a one-string function, and of repeat(string, u32).
local ONE_STRING = ffi.typeof("const StringView *")
local STRING_U32 = ffi.typeof("const struct { StringView s; uint32_t n; } *")

local function arg_string(args_ptr)
    return pg.read_string(pg.ptr(args_ptr, ONE_STRING)[0])
end

local function return_string(out_ptr, arena_ptr, arena_alloc, s)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, s)
end

-- Split `s` into its UTF-8 code points (a table of strings); errors on invalid UTF-8.
local function code_points(s)
    local out, i, n = {}, 1, #s
    while i <= n do
        local c = byte(s, i)
        local len = c < 0x80 and 1 or c >= 0xC2 and c < 0xE0 and 2 or c >= 0xE0 and c < 0xF0 and 3
            or c >= 0xF0 and c < 0xF5 and 4 or nil
        if len == nil or i + len - 1 > n then
            error(string.format("invalid UTF-8 at byte %d", i - 1), 0)
        end
        for k = i + 1, i + len - 1 do
            local cc = byte(s, k)
            if cc < 0x80 or cc > 0xBF then
                error(string.format("invalid UTF-8 at byte %d", k - 1), 0)
            end
        end
        out[#out + 1] = s:sub(i, i + len - 1)
        i = i + len
    end
    return out
end

-- Two-byte upper-case mappings: Latin-1 à..þ (not ÷) and Cyrillic а..я.
local UPPER2 = {}
for cp = 0xE0, 0xFE do
    if cp ~= 0xF7 then UPPER2[char(0xC3, cp - 0x40)] = char(0xC3, cp - 0x60) end
end
for cp = 0x430, 0x44F do
    local lo, up = cp, cp - 0x20
    UPPER2[char(0xC0 + math.floor(lo / 64), 0x80 + lo % 64)] =
        char(0xC0 + math.floor(up / 64), 0x80 + up % 64)
end

local function upper(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local s = arg_string(args_ptr)
    s = s:gsub("[a-z]", string.upper):gsub("[\195\208\209][\128-\191]", UPPER2)
    return_string(out_ptr, arena_ptr, arena_alloc, s)
end

local function count_words(_, args_ptr, out_ptr)
    local n = 0
    for _ in arg_string(args_ptr):gmatch("[^ \t\n\r\f\v]+") do
        n = n + 1
    end
    pg.ptr(out_ptr, "uint32_t *")[0] = n
end

local function reverse(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local cps = code_points(arg_string(args_ptr))
    local n = #cps
    for i = 1, math.floor(n / 2) do
        cps[i], cps[n - i + 1] = cps[n - i + 1], cps[i]
    end
    return_string(out_ptr, arena_ptr, arena_alloc, concat(cps))
end

local function length(_, args_ptr, out_ptr)
    pg.ptr(out_ptr, "uint32_t *")[0] = #code_points(arg_string(args_ptr))
end

local function rep(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local a = pg.ptr(args_ptr, STRING_U32)[0]
    local s, n = pg.read_string(a.s), a.n
    if #s * n > MAX_RESULT then
        error(string.format("repeat: result of %d bytes exceeds the %d-byte limit", #s * n, MAX_RESULT), 0)
    end
    return_string(out_ptr, arena_ptr, arena_alloc, s:rep(n))
end

function polyplug_init(_host, _ctx)
    return {
        ["example.text"] = {
            contract_version = 1,
            plugin_name = "text",
            factory = function(_) return {} end,
            functions = { [0] = upper, [1] = count_words, [2] = reverse, [3] = length, [4] = rep },
        },
    }, { code = 0 }
end
