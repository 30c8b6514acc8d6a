-- Entry file of the benchmark bundle: registers contract bench@1 whose functions
-- come from bench_fns.lua.  The floor harness (benchmarks/c/bench_dispatch.c) loads
-- the same bench_fns.lua into a plain lua_State, so both run byte-identical code.
local fns = require("bench_fns")

function polyplug_init(_host_ptr, _ctx_ptr)
    return {
        bench = {
            contract_version = 1,
            plugin_name = "bench",
            factory = function(_host) return {} end,
            functions = { [0] = fns.add, [1] = fns.noop, [2] = fns.gc_bytes, [3] = fns.gc_ctl,
                          [4] = fns.spin },
        },
    }, { code = 0 }
end
