local ffi = require("ffi")
ffi.cdef[[
--@@PP_ABI_CDEF@@
]]

--[[
  abi — the polyplug 0.1.3 C ABI as seen from a LuaJIT guest.

  The ffi.cdef block above is filled in at build time with the preprocessed
  csrc/include/polyplug_abi.h, so every ABI type (StringView, AbiError, HostApi,
  GuestContractInterface, CallArena, BundleInitContext, ...) is known to the FFI
  under exactly the names the C header uses, and the C enum constants are reachable
  as ffi.C.AbiErrorCode_Ok, ffi.C.DispatchType_VirtualMachine, ffi.C.POLYPLUG_ABI_VERSION
  and so on.

  Declaring the same struct twice in one VM is an FFI error; `require` caches this
  module in package.loaded, so the block runs once per VM. (`polyplug_abi` is a shim
  that returns this very module, so requiring both is fine as well.)

  Below the declarations this module offers, as plain Lua values:
    * the ABI version and the enum values as Lua tables (AbiErrorCode, LogLevel, ...);
    * StringView helpers: to_str, starts_with, ends_with, strip_prefix, split;
    * id helpers: fnv1a_64, bundle_id, guest_contract_id, host_contract_id.

  This is polyplug's own re-implementation of the 0.1.3 Lua guest SDK.
]]

local bit = require("bit")

local bxor = bit.bxor
local byte = string.byte
local find = string.find
local format = string.format
local sub = string.sub
local type = type
local error = error
local tostring = tostring
local tonumber = tonumber
local floor = math.floor
local cast, istype, ffi_string = ffi.cast, ffi.istype, ffi.string

local M = {}

-- ── constants ────────────────────────────────────────────────────────────────

M.POLYPLUG_ABI_VERSION = 1

-- ── enumerations (every one travels through the ABI as a uint32_t) ───────────

M.AbiErrorCode = {
    Ok = 0,
    Generic = 1,
    BufferTooSmall = 2,
    Panic = 3,
    NotFound = 4,
    StaleHandle = 5,
    FunctionNotAvailable = 6,
    DuplicateProvider = 7,
    InvalidPointer = 8,
    ReentrantCall = 9,
    HostContractNotFound = 100,
    HostContractVersionMismatch = 101,
    HostContractCallFailed = 102,
}

M.LogLevel = {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

M.DispatchType = {
    Native = 0,
    VirtualMachine = 1,
}

M.ReloadPhaseType = {
    Preparing = 0,
    Reloaded = 1,
    Failed = 2,
    Unloading = 3,
}

M.Compatibility = {
    Strict = 0,
    Relaxed = 1,
    Yolo = 2,
}

M.SignaturePolicy = {
    Off = 0,
    WarnOnly = 1,
    Required = 2,
}

M.SupportedLanguage = {
    Rust = 0,
    Cpp = 1,
    Dotnet = 2,
    Python = 3,
    Lua = 4,
    JavaScript = 5,
}

-- ── StringView helpers ───────────────────────────────────────────────────────

-- ctypes a StringView may arrive as: the struct itself (by value or as a
-- reference, e.g. a field of an argument struct or `ptr[0]`) or a pointer to one.
-- ffi.istype ignores top-level qualifiers, so `const StringView` matches too.
local StringView_t = ffi.typeof("StringView")
local StringView_ptr_t = ffi.typeof("const StringView *")

-- to_str(sv) -> Lua string (a copy of the viewed bytes).
--
--   nil                          -> ""
--   StringView with NULL / len 0 -> ""
--   StringView                   -> ffi.string(sv.ptr, sv.len)
--   NULL StringView pointer      -> ""
--   anything else                -> error (raised at the caller's level)
--
-- A plain Lua string is rejected on purpose: calling to_str twice (once on the
-- argument, once more on the result) used to return "" silently and hide the bug.
function M.to_str(sv)
    if sv == nil then
        -- Lua nil, or a NULL pointer cdata (a NULL cdata compares equal to nil).
        return ""
    end
    if type(sv) ~= "cdata" then
        error("polyplug.to_str: expected a StringView cdata (or nil), got a " .. type(sv)
            .. " — did you already convert it to a Lua string? "
            .. "(call to_str once on the raw StringView and pass the resulting Lua string on)", 2)
    end
    if not (istype(StringView_t, sv) or istype(StringView_ptr_t, sv)) then
        -- Rare path: an array of StringView (e.g. a `StringView[1]` out slot)
        -- stands for its first element.
        local ct = tostring(ffi.typeof(sv))
        if find(ct, "^ctype<[%w ]*struct StringView %[%d*%]>$") then
            return M.to_str(cast(StringView_ptr_t, sv))
        end
        error("polyplug.to_str: expected a StringView cdata (or nil), got a "
            .. tostring(ffi.typeof(sv))
            .. " (cast the pointer to `const StringView *` and index it, or pass the StringView itself)", 2)
    end
    local ptr, len = sv.ptr, sv.len
    if ptr == nil or len == 0 then
        return ""
    end
    return ffi_string(ptr, len)
end

local to_str = M.to_str

-- Raise (at the level of whoever called the public helper) unless `v` is a string.
local function check_string(fname, what, v)
    if type(v) ~= "string" then
        error(format("polyplug.%s: %s must be a string, got a %s", fname, what, type(v)), 3)
    end
end

-- starts_with(sv, prefix) -> boolean
function M.starts_with(sv, prefix)
    local s = to_str(sv)
    check_string("starts_with", "prefix", prefix)
    return sub(s, 1, #prefix) == prefix
end

-- ends_with(sv, suffix) -> boolean
function M.ends_with(sv, suffix)
    local s = to_str(sv)
    check_string("ends_with", "suffix", suffix)
    if #suffix == 0 then
        return true -- (s:sub(-0) would be the whole string, so special-case it)
    end
    return #s >= #suffix and sub(s, -#suffix) == suffix
end

-- strip_prefix(sv, prefix) -> Lua string: the viewed text without `prefix` when it
-- starts with it, otherwise the whole text unchanged.
function M.strip_prefix(sv, prefix)
    local s = to_str(sv)
    check_string("strip_prefix", "prefix", prefix)
    if sub(s, 1, #prefix) == prefix then
        return sub(s, #prefix + 1)
    end
    return s
end

-- split(sv, delim) -> array of Lua strings.
--
-- `delim` is a Lua pattern (default "%s+"). An empty text gives {}. Otherwise every
-- delimiter match ends one piece, and whatever follows the last match is always
-- appended as the final piece (so "a,b," split on "," is {"a", "b", ""}).
-- Empty matches of the pattern are not treated as delimiters (this keeps patterns
-- such as "%s*" from looping forever).
function M.split(sv, delim)
    local s = to_str(sv)
    if delim == nil then
        delim = "%s+"
    end
    check_string("split", "delim", delim)
    local parts = {}
    local n = #s
    if n == 0 then
        return parts
    end
    local piece_start = 1 -- where the current piece begins
    local search = 1      -- where to look for the next delimiter
    while search <= n do
        local first, last = find(s, delim, search)
        if first == nil then
            break
        end
        if last >= first then
            parts[#parts + 1] = sub(s, piece_start, first - 1)
            piece_start = last + 1
            search = last + 1
        else
            search = first + 1 -- empty match: ignore it and look further on
        end
    end
    parts[#parts + 1] = sub(s, piece_start)
    return parts
end

-- ── ids (FNV-1a 64) ──────────────────────────────────────────────────────────

local FNV_OFFSET_BASIS = 0xcbf29ce484222325ULL
local FNV_PRIME = 0x100000001b3ULL

-- fnv1a_64(str) -> uint64_t cdata
--
-- The hash is kept in a uint64_t cdata throughout: bit.bxor on a 64-bit cdata
-- yields a 64-bit cdata, and uint64_t multiplication wraps modulo 2^64, which is
-- exactly FNV's arithmetic. Compare results with `==` against other uint64_t
-- cdata or ULL literals (e.g. `id == 0x40244DF59FCBECB6ULL`).
function M.fnv1a_64(str)
    if type(str) ~= "string" then
        error("polyplug.fnv1a_64: expected a string, got a " .. type(str), 2)
    end
    local h = FNV_OFFSET_BASIS
    for i = 1, #str do
        h = bxor(h, byte(str, i)) * FNV_PRIME
    end
    return h
end

local fnv1a_64 = M.fnv1a_64

-- Format a contract major version as a decimal integer ("1", never "1.0").
-- Accepts a Lua number or an integer cdata; must be a whole number in u32 range.
local function major_text(fname, major)
    local n = major
    if type(n) == "cdata" then
        n = tonumber(n)
    end
    if type(n) ~= "number" or n ~= floor(n) or n < 0 or n > 0xFFFFFFFF then
        local shown = type(major) == "string" and format("the string %q", major) or tostring(major)
        error(format("polyplug.%s: major must be an integer in 0..4294967295, got %s",
            fname, shown), 3)
    end
    return format("%d", n)
end

-- bundle_id(name) -> uint64_t cdata: FNV-1a 64 of the bundle name.
function M.bundle_id(name)
    if type(name) ~= "string" then
        error("polyplug.bundle_id: name must be a string, got a " .. type(name), 2)
    end
    return fnv1a_64(name)
end

-- guest_contract_id(name, major) -> uint64_t cdata:
-- FNV-1a 64 of "guest_contract:<name>@<major>". `name` is the bare contract name
-- ("test.add", not "test.add@1"); only the major version enters the id.
function M.guest_contract_id(name, major)
    check_string("guest_contract_id", "name", name)
    return fnv1a_64("guest_contract:" .. name .. "@" .. major_text("guest_contract_id", major))
end

-- host_contract_id(name, major) -> uint64_t cdata:
-- FNV-1a 64 of "host_contract:<name>@<major>".
function M.host_contract_id(name, major)
    check_string("host_contract_id", "name", name)
    return fnv1a_64("host_contract:" .. name .. "@" .. major_text("host_contract_id", major))
end

return M
