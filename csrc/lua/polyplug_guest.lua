--[[
  polyplug_guest — helpers for Lua guest bundles (polyplug 0.1.3 protocol).

  This is polyplug's own re-implementation of the 0.1.3 Lua guest SDK. It keeps no
  module state: every helper takes the pointers it needs as arguments.

  The protocol, in short
  ──────────────────────
  * The bundle defines a global `polyplug_init(host_ptr, ctx_ptr)`. Both arguments
    are plain Lua *numbers* holding addresses (a `const HostApi *` and a
    `const BundleInitContext *`); use cast_host_interface / cast_context to turn
    them into typed cdata.

  * polyplug_init returns two values: a registrations table keyed by contract name
        { ["my.contract"] = { contract_version = 1, plugin_name = "...",
                              factory = function(host_ptr) ... end,
                              functions = { [0] = fn0, fn1, ... } } }
    and a status that must be a PLAIN TABLE such as `{ code = 0 }` or
    `{ code = 1, message = "why" }` (a missing `code` counts as success).
    Do not return ok() / err() from polyplug_init: those build AbiError cdata,
    which the loader rejects there.

  * Every function in `functions` is called as
        fn(instance, args_ptr, out_ptr, arena_ptr, arena_alloc)
      instance     whatever the contract's factory returned (usually a table)
      args_ptr     number: address of the argument block (0 when none)
      out_ptr      number: address of the output slot (0 when none)
      arena_ptr    number: address of the caller's CallArena (0 when none)
      arena_alloc  function(size, arena_ptr) -> number: address of `size` fresh
                   bytes that live until the caller's next call (0 on failure)
    Turn the numbers into typed pointers with ptr(), e.g.
        local a = pg.ptr(args_ptr, "const StringView *")[0]
        pg.ptr(out_ptr, "uint64_t *")[0] = 42
    Raise a Lua error to fail the call; returning normally means success (return
    values are ignored). Strings handed back to the caller must be copied into
    memory that outlives the call: use alloc_string_arena.

  * Never cast a Lua number straight to a struct pointer (`ffi.cast("HostApi*", n)`
    is rejected when passed as an FFI call argument): go through `uintptr_t`, which
    is what every helper here does.
]]

local ffi = require("ffi")
local bit = require("bit")
local abi = require("polyplug_abi") -- also makes the ABI cdefs available

-- FFI functions as upvalues: a compiled trace then needs no guard on a table lookup.
local cast, copy, new = ffi.cast, ffi.copy, ffi.new

local type = type
local error = error
local tostring = tostring
local tonumber = tonumber

-- ctypes used below (constants, looked up once).
local uintptr_t = ffi.typeof("uintptr_t")
local const_u8_ptr_t = ffi.typeof("const uint8_t *")
local u8_ptr_t = ffi.typeof("uint8_t *")
local HostApi_ptr_t = ffi.typeof("HostApi *")
local BundleInitContext_ptr_t = ffi.typeof("BundleInitContext *")
local StringView_t = ffi.typeof("StringView")
local StringView_ptr_t = ffi.typeof("StringView *")
local CallArena_ptr_t = ffi.typeof("CallArena *")
local AbiError_t = ffi.typeof("AbiError")

local band = bit.band
local ALIGN_MASK = cast(uintptr_t, -8) -- ~7: rounds an address down to 8 bytes

local M = {}

-- ── enumerations (same values as polyplug_abi) ───────────────────────────────

M.AbiErrorCode = abi.AbiErrorCode
M.DispatchType = abi.DispatchType
M.LogLevel = abi.LogLevel

-- ── internal helpers ─────────────────────────────────────────────────────────

-- True for nil, 0, and NULL pointer cdata; raises for values that cannot be an
-- address at all (`level` is the error level that points at the user's code).
local function is_null(p, fname, level)
    if p == nil then -- Lua nil, or a NULL pointer cdata
        return true
    end
    local t = type(p)
    if t == "number" then
        return p == 0
    elseif t == "cdata" then
        return cast(uintptr_t, p) == 0
    end
    error(fname .. ": expected an address (number or pointer cdata), got a " .. t, level)
end

-- A `HostApi *` for a host pointer given as a number or cdata, or an error
-- "<fname>: host pointer is nil" when it is nil / 0.
local function to_host(host_ptr, fname)
    if is_null(host_ptr, fname, 4) then
        error(fname .. ": host pointer is nil", 3)
    end
    return cast(HostApi_ptr_t, cast(uintptr_t, host_ptr))
end

-- ── pointers ─────────────────────────────────────────────────────────────────

-- cast_host_interface(n) -> HostApi*
-- `n` is the host pointer polyplug_init / a factory receives (a number), or any
-- pointer/integer cdata holding the address.
function M.cast_host_interface(n)
    return to_host(n, "cast_host_interface")
end

-- cast_context(p) -> BundleInitContext*
-- `p` is polyplug_init's ctx_ptr (a number) or a cdata pointer. The context, and
-- the bundle_path it points at, are only valid during polyplug_init: copy what
-- you need (abi.to_str(ctx.bundle_path)).
function M.cast_context(p)
    if is_null(p, "cast_context", 3) then
        error("cast_context: context pointer is nil", 2)
    end
    return cast(BundleInitContext_ptr_t, cast(uintptr_t, p))
end

-- ptr(n, ctype) -> cdata pointer of type `ctype` (a C type string such as
-- "const StringView *" or a ctype object) at address `n` (a number such as the
-- args_ptr / out_ptr a contract function receives, or a cdata). nil gives NULL.
function M.ptr(n, ctype)
    if ctype == nil then
        error("ptr: a pointer C type is required, e.g. pg.ptr(out_ptr, \"uint32_t *\")", 2)
    end
    return cast(ctype, cast(uintptr_t, n or 0))
end

-- ── strings ──────────────────────────────────────────────────────────────────

-- read_string(sv) -> Lua string. Same function as polyplug_abi.to_str: nil and empty
-- views give "", and a plain Lua string raises (it was already converted).
M.read_string = abi.to_str

-- string_view(s) -> StringView cdata over the bytes of the Lua string `s`.
--
-- NO COPY is made and the view does not keep `s` alive: it is valid only while the
-- Lua string itself is reachable (a constant, a local or argument still in scope,
-- a table field, ...). That suits arguments of an immediate call such as
-- HostApi.log; for anything the receiver keeps, use alloc_string /
-- alloc_string_arena. "" gives the empty view {NULL, 0}.
function M.string_view(s)
    if type(s) ~= "string" then
        error("string_view: expected a string, got a " .. type(s), 2)
    end
    local n = #s
    if n == 0 then
        return new(StringView_t)
    end
    return new(StringView_t, cast(const_u8_ptr_t, s), n)
end

local string_view = M.string_view

-- alloc_string(host_ptr, s) -> StringView over a copy of `s` in memory obtained from
-- host->alloc(host, #s, 1). The memory belongs to whoever receives the view (release
-- it with host->free(host, ptr, len, 1)); the guest does not track it.
-- "" gives the empty view {NULL, 0} without allocating.
function M.alloc_string(host_ptr, s)
    local host = to_host(host_ptr, "alloc_string")
    if type(s) ~= "string" then
        error("alloc_string: expected a string, got a " .. type(s), 2)
    end
    local n = #s
    if n == 0 then
        return new(StringView_t)
    end
    local p = host.alloc(host, n, 1)
    if p == nil then
        error("alloc_string: host allocation failed", 2)
    end
    copy(p, s, n)
    return new(StringView_t, p, n)
end

-- The bump step of CallArena::alloc (abi-runtime.md, CallArena) done in Lua: `n` bytes
-- at 8-byte alignment from [cur, end) of the arena at address `arena_ptr`, or nil when
-- they do not fit there (the caller then asks arena_alloc, which also serves the
-- overflow chain).  Reading and bumping two fields through the FFI compiles into a
-- few instructions of the calling trace; a call of arena_alloc (a C function) would
-- end the trace.  8 bytes is the alignment arena_alloc uses too.
local function arena_bump(arena_ptr, n)
    if type(arena_ptr) ~= "number" or arena_ptr == 0 then
        return nil
    end
    local a = cast(CallArena_ptr_t, cast(uintptr_t, arena_ptr))
    local cur = cast(uintptr_t, a.cur)
    if cur == 0 then
        return nil
    end
    local aligned = band(cur + 7, ALIGN_MASK)
    local stop = cast(uintptr_t, a["end"])
    if aligned < cur or aligned > stop or n > stop - aligned then
        return nil
    end
    a.cur = cast(u8_ptr_t, aligned + n)
    return cast(u8_ptr_t, aligned)
end

-- Copy `s` (#s > 0) into the caller's arena; the address, or an error at `level`.
local function arena_copy(arena_alloc, arena_ptr, s, n, fname, level)
    local p = arena_bump(arena_ptr, n)
    if p == nil then
        -- The allocator wants the arena address as a plain number (0 = no arena).
        local where = arena_ptr
        if where == nil then
            where = 0
        elseif type(where) == "cdata" then
            where = tonumber(cast(uintptr_t, where))
        end
        local addr = arena_alloc(n, where)
        if addr == nil or addr == 0 then
            error(fname .. ": arena allocation failed", level)
        end
        p = cast(u8_ptr_t, cast(uintptr_t, addr))
    end
    copy(p, s, n)
    return p
end

-- alloc_string_arena(arena_alloc, arena_ptr, s) -> StringView over a copy of `s` in
-- memory from the per-call allocator (the last two arguments of a contract
-- function). The bytes stay valid until the caller's next call through the same
-- arena, which is what results written to out_ptr need. "" gives {NULL, 0}.
-- The copy is bumped straight out of the arena's free region when it fits there;
-- otherwise arena_alloc serves it (overflow blocks, or host->alloc without an arena).
function M.alloc_string_arena(arena_alloc, arena_ptr, s)
    if arena_alloc == nil then
        error("alloc_string_arena: arena_alloc is nil (pass the 5th argument of the contract function)", 2)
    end
    if type(s) ~= "string" then
        error("alloc_string_arena: expected a string, got a " .. type(s), 2)
    end
    local n = #s
    if n == 0 then
        return StringView_t()
    end
    return StringView_t(arena_copy(arena_alloc, arena_ptr, s, n, "alloc_string_arena", 3), n)
end

-- write_string(out_ptr, arena_ptr, arena_alloc, s): store a string result. Copies `s`
-- into the caller's arena like alloc_string_arena and writes the StringView to the
-- out slot at address `out_ptr` (a number or pointer cdata) — the last line of a
-- function that returns a string:
--     pg.write_string(out_ptr, arena_ptr, arena_alloc, s)
-- No StringView cdata is created on the way. "" stores {NULL, 0}.
function M.write_string(out_ptr, arena_ptr, arena_alloc, s)
    if arena_alloc == nil then
        error("write_string: arena_alloc is nil (pass the 5th argument of the contract function)", 2)
    end
    if type(s) ~= "string" then
        error("write_string: expected a string, got a " .. type(s), 2)
    end
    if is_null(out_ptr, "write_string", 3) then
        error("write_string: out_ptr is 0 (the function has no result slot)", 2)
    end
    local out = cast(StringView_ptr_t, cast(uintptr_t, out_ptr))
    local n = #s
    if n == 0 then
        out.ptr, out.len = nil, 0
        return
    end
    out.ptr = arena_copy(arena_alloc, arena_ptr, s, n, "write_string", 3)
    out.len = n
end

-- ── logging ──────────────────────────────────────────────────────────────────

-- log(host_ptr, level, scope, message)
-- Sends one record through HostApi.log. A nil / 0 host_ptr makes it a no-op, so
-- guests can log unconditionally. `level` is a LogLevel value (unknown values are
-- clamped to Error by the host); by convention `scope` is "guest.<plugin-name>".
-- The host copies what it keeps, so borrowed views of the Lua strings suffice:
-- `scope` and `message` stay referenced by the locals below for the whole call.
function M.log(host_ptr, level, scope, message)
    if is_null(host_ptr, "log", 3) then
        return
    end
    local host = cast(HostApi_ptr_t, cast(uintptr_t, host_ptr))
    if type(scope) ~= "string" then
        scope = tostring(scope)
    end
    if type(message) ~= "string" then
        message = tostring(message)
    end
    host.log(host, tonumber(level) or abi.LogLevel.Error, string_view(scope), string_view(message))
end

-- ── AbiError values ──────────────────────────────────────────────────────────

-- ok() -> AbiError cdata {code = Ok, message = {NULL, 0}}
--
-- ok() and err() are for code that fills AbiError slots through the FFI (for
-- example the out_err of a HostApi call it makes itself). They are NOT the status
-- value of polyplug_init: that must be a plain table such as `{ code = 0 }`.
function M.ok()
    return new(AbiError_t)
end

-- err(code, message) -> AbiError cdata {code, message}
-- `code` defaults to AbiErrorCode.Generic. The message is a borrowed view of the
-- Lua string (see string_view): keep the string alive as long as the AbiError is
-- read, or build the message with alloc_string instead.
function M.err(code, message)
    local e = new(AbiError_t)
    e.code = code or abi.AbiErrorCode.Generic
    if message ~= nil then
        e.message = string_view(message)
    end
    return e
end

return M
