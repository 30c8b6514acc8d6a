-- parity.counter@1: per-instance state.  The factory numbers the impls it builds
-- (the default impl, built at load, is #1).
-- fn 0: inc([u32 step]) -> u32 count   fn 1: get() -> u32   fn 2: serial() -> u32
local pg = require("polyplug_guest")
local built = 0
local function new_counter(_host)
    built = built + 1
    return { n = 0, serial = built }
end
local function inc(self, args_ptr, out_ptr)
    local step = 1
    if args_ptr ~= 0 then step = pg.ptr(args_ptr, "const uint32_t *")[0] end
    self.n = self.n + step
    pg.ptr(out_ptr, "uint32_t *")[0] = self.n
end
local function get(self, _args_ptr, out_ptr)
    pg.ptr(out_ptr, "uint32_t *")[0] = self.n
end
local function serial(self, _args_ptr, out_ptr)
    pg.ptr(out_ptr, "uint32_t *")[0] = self.serial
end
function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["parity.counter"] = {
            contract_version = 1,
            plugin_name      = "parity-counter",
            factory          = new_counter,
            functions        = { [0] = inc, get, serial },
        },
    }, { code = 0 }
end
