/*
 * pp_lua_jit.c — the few things the loader needs from LuaJIT's internals.
 *
 * LuaJIT is built from a pinned, checksum-verified source (scripts/build_luajit.sh),
 * and this file is compiled against that same tree's private headers, so the layouts
 * used here are the layouts of the linked library.  Everything else in polyplug uses
 * the public Lua/C API only.  What is used, and why:
 *
 *   - hook_leave: a count hook that raises an error leaves LuaJIT's "hook active" mark
 *     set, and an xpcall message handler then runs with hooks disabled — a handler
 *     that loops could not be stopped.  The limit hook clears the mark itself before
 *     it raises (what LuaJIT does when a hook returns normally).
 *   - unblocking hooks: __gc finalizers (and lua_close) run with the mark set, so the
 *     watchdog clears it once a deadline has passed and the count hook it armed fires
 *     inside the finalizer.  The watchdog thread does this byte update while the VM
 *     runs, the same kind of asynchronous hook change LUAJIT_ENABLE_CHECKHOOK exists
 *     for; it is an atomic read-modify-write of one byte.
 *   - jit_base: whether the VM is executing a compiled trace right now.
 *   - the finalizer-error event: LuaJIT reports an error raised by a __gc finalizer
 *     through the ERRFIN VM event, whose default handler (luaL_newstate installs one)
 *     prints to the process's stderr.  The loader's states come from lua_newstate,
 *     with its own handler, which logs through the runtime instead.
 */
#include "lj_obj.h"
#include "lj_dispatch.h"
#include "lj_vmevent.h"
#include "lauxlib.h"

#include "pp_lua_jit.h"

void ppi_lua_hook_leave(lua_State *L) { hook_leave(G(L)); }

void ppi_lua_unblock_hooks(lua_State *L) {
    __atomic_fetch_and(&G(L)->hookmask, (uint8_t)~HOOK_ACTIVE, __ATOMIC_RELAXED);
}

bool ppi_lua_set_finalizer_error_handler(lua_State *L) {
#ifdef LUAJIT_DISABLE_VMEVENT
    lua_pop(L, 1);
    return false;
#else
    luaL_findtable(L, LUA_REGISTRYINDEX, LJ_VMEVENTS_REGKEY, LJ_VMEVENTS_HSIZE);
    lua_insert(L, -2);
    lua_rawseti(L, -2, VMEVENT_HASH(LJ_VMEVENT_ERRFIN));
    lua_pop(L, 1);
    G(L)->vmevmask |= VMEVENT_MASK(LJ_VMEVENT_ERRFIN);
    return true;
#endif
}

bool ppi_lua_in_trace(lua_State *L) { return tvref(G(L)->jit_base) != NULL; }
