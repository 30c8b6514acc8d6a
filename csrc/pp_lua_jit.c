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
 *   - HOOK_VMEVENT: whether a VM-event handler (jit.attach) or a jit.profile callback is
 *     running; an error raised there is fatal (jit.profile exits the process).
 *   - the finalizer-error event: LuaJIT reports an error raised by a __gc finalizer
 *     through the ERRFIN VM event, whose default handler (installed by luaL_newstate)
 *     prints to the process's stderr.  The loader installs its own handler, which
 *     logs through the runtime instead.
 *   - the internal allocator (lj_alloc_f / lj_alloc_destroy) and the GG_State block:
 *     every bundle VM's allocator is a thin wrapper around LuaJIT's own, which counts
 *     bytes for memory limits and learns when lua_close frees the state itself.
 */
#include "lj_obj.h"
#include "lj_alloc.h"
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

bool ppi_lua_in_vmevent(lua_State *L) { return (G(L)->hookmask & HOOK_VMEVENT) != 0; }

bool ppi_lua_in_trace(lua_State *L) { return tvref(G(L)->jit_base) != NULL; }

const void *ppi_lua_state_block(lua_State *L) { return G2GG(G(L)); }

void *ppi_lua_internal_alloc(void *msp, void *ptr, size_t osize, size_t nsize) {
    return lj_alloc_f(msp, ptr, osize, nsize);
}

bool ppi_lua_is_internal_alloc(lua_Alloc f) { return f == lj_alloc_f; }

void ppi_lua_internal_destroy(void *msp) { lj_alloc_destroy(msp); }

bool ppi_lua_layout_ok(lua_State *L) {
    /* a main state is its global state's main thread, and the GG block holds both */
    global_State *g = G(L);
    return mainthread(g) == L && (const void *)&G2GG(g)->g == (const void *)g;
}
