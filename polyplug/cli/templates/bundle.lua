-- $contract@1
--   fn 0  hello(name: string) -> string     "Hello, <name>!"
-- Every function is called as fn(self, args_ptr, out_ptr, arena_ptr, arena_alloc):
-- `self` is what the factory returned, the pointers are numbers (pg.ptr makes them
-- typed), and a Lua error fails the call with its message.
local pg = require("polyplug_guest")

local function hello(self, args_ptr, out_ptr, arena_ptr, arena_alloc)
    -- A string argument is a StringView { ptr, len } in the argument block.
    local name = pg.read_string(pg.ptr(args_ptr, "const StringView *")[0])
    if name == "" then
        name = "world"
    end
    pg.log(self.host, pg.LogLevel.Debug, "guest.$module", "hello " .. name)
    -- A string result must outlive the call: copy it into the caller's arena.
    pg.ptr(out_ptr, "StringView *")[0] =
        pg.alloc_string_arena(arena_alloc, arena_ptr, "Hello, " .. name .. "!")
end

function polyplug_init(_host, _ctx)
    return {
        ["$contract"] = {
            contract_version = 1,
            plugin_name = "$name",
            -- Builds the default instance at load, and one per created instance.
            factory = function(host) return { host = host } end,
            functions = { [0] = hello },
        },
    }, { code = 0 }
end
