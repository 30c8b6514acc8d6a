-- example.arith@1: integer arithmetic on u32 arguments laid out as { a, b }.
--   fn 0  add(a, b) -> u32      fn 1  mul(a, b) -> u32      fn 2  div(a, b) -> u32
-- Every function receives (instance, args_ptr, out_ptr, arena_ptr, arena_alloc);
-- the pointers are Lua numbers, turned into typed cdata with pg.ptr.
local pg = require("polyplug_guest")

local function operands(args_ptr)
    local args = pg.ptr(args_ptr, "const uint32_t *")
    return args[0], args[1]
end

local function result(out_ptr, value)
    pg.ptr(out_ptr, "uint32_t *")[0] = value
end

local function add(_, args_ptr, out_ptr)
    local a, b = operands(args_ptr)
    result(out_ptr, a + b)
end

local function mul(_, args_ptr, out_ptr)
    local a, b = operands(args_ptr)
    result(out_ptr, a * b)
end

local function div(_, args_ptr, out_ptr)
    local a, b = operands(args_ptr)
    if b == 0 then
        error("division by zero")
    end
    result(out_ptr, math.floor(a / b))
end

function polyplug_init(_host, _ctx)
    return {
        ["example.arith"] = {
            contract_version = 1,
            plugin_name = "arith",
            factory = function(_) return {} end,
            functions = { [0] = add, [1] = mul, [2] = div },
        },
    }, { code = 0 }
end
