-- notes: a bundle that keeps its data in the host program.
--
-- It calls two host contracts, which the program that loads it provides:
--   app.kv@1      a key-value store (required: the manifest declares it)
--   app.events@1  an event sink (optional: without it no events are sent)
local ffi = require("ffi")
local pg = require("polyplug_guest")

-- The host functions this bundle calls: method name -> { host function id, types }.
local KV = {
    get = { id = 0, args = { "string" }, returns = "string" },
    put = { id = 1, args = { "string", "string" } },
}
local EVENTS = {
    emit = { id = 0, args = { "string" } },
}

local TWO_STRINGS = ffi.typeof("const struct { StringView name; StringView text; } *")

local function new_notes(host)
    return {
        kv = pg.host_contract(host, "app.kv", 1, KV),
        events = pg.host_contract(host, "app.events", 1, EVENTS, { optional = true }),
        added = 0,
    }
end

-- add(name, text): store a note with the host
local function add(self, args_ptr)
    local a = pg.ptr(args_ptr, TWO_STRINGS)[0]
    local name = pg.read_string(a.name)
    self.kv:put("note:" .. name, pg.read_string(a.text))
    self.added = self.added + 1
    if self.events then
        self.events:emit("added " .. name)
    end
end

-- show(name) -> "name: text"
local function show(self, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local name = pg.read_string(pg.ptr(args_ptr, "const StringView *")[0])
    local text = self.kv:get("note:" .. name)
    local line = name .. ": " .. text
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, line)
end

-- count() -> how many notes this instance added
local function count(self, _, out_ptr)
    pg.ptr(out_ptr, "uint32_t *")[0] = self.added
end

function polyplug_init(_host, _ctx)
    return {
        ["example.notes"] = {
            contract_version = 1,
            plugin_name = "notes",
            factory = new_notes,
            functions = { [0] = add, [1] = show, [2] = count },
        },
    }, { code = 0 }
end
