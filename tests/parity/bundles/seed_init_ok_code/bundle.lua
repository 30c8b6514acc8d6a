-- The seed's load_init_returning_ok_code_succeeds bundle.
local function impl_noop(_instance, _args_ptr, _out_ptr) end
function polyplug_init(_reg, _ctx)
    return {
        ["test.initok"] = {
            contract_version = 1,
            plugin_name      = "test-init-ok",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_noop },
        },
    }, { code = 0 }  -- AbiErrorCode.Ok
end
