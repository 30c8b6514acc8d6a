-- example.counter@1: a per-instance counter that logs through the host.
--   fn 0  increment(by: u32) -> u64   add `by`, return the new count
--   fn 1  get() -> u64                the current count
--   fn 2  reset()                     back to 0
-- The factory runs once for the default instance (at load) and once per
-- create_guest_instance; whatever it returns is the `self` of every call on that
-- instance, so each instance has its own count.  The factory receives the host
-- pointer (a number); keeping it lets the functions log with pg.log.
local pg = require("polyplug_guest")

local SCOPE = "guest.counter"
local instances = 0

local function u64text(n)
    return (tostring(n):gsub("ULL$", ""))
end

local function factory(host)
    instances = instances + 1
    local self = { host = host, id = instances, count = 0ULL }
    pg.log(host, pg.LogLevel.Debug, SCOPE, "counter #" .. self.id .. " created")
    return self
end

local function increment(self, args_ptr, out_ptr)
    local by = pg.ptr(args_ptr, "const uint32_t *")[0]
    self.count = self.count + by
    pg.ptr(out_ptr, "uint64_t *")[0] = self.count
    pg.log(self.host, pg.LogLevel.Info, SCOPE,
           "counter #" .. self.id .. ": +" .. by .. " -> " .. u64text(self.count))
end

local function get(self, _, out_ptr)
    pg.ptr(out_ptr, "uint64_t *")[0] = self.count
end

local function reset(self)
    self.count = 0ULL
    pg.log(self.host, pg.LogLevel.Info, SCOPE, "counter #" .. self.id .. ": reset")
end

function polyplug_init(_host, _ctx)
    return {
        ["example.counter"] = {
            contract_version = 1,
            plugin_name = "counter",
            factory = factory,
            functions = { [0] = increment, [1] = get, [2] = reset },
        },
    }, { code = 0 }
end
