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
/* Is the VM running a compiled trace? */
bool ppi_lua_in_trace(lua_State *L);

#endif /* PP_LUA_JIT_H */
