/*
 * pp_lua_call.c — the trampolines a Lua contract's interface points at: vm.call
 * (lua-loader.md §3.2), create_instance and destroy_instance (§3.4), and the end of a
 * VM's life (retire, then close when no call is inside).
 *
 * The rules:
 *   1. Every use of a bundle's lua_State happens between vm_enter and vm_leave.
 *      vm_enter checks the cancel token, fixes the call's deadline (an enclosing
 *      call's earlier deadline wins), takes the VM lock — waiting at most the call's
 *      remaining time, or PPI_NESTED_WAIT_NS when this thread already holds a lock
 *      (pp_internal.h) — and refuses a retired VM or contract (StaleHandle).
 *      vm_leave releases, and closes a retired VM if this was the last call in it.
 *   2. Re-entry is per contract, as upstream: a thread running a call in a VM may call
 *      another contract of the same bundle (a nested call: it already owns the VM
 *      lock, so it takes nothing and releases nothing), but not a contract it is
 *      already running further out (ReentrantCall), and not from JIT-compiled code
 *      (LuaJIT cannot re-enter a state from a C function a trace called).
 *   3. Lua is entered only through lua_pcall with the traceback handler; the
 *      outermost call finds it at stack index 1, a nested call above the guest's
 *      frame (vm_frame).  A lua_error never unwinds a C frame that owns anything.
 *   4. Errors are formatted into the thread's error text (AbiError.message points at
 *      it, valid until this thread's next call) and logged after vm_leave.
 *   5. The success path of a call allocates nothing on the heap.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "pp_lua_internal.h"
#include "pp_lua_jit.h"

enum {
    STACK_TRACEBACK = PPI_STACK_TRACEBACK,
    STACK_ARENA_ALLOC = PPI_STACK_ARENA_ALLOC,
    STACK_MAKE_INSTANCE = PPI_STACK_MAKE_INSTANCE,
    STACK_BASE = PPI_STACK_BASE
};

/* Where a trampoline's Lua work sits on the stack: `base` is the top to return to,
 * `traceback` the index of the message handler. */
typedef struct vm_frame {
    int base, traceback;
} vm_frame;

static vm_frame frame_open(lua_State *L, const ppi_call *call) {
    if (PP_LIKELY(!call->nested)) return (vm_frame){STACK_BASE, STACK_TRACEBACK};
    /* above the running guest's frame (a C call it made through the FFI: LuaJIT keeps
     * LUA_MINSTACK free slots for it, more than a trampoline pushes) */
    int base = lua_gettop(L);
    ppi_lua_push_helper(L, STACK_TRACEBACK);
    return (vm_frame){base, base + 1};
}

static void push_helper(lua_State *L, const ppi_call *call, int slot) {
    if (PP_LIKELY(!call->nested))
        lua_pushvalue(L, slot);
    else
        ppi_lua_push_helper(L, slot);
}

static void set_call_error(AbiError *out_err, uint32_t code, const char *msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = msg ? ppi_view(msg) : (StringView){NULL, 0};
}

/* ── the thread's call stack ───────────────────────────────────────────────── */

void ppi_lua_call_push(ppi_call *call, pp_runtime *rt, const void *vm, const void *contract,
                       uint64_t timeout_ns, pp_cancel *cancel) {
    ppi_thread *t = ppi_self();
    const ppi_call *outer = t->call;
    call->outer = t->call;
    call->rt = rt;
    call->vm = vm;
    call->contract = contract;
    call->deadline_ns = 0;
    call->timeout_ns = timeout_ns;
    if (timeout_ns) call->deadline_ns = ppi_deadline_after(timeout_ns);
    if (outer && outer->deadline_ns &&
        (call->deadline_ns == 0 || outer->deadline_ns < call->deadline_ns)) {
        call->deadline_ns = outer->deadline_ns;
        call->timeout_ns = 0;
    }
    call->cancel = cancel ? cancel : outer ? outer->cancel : NULL;
    call->tripped = 0;
    call->limited = false;
    call->quiet = false;
    call->nested = false;
    t->call = call;
    t->depth++;
}

void ppi_lua_call_pop(ppi_call *call) {
    ppi_thread *t = ppi_self();
    t->call = call->outer;
    /* the outermost call is over: deliver what was logged too deep in its stack */
    if (--t->depth == 0 && PP_UNLIKELY(t->deferred)) ppi_log_flush_deferred();
}

/* ── entering and leaving a VM ─────────────────────────────────────────────── */

/* Close `b`'s VM if it is retired and nobody is inside it.  Whoever fails the try-lock
 * here is covered by the holder, which checks `retired` after it releases. */
static void reap(lua_bundle *b) {
    if (!ppi_lock_try(&b->lock, ppi_thread_tag())) return;
    lua_State *L = b->L;
    b->L = NULL;
    ppi_lock_release(&b->lock);
    if (L) ppi_lua_vm_close(b->rt, L); /* no lock of this VM held; finalizers bounded */
}

void ppi_lua_retire(lua_bundle *b) {
    atomic_store(&b->retired, true); /* seq_cst: pairs with the load in ppi_lua_release */
    reap(b);
}

void ppi_lua_release(lua_bundle *b) {
    ppi_lock_release(&b->lock);
    /* whoever releases a retired VM last closes it (the retiring thread could not) */
    if (PP_UNLIKELY(atomic_load(&b->retired))) reap(b);
}

/* Take b's VM lock for `call`; false (text in the thread's error buffer) when the
 * wait ran out. */
static bool acquire_vm(lua_bundle *b, ppi_call *call, ppi_thread *t, uintptr_t me) {
    bool outermost = t->vm_locks == 0 && t->ops_held == 0;
    if (PP_LIKELY(outermost && call->deadline_ns == 0)) {
        ppi_lock_acquire(&b->lock, me);
        return true;
    }
    if (ppi_lock_try(&b->lock, me)) return true;
    long long now = ppi_now_ns();
    long long deadline = call->deadline_ns;
    bool nested_bound = !outermost && (deadline == 0 || deadline - now > (long long)PPI_NESTED_WAIT_NS);
    if (nested_bound) deadline = now + (long long)PPI_NESTED_WAIT_NS;
    if (ppi_lock_acquire_until(&b->lock, deadline)) {
        atomic_store_explicit(&b->lock.owner, me, memory_order_relaxed);
        return true;
    }
    if (nested_bound)
        ppi_error_textf("gave up after %.3f s waiting for bundle `%s`: this thread already holds "
                        "another bundle or a load in progress, and waiting longer could "
                        "deadlock (bundles calling each other from several threads)",
                        (double)PPI_NESTED_WAIT_NS / 1e9, b->name);
    else
        ppi_error_textf("call timed out waiting for bundle `%s`: another call was running in "
                        "it until the deadline",
                        b->name);
    return false;
}

/* Enter b's VM for contract `c` (NULL: any).  0 on success (`call` pushed, VM lock
 * held); else an AbiError code with the thread's error text set. */
static uint32_t vm_enter(lua_bundle *b, lua_contract *c, ppi_call *call) {
    ppi_thread *t = ppi_self();
    uintptr_t me = ppi_thread_tag();
    const char *contract = c ? c->name : "";
    bool nested = false;
    if (PP_UNLIKELY(ppi_lock_mine(&b->lock, me))) {
        /* this thread runs a call in b's VM further out: another contract may run,
         * the same one (or an init of the bundle) not */
        for (const ppi_call *o = t->call; o; o = o->outer)
            if (o->vm == b && (o->contract == c || !o->contract)) {
                ppi_error_textf("reentrant call refused: this thread is already running "
                                "contract '%s' of bundle `%s`",
                                contract, b->name);
                return AbiErrorCode_ReentrantCall;
            }
        if (ppi_lua_in_trace(b->L)) {
            ppi_error_textf("reentrant call refused: contract '%s' of bundle `%s` was called "
                            "from JIT-compiled code of the same bundle, which LuaJIT cannot "
                            "re-enter; call it from a function the JIT leaves alone "
                            "(jit.off(fn))",
                            contract, b->name);
            return AbiErrorCode_ReentrantCall;
        }
        nested = true;
    }
    size_t left = ppi_cstack_left();
    if (PP_UNLIKELY(left < PPI_CSTACK_RESERVE)) {
        ppi_error_textf("C stack overflow: %zu KiB of this thread's stack left, and entering "
                        "bundle `%s` needs %u KiB (calls nested too deeply, or a thread with "
                        "a small stack)",
                        left / 1024, b->name, PPI_CSTACK_RESERVE / 1024);
        return AbiErrorCode_Generic;
    }
    uint64_t timeout = t->next_timeout_ns ? t->next_timeout_ns : b->call_timeout_ns;
    ppi_lua_call_push(call, b->rt, b, c, timeout, t->next_cancel);
    call->quiet = t->quiet_next;
    call->nested = nested;
    t->quiet_next = false;
    uint32_t code;
    if (PP_UNLIKELY(call->cancel && pp_cancel_requested(call->cancel))) {
        ppi_error_textf("Lua function call cancelled before it started (bundle `%s`, "
                        "contract '%s')",
                        b->name, contract);
        code = PP_ABI_CALL_CANCELLED;
        goto refused;
    }
    if (PP_UNLIKELY(!nested && !acquire_vm(b, call, t, me))) {
        code = PP_ABI_CALL_TIMEOUT;
        goto refused;
    }
    t->vm_locks++;
    bool gone = !b->L || atomic_load(&b->retired);
    if (PP_UNLIKELY(gone || (c && c->retired))) {
        t->vm_locks--;
        if (!nested) ppi_lua_release(b);
        ppi_error_textf(gone ? "contract '%s': bundle `%s` was unloaded; its interface "
                               "pointer is stale"
                             : "contract '%s' of bundle `%s` was removed by a reload; resolve "
                               "its handle again",
                        contract, b->name);
        code = AbiErrorCode_StaleHandle;
        goto refused;
    }
    return 0;
refused:
    ppi_lua_call_pop(call);
    return code;
}

static void vm_leave(lua_bundle *b, ppi_call *call) {
    ppi_thread *t = ppi_self();
    t->vm_locks--;
    bool nested = call->nested;
    ppi_lua_call_pop(call);
    if (!nested) ppi_lua_release(b); /* a nested call holds no lock of its own */
}

/* Report a failure that was formatted into `text`: last error, then the log (Debug
 * when the caller receives it as a value). */
static void report(lua_bundle *b, bool quiet, const char *text) {
    ppi_set_last_error(b->rt, text);
    ppi_log_emit(&b->rt->log, quiet ? LogLevel_Debug : LogLevel_Error, ppi_view("loader.lua"),
                 ppi_view(text));
}

/* ── vm.call ───────────────────────────────────────────────────────────────── */

static void call_in_vm(lua_contract *c, GuestContractInstance instance, uint32_t fn_id,
                       const void *args, void *out, CallArena *arena, AbiError *out_err) {
    lua_bundle *b = c->bundle;
    ppi_call call;
    uint32_t code = vm_enter(b, c, &call);
    if (PP_UNLIKELY(code)) {
        set_call_error(out_err, code, ppi_self()->error_text);
        return;
    }
    if (PP_UNLIKELY(fn_id >= atomic_load_explicit(&c->fn_count, memory_order_relaxed))) {
        vm_leave(b, &call);
        set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
        return;
    }
    lua_State *L = b->L;
    vm_frame f = frame_open(L, &call);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_refs[fn_id]);
    if (instance.data == NULL) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->default_ref);
    } else {
        if (PP_UNLIKELY((uintptr_t)instance.data > INT32_MAX)) {
            lua_settop(L, f.base);
            vm_leave(b, &call);
            set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
            return;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_rawgeti(L, -1, (int)(uintptr_t)instance.data);
        lua_remove(L, -2);
        if (PP_UNLIKELY(lua_isnil(L, -1))) {
            lua_settop(L, f.base);
            vm_leave(b, &call);
            set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
            return;
        }
    }
    ppi_lua_push_pointer(L, args);
    ppi_lua_push_pointer(L, out);
    ppi_lua_push_pointer(L, arena);
    push_helper(L, &call, STACK_ARENA_ALLOC);
    ppi_lua_limits_begin(L, &call);
    int rc = lua_pcall(L, 5, 0, f.traceback);
    /* after an allocation was refused (the call failed with it, or the guest caught
     * its own out-of-memory error) the heap is full of garbage: collect now, or the
     * next innocent call fails (LuaJIT has no emergency collection).  The guest's
     * finalizers run in this collection: it is still part of the call, watched and
     * capped */
    if (PP_UNLIKELY(b->memory_limit) && (rc == LUA_ERRMEM || ppi_lua_vm_take_refused(L))) {
        if (rc == LUA_ERRMEM) lua_settop(L, f.base);
        ppi_lua_vm_collect(L);
        ppi_lua_vm_take_refused(L);
    }
    ppi_lua_limits_end(L, &call);
    if (PP_LIKELY(rc == 0)) {
        if (PP_UNLIKELY(call.nested)) lua_settop(L, f.base);
        vm_leave(b, &call);
        set_call_error(out_err, AbiErrorCode_Ok, NULL);
        return;
    }
    /* Error path: copy the text out of the VM, leave it, then report. */
    char full[4096];
    code = AbiErrorCode_Generic;
    if (call.tripped == PP_ABI_CALL_TIMEOUT) {
        code = PP_ABI_CALL_TIMEOUT;
        if (call.timeout_ns)
            snprintf(full, sizeof full,
                     "Lua function call timed out after %.3f s (bundle `%s`, contract '%s', "
                     "fn %u)",
                     (double)call.timeout_ns / 1e9, b->name, c->name, fn_id);
        else
            snprintf(full, sizeof full,
                     "Lua function call timed out: the enclosing call's time limit ran out "
                     "(bundle `%s`, contract '%s', fn %u)",
                     b->name, c->name, fn_id);
    } else if (call.tripped == PP_ABI_CALL_CANCELLED) {
        code = PP_ABI_CALL_CANCELLED;
        snprintf(full, sizeof full, "Lua function call cancelled (bundle `%s`, contract '%s', fn %u)",
                 b->name, c->name, fn_id);
    } else if (rc == LUA_ERRMEM) {
        code = PP_ABI_OUT_OF_MEMORY;
        snprintf(full, sizeof full,
                 "Lua function call failed: not enough memory (bundle `%s` reached its memory "
                 "limit of %llu bytes)",
                 b->name, (unsigned long long)b->memory_limit);
    } else {
        snprintf(full, sizeof full, "Lua function call failed: %s", ppi_lua_error_text(L));
    }
    lua_settop(L, f.base);
    /* reported before leaving: once this call is out, the VM may close and its runtime
     * may go */
    report(b, call.quiet, full);
    vm_leave(b, &call);
    /* the caller's message: the error without the traceback */
    const char *text = ppi_error_textf("%s", full);
    char *tb = strstr(ppi_self()->error_text, "\nstack traceback:");
    if (tb) *tb = '\0';
    set_call_error(out_err, code, text);
}

/* The trampolines below mark the thread as inside the bundle's runtime for as long as
 * they touch anything it owns (ppi_enter_rt), so pp_runtime_close can wait for them. */

void ppi_lua_vm_call(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                     const void *args, void *out, CallArena *arena, AbiError *out_err) {
    lua_contract *c = loader_data.data;
    if (PP_UNLIKELY(!c)) {
        set_call_error(out_err, AbiErrorCode_InvalidPointer, "vm.call: loader_data is null");
        return;
    }
    ppi_record *r = ppi_my_record();
    if (PP_UNLIKELY(!r)) {
        set_call_error(out_err, AbiErrorCode_Generic, "vm.call: out of memory");
        return;
    }
    pp_runtime *prev = ppi_enter_rt(r, c->bundle->rt);
    call_in_vm(c, instance, fn_id, args, out, arena, out_err);
    ppi_leave_rt(r, prev);
}

/* ── instances ─────────────────────────────────────────────────────────────── */

static void create_in_vm(lua_contract *c, const HostApi *host,
                         GuestContractInstance *out_instance) {
    lua_bundle *b = c->bundle;
    ppi_thread *t = ppi_self();
    ppi_call call;
    uint32_t code = vm_enter(b, c, &call);
    if (code) {
        /* refused before any guest code ran: the reason is in the error text, and in
         * the runtime's last error for a caller of HostApi.create_guest_instance */
        t->last_code = code;
        ppi_set_last_error(b->rt, t->error_text);
        return;
    }
    char msg[2048];
    msg[0] = '\0';
    if (c->next_instance >= INT32_MAX) {
        code = AbiErrorCode_Generic;
        snprintf(msg, sizeof msg, "Lua create_instance: contract '%s' of bundle `%s` ran out "
                 "of instance ids", c->name, b->name);
    } else {
        lua_State *L = b->L;
        vm_frame f = frame_open(L, &call);
        uint64_t id = c->next_instance;
        push_helper(L, &call, STACK_MAKE_INSTANCE);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_pushnumber(L, (lua_Number)id);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->factory_ref);
        ppi_lua_push_pointer(L, host);
        ppi_lua_limits_begin(L, &call);
        int rc = lua_pcall(L, 4, 0, f.traceback);
        if (rc == LUA_ERRMEM) { /* as in call_in_vm: collected while still watched */
            lua_settop(L, f.base);
            ppi_lua_vm_collect(L);
            ppi_lua_vm_take_refused(L);
        }
        ppi_lua_limits_end(L, &call);
        if (rc == 0) {
            c->next_instance++;
            out_instance->data = (void *)(uintptr_t)id;
            out_instance->contract_id = c->contract_id;
            /* counted here, under the VM lock, unless the bundle was retired meanwhile:
             * its unload resets the counts right after retiring it */
            if (!atomic_load(&b->retired))
                ppi_registry_count_instance(&b->rt->reg, c->contract_id, 1);
        } else {
            code = call.tripped ? call.tripped
                   : rc == LUA_ERRMEM ? (uint32_t)PP_ABI_OUT_OF_MEMORY
                                      : (uint32_t)AbiErrorCode_Generic;
            snprintf(msg, sizeof msg, "Lua create_instance: factory call failed: %s",
                     call.tripped == PP_ABI_CALL_TIMEOUT     ? "timed out"
                     : call.tripped == PP_ABI_CALL_CANCELLED ? "cancelled"
                                                             : ppi_lua_error_text(L));
        }
        lua_settop(L, f.base);
    }
    if (msg[0]) {
        char *tb = strstr(msg, "\nstack traceback:");
        if (tb) *tb = '\0';
        report(b, call.quiet, msg);
    }
    vm_leave(b, &call);
    if (msg[0]) {
        t->last_code = code;
        ppi_error_textf("%s", msg);
    }
}

void ppi_lua_create_instance(VmLoaderData loader_data, const HostApi *host, const void *args,
                             GuestContractInstance *out_instance) {
    (void)args;
    if (!out_instance) return;
    out_instance->data = NULL;
    out_instance->contract_id = 0;
    lua_contract *c = loader_data.data;
    ppi_record *r = c ? ppi_my_record() : NULL;
    if (!r) return;
    pp_runtime *prev = ppi_enter_rt(r, c->bundle->rt);
    create_in_vm(c, host, out_instance);
    ppi_leave_rt(r, prev);
}

static void destroy_in_vm(lua_contract *c, GuestContractInstance instance) {
    lua_bundle *b = c->bundle;
    ppi_call call;
    uint32_t code = vm_enter(b, c, &call);
    if (code) {
        /* a retired contract's instances died with its VM; anything else is worth a
         * word, since the instance stays alive until its VM goes */
        if (code != AbiErrorCode_StaleHandle)
            ppi_logf(b->rt, LogLevel_Warn, "loader.lua", "destroy_instance of '%s' instance %llu "
                     "not done: %s", c->name, (unsigned long long)(uintptr_t)instance.data,
                     ppi_self()->error_text);
        return;
    }
    lua_State *L = b->L;
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
    lua_rawgeti(L, -1, (int)(uintptr_t)instance.data);
    bool present = !lua_isnil(L, -1);
    lua_pop(L, 1);
    /* clearing an existing key never allocates; an unknown id is left alone (setting
     * it to nil would insert a key, and an allocation here is unprotected) */
    if (present) {
        lua_pushnil(L);
        lua_rawseti(L, -2, (int)(uintptr_t)instance.data);
        ppi_registry_count_instance(&b->rt->reg, c->contract_id, -1);
    }
    lua_settop(L, base);
    vm_leave(b, &call);
}

void ppi_lua_destroy_instance(VmLoaderData loader_data, const HostApi *host,
                              GuestContractInstance instance) {
    (void)host;
    lua_contract *c = loader_data.data;
    if (!c || !instance.data || (uintptr_t)instance.data > INT32_MAX) return;
    ppi_record *r = ppi_my_record();
    if (!r) return;
    pp_runtime *prev = ppi_enter_rt(r, c->bundle->rt);
    destroy_in_vm(c, instance);
    ppi_leave_rt(r, prev);
}

VmCallFn ppi_lua_vm_call_fn(void) { return ppi_lua_vm_call; }

int64_t pp_function_count(const GuestContractInterface *iface) {
    if (!iface) return -1;
    if (iface->dispatch_type == DispatchType_Native) return iface->dispatch.native.function_count;
    if (iface->dispatch.vm.call != ppi_lua_vm_call || !iface->dispatch.vm.loader_data.data)
        return -1;
    const lua_contract *c = iface->dispatch.vm.loader_data.data;
    /* an atomic read, so no lock: callable from a callback inside a call */
    return atomic_load_explicit(&c->fn_count, memory_order_relaxed);
}
