-- The seed's two_function_plugin_script: test.two@1 with two functions.
local ffi = require("ffi")
local function impl_a(_instance, _args_ptr, _out_ptr) end
local function impl_b(_instance, _args_ptr, _out_ptr) end
function polyplug_init(_registrar_ptr, _ctx_ptr)
    return {
        ["test.two"] = {
            contract_version = 1,
            plugin_name      = "test-two-unit",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_a, [1] = impl_b },
        },
    }, { code = 0 }
end
