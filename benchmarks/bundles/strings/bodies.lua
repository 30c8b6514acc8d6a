-- The function bodies of the string benchmarks, shared by the strings bundle (which
-- wraps each in the vm.call protocol with the guest SDK) and by the lupa comparison
-- (py/bench_lupa.py, which calls them with Python values): both run this very code.
local M = {}

function M.add(a, b) return a + b end          -- (u32, u32) -> u32

function M.slen(s) return #s end               -- str -> u32

function M.const() return "hello, world" end   -- () -> str, 12 bytes

function M.upper(s) return s:upper() end       -- str -> str

function M.echo(b) return b end                -- bytes -> bytes

return M
