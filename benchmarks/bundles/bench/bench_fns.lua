-- The benchmark's guest functions, shared by the bench bundle and the floor harness.
-- Every function has the vm.call signature:
--   (instance, args_ptr, out_ptr, arena_ptr, arena_alloc); pointers are Lua numbers.
local ffi = require("ffi")

local M = {}

-- fn 0: add(u32 a, u32 b) -> u32; the body of reference-behaviour.md §1, verbatim.
function M.add(instance, args_ptr, out_ptr, arena_ptr, arena_alloc)
  local a = ffi.cast("const uint32_t*", args_ptr)
  local o = ffi.cast("uint32_t*", out_ptr)
  o[0] = a[0] + a[1]
end

-- fn 1: no-op.
function M.noop() end

-- fn 2: writes the Lua heap size in bytes (a double) to *out.
function M.gc_bytes(_instance, _args_ptr, out_ptr)
  ffi.cast("double*", out_ptr)[0] = collectgarbage("count") * 1024
end

-- fn 3: GC control; *args is a u32: 0 = stop, 1 = restart, 2 = full collection.
function M.gc_ctl(_instance, args_ptr)
  local op = ffi.cast("const uint32_t*", args_ptr)[0]
  if op == 0 then
    collectgarbage("stop")
  elseif op == 1 then
    collectgarbage("restart")
  else
    collectgarbage("collect")
  end
end

-- fn 4: spin(u32 n) -> u32, a loop the JIT compiles: n iterations of integer work.
-- Measures what a call_timeout costs a long-running call (nothing, when no deadline
-- passes: the count hook is armed only then).
function M.spin(_instance, args_ptr, out_ptr)
  local n = ffi.cast("const uint32_t*", args_ptr)[0]
  local s = 0
  for i = 1, n do s = (s + i * 7) % 1000003 end
  ffi.cast("uint32_t*", out_ptr)[0] = s
end

return M
