-- hostuser: calls the parity host contract parity.host@1 (provided by the driver) with
-- pg.host_contract and with a polyplugc-style generated caller.
local ffi = require("ffi")
local pg = require("polyplug_guest")
local generated = require("generated.guest.host_contracts")

local HOST = {
    add = { id = 0, args = { "u32", "u32" }, returns = "u32" },
    greet = { id = 1, args = { "string" }, returns = "string" },
    fail = { id = 2, args = { "string" } },
    count = { id = 3, returns = "u32" },
}
local U32_PAIR = ffi.typeof("const uint32_t *")
local SV = ffi.typeof("const StringView *")

local function text_result(out_ptr, arena_ptr, arena_alloc, s)
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, s)
end

local function factory(host)
    return {
        h = pg.host_contract(host, "parity.host", 1, HOST),
        pc = generated.HostParityHostContract.from_host(host, 0x10000),
    }
end

local functions = {
    [0] = function(self, a, out) -- add(u32, u32) -> u32
        local p = pg.ptr(a, U32_PAIR)
        pg.ptr(out, "uint32_t *")[0] = self.h:add(p[0], p[1])
    end,
    [1] = function(self, a, out, arena, alloc) -- greet(str) -> str
        text_result(out, arena, alloc, self.h:greet(pg.read_string(pg.ptr(a, SV)[0])))
    end,
    [2] = function(self, a) -- fail(str): the host's error ends the call
        self.h:fail(pg.read_string(pg.ptr(a, SV)[0]))
    end,
    [3] = function(self, _, out) -- count() -> u32
        pg.ptr(out, "uint32_t *")[0] = self.h:count()
    end,
    [4] = function(self, a, out) -- add through the polyplugc-style caller
        local p = pg.ptr(a, U32_PAIR)
        local r = self.pc and self.pc:add(p[0], p[1])
        if r == nil then
            error("the polyplugc-style caller returned nil", 0)
        end
        pg.ptr(out, "uint32_t *")[0] = r
    end,
    [5] = function(self, a, out, arena, alloc) -- fail(str) caught: "false <message>"
        local ok, e = pcall(self.h.fail, self.h, pg.read_string(pg.ptr(a, SV)[0]))
        text_result(out, arena, alloc, tostring(ok) .. " " .. tostring(e))
    end,
    [6] = function(self, a, out, arena, alloc) -- greet through the polyplugc-style caller
        local s = self.pc and self.pc:greet(pg.read_string(pg.ptr(a, SV)[0]))
        text_result(out, arena, alloc, s == nil and "<nil>" or s)
    end,
    [7] = function(self) -- destroy this instance's host instance
        self.h:close()
    end,
}

function polyplug_init(_host, _ctx)
    return {
        ["parity.hostuser"] = { contract_version = 1, factory = factory, functions = functions },
    }, { code = 0 }
end
