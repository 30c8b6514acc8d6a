-- The seed's valid_plugin_script: test.loader@1 with one no-op function.
local ffi = require("ffi")
local function impl_noop(_instance, _args_ptr, _out_ptr)
end
function polyplug_init(_registrar_ptr, _ctx_ptr)
    return {
        ["test.loader"] = {
            contract_version = 1,
            plugin_name      = "test-loader-unit",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_noop },
        },
    }, { code = 0 }
end
