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
 *   - the call frame of vm.call: the function and the instance come straight from the
 *     registry table and the five arguments are written to the stack in the frame
 *     layout lua_pcall builds (GC64: function, frame slot, arguments), then
 *     lj_vm_pcall runs it as lua_pcall does.  Through the public API the same takes
 *     two lua_rawgeti, three lua_pushnumber, a lua_pushvalue and lua_pcall's argument
 *     shuffle: about 130 instructions more per call, a fifth of a whole vm.call.
 *   - the finalizer-error event: LuaJIT reports an error raised by a __gc finalizer
 *     through the ERRFIN VM event, whose default handler (luaL_newstate installs one)
 *     prints to the process's stderr.  The loader's states come from lua_newstate,
 *     with its own handler, which logs through the runtime instead.
 */
#include "lj_obj.h"
#include "lj_dispatch.h"
#include "lj_state.h"
#include "lj_tab.h"
#include "lj_vm.h"
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

int ppi_lua_pcall_vm_call(lua_State *L, int fn_ref, int self_ref, int self_key,
                          const void *args, void *out, void *arena, int arena_alloc_idx,
                          int errfunc_idx) {
    GCtab *reg = tabV(registry(L));
    cTValue *fn = lj_tab_getint(reg, fn_ref);
    cTValue *self = lj_tab_getint(reg, self_ref);
    TValue *top = L->top;
    if (LJ_UNLIKELY(!fn || top + 1 + LJ_FR2 + 5 > tvref(L->maxstack))) return PPI_PCALL_BY_API;
    if (self_key) { /* a created instance: instances[self_key] */
        if (LJ_UNLIKELY(!self || !tvistab(self))) return PPI_PCALL_BY_API;
        self = lj_tab_getint(tabV(self), self_key);
        if (!self || tvisnil(self)) return PPI_PCALL_NO_INSTANCE;
    } else if (!self) {
        self = niltv(L); /* a factory that returned nil: the default instance is nil */
    }
    copyTV(L, top, fn);
    TValue *base = top + 1 + LJ_FR2;
#if LJ_FR2
    setnilV(top + 1); /* the frame link slot */
#endif
    copyTV(L, base, self);
    setnumV(base + 1, (lua_Number)(uintptr_t)args);
    setnumV(base + 2, (lua_Number)(uintptr_t)out);
    setnumV(base + 3, (lua_Number)(uintptr_t)arena);
    copyTV(L, base + 4, L->base + (arena_alloc_idx - 1));
    L->top = base + 5;
    global_State *g = G(L);
    uint8_t oldh = hook_save(g);
    int status = lj_vm_pcall(L, base, 0 + 1, savestack(L, L->base + (errfunc_idx - 1)));
    if (status) hook_restore(g, oldh);
    return status;
}
