-- The seed's failing_plugin_script: the only function raises.
local function impl_fail(_instance, _args_ptr, _out_ptr)
    error("boom from lua guest")
end
function polyplug_init(_registrar_ptr, _ctx_ptr)
    return {
        ["test.loader"] = {
            contract_version = 1,
            plugin_name      = "test-loader-fail",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_fail },
        },
    }, { code = 0 }
end
