-- The seed's logging_plugin_script: logs through HostApi.log (pg.log), once with an
-- out-of-range level that the host clamps to Error.
local pg = require("polyplug_guest")
local function new_logger(host)
    local self = {}
    function self:log_fn(_args_ptr, _out_ptr)
        pg.log(host, pg.LogLevel.Info, "guest.test-log", "hello from lua guest")
        pg.log(host, 99, "guest.test-log", "out of range level")
    end
    return self
end
function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        ["test.loader"] = {
            contract_version = 1,
            plugin_name      = "test-loader-guest-log",
            factory          = new_logger,
            functions        = { [0] = function(instance, a, o) instance:log_fn(a, o) end },
        },
    }, { code = 0 }
end
