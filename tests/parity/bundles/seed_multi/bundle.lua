-- The seed's two_contract_plugin_script: two contracts in one bundle.
local ffi = require("ffi")
local function impl_first(_instance, _args_ptr, _out_ptr) end
local function impl_second_a(_instance, _args_ptr, _out_ptr) end
local function impl_second_b(_instance, _args_ptr, _out_ptr) end
function polyplug_init(_registrar_ptr, _ctx_ptr)
    return {
        ["test.first"] = {
            contract_version = 1,
            plugin_name      = "test-multi-first",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_first },
        },
        ["test.second"] = {
            contract_version = 1,
            plugin_name      = "test-multi-second",
            factory          = function(_host) return {} end,
            functions        = { [0] = impl_second_a, [1] = impl_second_b },
        },
    }, { code = 0 }
end
