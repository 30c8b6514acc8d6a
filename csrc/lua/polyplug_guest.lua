--[[
  polyplug_guest — helpers for Lua guest bundles (polyplug 0.1.3 protocol).

  This is polyplug's own re-implementation of the 0.1.3 Lua guest SDK. It keeps no
  module state (beyond a cache of compiled host-contract methods): every helper takes
  the pointers it needs as arguments.

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

  * Host contracts are functions the host program provides (a key-value store, an
    event sink, ...). host_contract(host_ptr, "app.kv", 1, signatures) finds one and
    returns an object whose methods pack the arguments, call the host and unpack the
    result, raising a Lua error with the host's message when the host call fails.
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

-- ── host contracts ───────────────────────────────────────────────────────────

-- The native slot of a host contract (NativeHostFn): every argument is a scalar, so
-- a compiled loop calls it as one plain C call.
local HostFn_t = ffi.typeof("void (*)(void *, const void *, void *, AbiError *)")
local AbiError_arr_t = ffi.typeof("AbiError[1]")
local HostContractInstance_t = ffi.typeof("HostContractInstance")
local GuestContractInstance_t = ffi.typeof("GuestContractInstance")
local void_ptr_t = ffi.typeof("void *")

-- The signature vocabulary (the manifest's signature tables use the same names).
local HOST_TYPES = {
    u8 = "uint8_t", u16 = "uint16_t", u32 = "uint32_t", u64 = "uint64_t",
    i8 = "int8_t", i16 = "int16_t", i32 = "int32_t", i64 = "int64_t",
    f32 = "float", f64 = "double", bool = "bool", string = "StringView", bytes = "StringView",
}
local HOST_ALIASES = {
    uint8_t = "u8", uint16_t = "u16", uint32_t = "u32", uint64_t = "u64",
    int8_t = "i8", int16_t = "i16", int32_t = "i32", int64_t = "i64",
    float = "f32", double = "f64", _Bool = "bool", StringView = "string",
    float32 = "f32", float64 = "f64", str = "string",
}
local HOST_RESERVED = { call = true, close = true }

local code_names = {}
for name, code in pairs(abi.AbiErrorCode) do
    code_names[code] = name
end

local function host_type(where, t)
    local norm = HOST_TYPES[t] and t or HOST_ALIASES[t]
    if norm == nil then
        error(where .. ": unknown type '" .. tostring(t) .. "' (known: u8, u16, u32, u64, i8, "
              .. "i16, i32, i64, f32, f64, bool, string, bytes)", 4)
    end
    return norm
end

-- "1", 1, "1.2", "1.2.3" -> major, minor
local function host_version(fname, version)
    local major, minor
    if type(version) == "number" then
        major, minor = version, 0
    elseif type(version) == "string" then
        local a, b = version:match("^(%d+)%.?(%d*)")
        major, minor = tonumber(a), tonumber(b ~= "" and b or "0")
    end
    if major == nil or major ~= math.floor(major) or major < 0 or major > 65535
        or minor > 65535 then
        error(fname .. ": version must be a major (1) or \"major.minor\" (\"1.2\") with parts "
              .. "0..65535, got " .. tostring(version), 3)
    end
    return major, minor
end

-- The functions of the contract's table as callables f(instance, args, out, err).
local function host_functions(iface, id)
    local fns = {}
    if iface.dispatch_type == abi.DispatchType.Native then
        local table = iface.dispatch.native.functions
        for i = 0, iface.dispatch.native.function_count - 1 do
            fns[i] = ffi.cast(HostFn_t, table[i])
        end
        return fns, iface.dispatch.native.function_count
    end
    local vm = iface.dispatch.vm -- upstream's VM form: vm.call with the id
    return setmetatable({}, { __index = function(t, i)
        local f = function(inst, args, out, err)
            vm.call(vm.loader_data, GuestContractInstance_t(inst, id), i, args, out, nil, err)
        end
        rawset(t, i, f)
        return f
    end }), nil
end

local function last_error(host)
    local n = tonumber(host.get_error_len(host))
    if n == 0 then
        return nil
    end
    local buf = ffi.new("uint8_t[?]", n)
    return ffi.string(buf, host.get_last_error(host, buf, n))
end

-- Look up and instantiate; on failure nil and the reason.
local function host_resolve(st, again)
    local host = st.host
    local iface = host.resolve_host_contract_interface(host, st.id, st.packed)
    if iface == nil then
        local any = host.resolve_host_contract_interface(host, st.id, 0)
        if any ~= nil then
            local v = any.contract_version
            return nil, string.format("host contract `%s` is provided at version %d.%d.%d, but "
                .. "this bundle needs %d.%d or later (HostContractVersionMismatch)", st.label,
                v.major, v.minor, v.patch, st.major, st.minor)
        end
        return nil, "host contract `" .. st.label .. "` is not provided by the host "
            .. "(HostContractNotFound): the program that loads this bundle must provide it"
    end
    local inst = host.get_host_contract(host, st.id, st.packed)
    if inst.data == nil and iface.singleton and not again then
        -- replaced between the two lookups? (a stateless one may give none: then accept it)
        return host_resolve(st, true)
    end
    if inst.data == nil and not iface.singleton then
        local why = last_error(host)
        return nil, "host contract `" .. st.label .. "`: the host created no instance"
            .. (why and (": " .. why) or "")
    end
    local fns, count = host_functions(iface, st.id)
    if count then
        for name, spec in pairs(st.specs) do
            if spec.id >= count then
                return nil, string.format("host contract `%s` has %d function(s), but this "
                    .. "bundle's signature '%s' has id %d", st.label, count, name, spec.id)
            end
        end
    end
    st.iface, st.inst, st.fns = iface, inst.data, fns
    st.singleton = iface.singleton
    return inst
end

-- A failed call: retry once after the host replaced a singleton contract, else raise.
local function host_check(st, fn_id, args, out, err)
    local e = err[0]
    local code = e.code
    if code == abi.AbiErrorCode.HostContractNotFound and st.singleton and not st.closed
        and host_resolve(st) then
        e.code = 0
        st.fns[fn_id](st.inst, args, out, err)
        code = e.code
        if code == 0 then
            return
        end
    end
    local msg = abi.to_str(e.message)
    if msg == "" then
        local name = st.names[fn_id] or ("fn " .. fn_id)
        msg = string.format("host contract `%s` function %s failed with code %d (%s)",
                            st.label, name, code, code_names[code] or "?")
    end
    error(msg, 3)
end

local function arg_error(st, name, i, t, v)
    error(string.format("%s.%s: argument %d must be a %s, got a %s", st.label, name, i,
                        (t == "string" or t == "bytes") and "string" or
                        t == "bool" and "boolean" or "number", type(v)), 3)
end

-- The source of one typed method; compiled once per signature.
local function method_source(spec)
    local params, pack = {}, {}
    for i, t in ipairs(spec.args) do
        local a = "a" .. i
        params[#params + 1] = a
        if t == "string" or t == "bytes" then
            pack[#pack + 1] = string.format("if type(%s) ~= 'string' then arg_error(st, NAME, "
                .. "%d, '%s', %s) end A.%s.ptr = %s A.%s.len = #%s", a, i, t, a, a, a, a, a)
        elseif t == "bool" then
            pack[#pack + 1] = string.format("if type(%s) ~= 'boolean' then arg_error(st, NAME, "
                .. "%d, 'bool', %s) end A.%s = %s", a, i, a, a, a)
        elseif t == "u64" or t == "i64" then
            pack[#pack + 1] = string.format("local ty%d = type(%s) if ty%d ~= 'number' and ty%d "
                .. "~= 'cdata' then arg_error(st, NAME, %d, '%s', %s) end A.%s = %s",
                i, a, i, i, i, t, a, a, a)
        else
            pack[#pack + 1] = string.format("if type(%s) ~= 'number' then arg_error(st, NAME, "
                .. "%d, '%s', %s) end A.%s = %s", a, i, t, a, a, a)
        end
    end
    local result = ""
    if spec.returns == "string" or spec.returns == "bytes" then
        result = "local v = O[0] if v.len == 0 then return '' end "
            .. "if v.ptr == nil then host_check_null(st, NAME) end return ffi_string(v.ptr, v.len)"
    elseif spec.returns then
        result = "return O[0]"
    end
    return "local st, A, O, E, ID, NAME, host_check, arg_error, ffi_string, host_check_null = ...\n"
        .. "return function(_" .. (#params > 0 and (", " .. table.concat(params, ", ")) or "")
        .. ")\n" .. table.concat(pack, "\n") .. "\n"
        .. "E[0].code = 0\n"
        .. "st.fns[ID](st.inst, A, O, E)\n"
        .. "if E[0].code ~= 0 then host_check(st, ID, A, O, E) end\n"
        .. result .. "\nend\n"
end

local function host_check_null(st, name)
    error(st.label .. "." .. name .. ": the host returned a StringView with a null pointer", 3)
end

local method_cache = {} -- source -> compiled chunk (same shapes share one)

local function host_method(st, name, spec)
    local src = method_source(spec)
    local chunk = method_cache[src]
    if chunk == nil then
        chunk = assert(load(src, "=[polyplug host method]"))
        method_cache[src] = chunk
    end
    local A, O
    if #spec.args > 0 then
        local fields = {}
        for i, t in ipairs(spec.args) do
            fields[i] = HOST_TYPES[t] .. " a" .. i .. ";"
        end
        A = ffi.new("struct { " .. table.concat(fields, " ") .. " }")
    end
    if spec.returns then
        O = ffi.new(HOST_TYPES[spec.returns] .. "[1]")
    end
    return chunk(st, A, O, ffi.new(AbiError_arr_t), spec.id, name, host_check, arg_error,
                 ffi.string, host_check_null)
end

-- Check the guest's signature table: { name = { id = 0, args = {...}, returns = "..." } }.
local function host_specs(label, signatures)
    local specs, names, ids = {}, {}, {}
    if signatures == nil then
        return specs, names
    end
    if type(signatures) ~= "table" then
        error("host_contract: signatures must be a table like { get = { id = 0, args = "
              .. "{ \"string\" }, returns = \"string\" } }, got a " .. type(signatures), 3)
    end
    for name, spec in pairs(signatures) do
        local where = "host_contract " .. label .. "." .. tostring(name)
        if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") or HOST_RESERVED[name] then
            error(where .. ": method names must be identifiers other than call and close "
                  .. "(the helper's own methods)", 3)
        end
        if type(spec) ~= "table" then
            error(where .. ": expected a table like { id = 0, args = { \"u32\" }, returns = "
                  .. "\"u32\" }", 3)
        end
        local id = spec.id
        if type(id) ~= "number" or id < 0 or id ~= math.floor(id) or id > 0xFFFFFFFF then
            error(where .. ": `id` (the host function's id, from 0) is required", 3)
        end
        if ids[id] then
            error(where .. ": id " .. id .. " is also used by '" .. ids[id] .. "'", 3)
        end
        ids[id] = name
        local args = {}
        if spec.args ~= nil and type(spec.args) ~= "table" then
            error(where .. ": `args` must be a list of type names", 3)
        end
        for i, t in ipairs(spec.args or {}) do
            args[i] = host_type(where, t)
        end
        local returns = spec.returns ~= nil and host_type(where, spec.returns) or nil
        specs[name] = { id = id, args = args, returns = returns }
        names[id] = name
    end
    return specs, names
end

-- host_contract(host_ptr, name, version, signatures[, options]) -> object
--
-- Finds the host contract `name` at `version` (a major such as 1, or "1.2" for at
-- least minor 2 of major 1), gets its instance with HostApi.get_host_contract, and
-- returns an object with one method per entry of `signatures`:
--     local kv = pg.host_contract(host_ptr, "app.kv", 1, {
--         get = { id = 0, args = { "string" }, returns = "string" },
--         put = { id = 1, args = { "string", "string" } },
--     })
--     kv:put("a", "1"); local v = kv:get("a")
-- Types: u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 bool string bytes (u64/i64 results
-- are uint64_t/int64_t cdata; string/bytes arguments and results are Lua strings).
-- A failed host call raises a Lua error with the host's message.  Also:
--     kv:call(fn_id, args_ptr, out_ptr)  raw call with your own memory (raises)
--     kv:close()                         destroy a per-instance contract's instance
--                                        (also done when the object is collected)
--     kv.contract, kv.version, kv.interface, kv.instance, kv.singleton
-- When the contract is not provided this raises, or with options { optional = true }
-- returns nil and the reason.  A singleton the host replaced is looked up again.
function M.host_contract(host_ptr, name, version, signatures, options)
    local host = to_host(host_ptr, "host_contract")
    if type(name) ~= "string" or name == "" or name:find("@", 1, true) then
        error("host_contract: name must be the bare contract name, e.g. \"app.kv\"", 2)
    end
    local major, minor = host_version("host_contract", version)
    local label = name .. "@" .. major
    local specs, names = host_specs(label, signatures)
    local st = {
        host = host, id = abi.host_contract_id(name, major), packed = major * 65536 + minor,
        major = major, minor = minor, label = label, specs = specs, names = names,
    }
    local inst, why = host_resolve(st)
    if not inst then
        if type(options) == "table" and options.optional then
            return nil, why
        end
        error(why, 2)
    end
    local v = st.iface.contract_version
    local obj = {
        contract = label,
        version = { major = v.major, minor = v.minor, patch = v.patch },
        interface = st.iface,
        instance = ffi.cast(void_ptr_t, st.inst),
        singleton = st.singleton,
    }
    for mname, spec in pairs(specs) do
        obj[mname] = host_method(st, mname, spec)
    end
    local err = ffi.new(AbiError_arr_t)
    function obj.call(_, fn_id, args_ptr, out_ptr)
        local f = st.fns[fn_id]
        if f == nil then
            error(string.format("%s: no host function with id %s", label, tostring(fn_id)), 2)
        end
        err[0].code = 0
        f(st.inst, ffi.cast(void_ptr_t, ffi.cast(uintptr_t, args_ptr or 0)),
          ffi.cast(void_ptr_t, ffi.cast(uintptr_t, out_ptr or 0)), err)
        if err[0].code ~= 0 then
            host_check(st, fn_id, ffi.cast(void_ptr_t, ffi.cast(uintptr_t, args_ptr or 0)),
                       ffi.cast(void_ptr_t, ffi.cast(uintptr_t, out_ptr or 0)), err)
        end
    end
    if not st.singleton then
        -- the instance belongs to this object: destroyed by close() or when collected
        local iface = st.iface
        local box = ffi.gc(ffi.new("HostContractInstance[1]", HostContractInstance_t(inst.data)),
                           function(b) iface.destroy_instance(iface, b[0]) end)
        function obj.close()
            if st.closed then
                return
            end
            st.closed = true
            ffi.gc(box, nil)
            iface.destroy_instance(iface, box[0])
        end
    else
        function obj.close() end
    end
    return obj
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
