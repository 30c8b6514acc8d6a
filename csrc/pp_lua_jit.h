/*
 * pp_lua_jit.h — LuaJIT internals used by the loader (pp_lua_jit.c says what and why).
 * Only public Lua types appear here, so the rest of the loader never includes a private
 * LuaJIT header.
 */
#ifndef PP_LUA_JIT_H
#define PP_LUA_JIT_H

#include <stdbool.h>
#include <stddef.h>

#include "lua.h"

/* Clear the "hook active" mark (from inside a hook that is about to raise). */
void ppi_lua_hook_leave(lua_State *L);
/* Let an armed hook fire inside a __gc finalizer or lua_close (any thread). */
void ppi_lua_unblock_hooks(lua_State *L);
/* Make the function on top of the stack (popped) the handler of errors raised by __gc
 * finalizers, in place of LuaJIT's, which prints to stderr.  May raise (allocation):
 * call it in a protected frame.  False if this LuaJIT has no VM events. */
bool ppi_lua_set_finalizer_error_handler(lua_State *L);
/* Is a VM-event handler or jit.profile callback running (no error may be raised)? */
bool ppi_lua_in_vmevent(lua_State *L);
/* Is the VM running a compiled trace? */
bool ppi_lua_in_trace(lua_State *L);

/* vm.call's lua_pcall(L, 5, 0, errfunc_idx): registry[fn_ref] called with the
 * instance — registry[self_ref], or registry[self_ref][self_key] when self_key is not
 * 0 — then args, out and arena as numbers and the value at stack index
 * arena_alloc_idx; errfunc_idx is a stack index too.  Built without the public API's
 * per-value overhead.  Returns lua_pcall's status, or PPI_PCALL_NO_INSTANCE (no
 * instance self_key), or PPI_PCALL_BY_API (nothing done: a reference is missing or the
 * stack must grow; do it through the public API). */
enum { PPI_PCALL_BY_API = -1, PPI_PCALL_NO_INSTANCE = -2 };
int ppi_lua_pcall_vm_call(lua_State *L, int fn_ref, int self_ref, int self_key,
                          const void *args, void *out, void *arena, int arena_alloc_idx,
                          int errfunc_idx);

#endif /* PP_LUA_JIT_H */
