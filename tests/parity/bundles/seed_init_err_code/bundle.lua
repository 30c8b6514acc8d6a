-- The seed's load_init_returning_error_code_fails_load bundle.
local function impl_noop(_instance, _args_ptr, _out_ptr) end
function polyplug_init(_reg, _ctx)
    return {
        ["test.initerr"] = {
            contract_version = 1,
            plugin_name      = "test-init-err",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_noop },
        },
    }, { code = 1 }  -- AbiErrorCode.Generic
end
