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
 *   3. Lua is entered only through a protected call with the traceback handler
 *      (lua_pcall, or vm.call's direct frame: pp_lua_jit.c); the outermost call finds
 *      the handler at stack index 1, a nested call above the guest's frame
 *      (vm_frame).  A lua_error never unwinds a C frame that owns anything.
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

static void set_call_error(AbiError *out_err, uint32_t code, const char *msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = msg ? ppi_view(msg) : (StringView){NULL, 0};
}

/* Where a trampoline's Lua work sits on the stack: `base` is the top to return to,
 * `traceback` the index of the message handler, `arena_alloc` that of the
 * arena_alloc closure. */
typedef struct vm_frame {
    int base, traceback, arena_alloc;
} vm_frame;

/* A nested call's frame: above the running guest's frame (a C call it made through
 * the FFI: LuaJIT keeps LUA_MINSTACK free slots for it, more than a trampoline
 * pushes), with the helpers it needs pushed from the registry. */
static PP_NOINLINE vm_frame nested_frame(lua_State *L, bool arena_alloc) {
    int base = lua_gettop(L);
    ppi_lua_push_helper(L, STACK_TRACEBACK);
    if (arena_alloc) ppi_lua_push_helper(L, STACK_ARENA_ALLOC);
    return (vm_frame){base, base + 1, arena_alloc ? base + 2 : 0};
}

static inline vm_frame frame_open(lua_State *L, const ppi_call *call, bool arena_alloc) {
    if (PP_LIKELY(!call->nested)) return (vm_frame){STACK_BASE, STACK_TRACEBACK, STACK_ARENA_ALLOC};
    return nested_frame(L, arena_alloc);
}

static void push_helper(lua_State *L, const ppi_call *call, int slot) {
    if (PP_LIKELY(!call->nested))
        lua_pushvalue(L, slot);
    else
        ppi_lua_push_helper(L, slot);
}

/* ── the thread's call stack ───────────────────────────────────────────────── */

/* A call inside a call that has limits: its own limit, or what is left of the
 * enclosing call's when that ends sooner; the enclosing call's cancel token unless it
 * has its own. */
static PP_NOINLINE void inherit_limits(ppi_call *call, ppi_call *outer) {
    if (call->timeout_ns) call->deadline_ns = ppi_deadline_after(call->timeout_ns);
    if (outer->deadline_ns) {
        long long od = ppi_lua_deadline(outer);
        if (call->deadline_ns == 0 || od < call->deadline_ns) {
            call->deadline_ns = od;
            call->timeout_ns = 0;
        }
    }
    if (!call->cancel) call->cancel = outer->cancel;
}

static inline void call_push(ppi_thread *t, ppi_call *call, pp_runtime *rt, const void *vm,
                             const void *contract, uint64_t timeout_ns, pp_cancel *cancel) {
    ppi_call *outer = t->call;
    call->outer = outer;
    call->rt = rt;
    call->vm = vm;
    call->contract = contract;
    call->deadline_ns = 0;
    call->timeout_ns = timeout_ns;
    call->cancel = cancel;
    call->tripped = 0;
    call->limited = 0;
    call->quiet = false;
    call->nested = false;
    call->watch_mark = 0;
    if (PP_UNLIKELY(outer && (outer->deadline_ns || outer->cancel)))
        inherit_limits(call, outer);
    else if (PP_UNLIKELY(timeout_ns))
        call->deadline_ns = timeout_ns >= PPI_LAZY_DEADLINE_NS
                                ? PPI_DEADLINE_PENDING /* no clock read (pp_lua_watch.c) */
                                : ppi_deadline_after(timeout_ns);
    t->call = call;
}

static inline void call_pop(ppi_thread *t, ppi_call *call) {
    t->call = call->outer;
    /* the outermost call is over: deliver what was logged too deep in its stack */
    if (PP_UNLIKELY(!call->outer && t->deferred)) ppi_log_flush_deferred();
}

void ppi_lua_call_push(ppi_call *call, pp_runtime *rt, const void *vm, const void *contract,
                       uint64_t timeout_ns, pp_cancel *cancel) {
    call_push(ppi_self(), call, rt, vm, contract, timeout_ns, cancel);
}

void ppi_lua_call_pop(ppi_call *call) { call_pop(ppi_self(), call); }

/* ── entering and leaving a VM ─────────────────────────────────────────────── */

/*
 * Retiring.  A retired VM is closed by whoever is last out of it, holding no lock of it.
 * The retiring thread and a thread releasing the VM lock hand over like this:
 *
 *     retire:   retired = true; heavy fence; try-lock -> close
 *     release:  held = 0; light fence; if retired: try-lock -> close
 *
 * By the argument of "Asymmetric fences" (pp_internal.h), either the releaser sees
 * `retired`, or its release is visible to the retirer's try-lock; whoever wins the
 * try-lock closes the VM (after detaching it under the lock, so only one does), and
 * whoever loses it is covered by the winner, or by a later holder that releases
 * after the fence and therefore sees `retired`.
 */
void ppi_lua_reap(lua_bundle *b) {
    if (!ppi_lock_try(&b->lock, ppi_thread_tag())) return;
    lua_State *L = b->L;
    b->L = NULL;
    ppi_lock_release(&b->lock);
    if (L) ppi_lua_vm_close(b->rt, L); /* no lock of this VM held; finalizers bounded */
}

void ppi_lua_retire(lua_bundle *b) {
    atomic_store(&b->retired, true);
    ppi_fence_heavy();
    ppi_lua_reap(b);
}

/* How often a call with a cancel token that waits for a VM lock looks at its token. */
#define CANCEL_POLL_NS 5000000LL

/* Wait for `l` until `deadline` (< 0: none) unless `cancel` is set meanwhile: bounded
 * sleeps, the token read between them.  True once the lock is ours. */
static bool acquire_cancellable(ppi_lock *l, long long deadline, pp_cancel *cancel) {
    for (bool first = true;; first = false) {
        long long end = ppi_now_ns() + CANCEL_POLL_NS;
        if (deadline >= 0 && deadline < end) end = deadline;
        if (first ? ppi_lock_acquire_until(l, end) : ppi_lock_sleep_until(l, end)) return true;
        if (pp_cancel_requested(cancel)) return false;
        if (deadline >= 0 && ppi_now_ns() >= deadline) return false;
    }
}

/* How often a wait in a fork() child looks at who holds the lock. */
#define FORK_POLL_NS 100000000LL

/* acquire_cancellable for the child of a fork() with orphans (ppi_fork_orphans): the
 * same wait, except that it gives up (*orphaned) once the lock has been held for
 * PPI_NESTED_WAIT_NS by a thread that was not copied (ppi_fork_orphan_owner).  A holder
 * living in this process is waited for as long as the call may wait. */
static bool acquire_in_fork_child(ppi_lock *l, long long deadline, pp_cancel *cancel,
                                  bool *orphaned) {
    long long give_up = ppi_now_ns() + (long long)PPI_NESTED_WAIT_NS;
    for (bool first = true;; first = false) {
        long long now = ppi_now_ns();
        long long end = now + (cancel ? CANCEL_POLL_NS : FORK_POLL_NS);
        if (deadline >= 0 && deadline < end) end = deadline;
        if (give_up < end) end = give_up;
        if (first ? ppi_lock_acquire_until(l, end) : ppi_lock_sleep_until(l, end)) return true;
        if (cancel && pp_cancel_requested(cancel)) return false;
        now = ppi_now_ns();
        if (deadline >= 0 && now >= deadline) return false;
        if (!ppi_fork_orphan_owner(atomic_load_explicit(&l->owner, memory_order_relaxed)))
            give_up = now + (long long)PPI_NESTED_WAIT_NS;
        else if (now >= give_up) {
            *orphaned = true;
            return false;
        }
    }
}

/* Wait for b's VM lock for `call`, which cannot simply wait: it has a deadline or a
 * cancel token, or this thread holds another lock, or this is a fork() child with
 * orphans.  0 once the lock is ours; else PP_ABI_CALL_TIMEOUT or PP_ABI_CALL_CANCELLED
 * (text in the thread's error buffer). */
static PP_NOINLINE uint32_t acquire_vm_bounded(lua_bundle *b, ppi_call *call, ppi_thread *t,
                                               uintptr_t me) {
    bool outermost = t->vm_locks == 0 && t->ops_held == 0;
    long long deadline = call->deadline_ns ? ppi_lua_deadline(call) : -1; /* -1: none */
    long long now = ppi_now_ns();
    bool nested_bound =
        !outermost && (deadline < 0 || deadline - now > (long long)PPI_NESTED_WAIT_NS);
    if (nested_bound) deadline = now + (long long)PPI_NESTED_WAIT_NS;
    /* in a fork child the holder may be a thread that was not copied: never ends */
    bool forked = !nested_bound && atomic_load_explicit(&ppi_fork_orphans, memory_order_relaxed);
    bool fork_bound = false;
    /* without a time limit only an outermost call with a token gets here (or one in a
     * fork child): its token ends the wait (the holder may run for as long as its own
     * limits let it) */
    if (forked ? acquire_in_fork_child(&b->lock, deadline, call->cancel, &fork_bound)
        : call->cancel ? acquire_cancellable(&b->lock, deadline, call->cancel)
                       : ppi_lock_acquire_until(&b->lock, deadline)) {
        atomic_store_explicit(&b->lock.owner, me, memory_order_relaxed);
        return 0;
    }
    if (call->cancel && pp_cancel_requested(call->cancel)) {
        ppi_error_textf("Lua function call cancelled while it waited for bundle `%s` (another "
                        "call was running in it)",
                        b->name);
        return PP_ABI_CALL_CANCELLED;
    }
    if (nested_bound)
        ppi_error_textf("gave up after %.3f s waiting for bundle `%s`: this thread already holds "
                        "another bundle or a load in progress, and waiting longer could "
                        "deadlock (bundles calling each other from several threads)",
                        (double)PPI_NESTED_WAIT_NS / 1e9, b->name);
    else if (fork_bound)
        ppi_error_textf("gave up after %.3f s waiting for bundle `%s`: this process is a fork() "
                        "child, and the call holding the bundle was running on a thread of the "
                        "parent that does not exist here (such a call never ends)",
                        (double)PPI_NESTED_WAIT_NS / 1e9, b->name);
    else
        ppi_error_textf("call timed out waiting for bundle `%s`: another call was running in "
                        "it until the deadline",
                        b->name);
    return PP_ABI_CALL_TIMEOUT;
}

/* The wait of an outermost call without limits, after its first try failed: as long as
 * it takes, except in a fork() child, where the holder may never come back. */
static PP_NOINLINE uint32_t acquire_vm_unlimited(lua_bundle *b, ppi_call *call, ppi_thread *t,
                                                 uintptr_t me) {
    if (PP_UNLIKELY(atomic_load_explicit(&ppi_fork_orphans, memory_order_relaxed)))
        return acquire_vm_bounded(b, call, t, me);
    ppi_lock_acquire_slow(&b->lock);
    atomic_store_explicit(&b->lock.owner, me, memory_order_relaxed);
    return 0;
}

/* b's VM lock carries this thread's tag: is that this thread's own call further out?
 * Always, except in a fork() child, where a new thread may get the stack, and so the
 * thread tag, of a thread of the parent that was not copied (glibc reuses it at once;
 * a C host's static TLS sits on it): a lock that thread held is not this one's, and
 * entering as a nested call would run the VM in the middle of that dead call. */
static PP_COLD bool holds_vm_lock(const ppi_thread *t, const lua_bundle *b) {
    if (!atomic_load_explicit(&ppi_fork_orphans, memory_order_relaxed)) return true;
    for (const ppi_call *o = t->call; o; o = o->outer)
        if (o->vm == b) return true;
    return false;
}

/* Why vm_enter refused before taking the lock (text in the thread's error buffer). */
enum { NOT_MINE = -1, REFUSE_REENTRY = 1, REFUSE_TRACE, REFUSE_CSTACK, REFUSE_CANCELLED,
       REFUSE_STALE, REFUSE_GONE };

/* b's VM lock carries this thread's tag, so this thread is running a call in b further
 * out.  0 if contract `c` may run nested there, else why not: the same contract (or an
 * init of the bundle) is running further out, or the VM is inside a compiled trace;
 * NOT_MINE if the tag is a dead thread's (holds_vm_lock). */
static PP_COLD int nested_refusal(const ppi_thread *t, lua_bundle *b, const lua_contract *c) {
    if (!holds_vm_lock(t, b)) return NOT_MINE;
    for (const ppi_call *o = t->call; o; o = o->outer)
        if (o->vm == b && (o->contract == c || !o->contract)) return REFUSE_REENTRY;
    return ppi_lua_in_trace(b->L) ? REFUSE_TRACE : 0;
}

static PP_COLD uint32_t refuse(ppi_thread *t, lua_bundle *b, lua_contract *c, ppi_call *call,
                               int why) {
    const char *contract = c ? c->name : "";
    uint32_t code = AbiErrorCode_Generic;
    switch (why) {
    case REFUSE_REENTRY:
        ppi_error_textf("reentrant call refused: this thread is already running "
                        "contract '%s' of bundle `%s`",
                        contract, b->name);
        return AbiErrorCode_ReentrantCall;
    case REFUSE_TRACE:
        ppi_error_textf("reentrant call refused: contract '%s' of bundle `%s` was called "
                        "from JIT-compiled code of the same bundle, which LuaJIT cannot "
                        "re-enter; call it from a function the JIT leaves alone "
                        "(jit.off(fn))",
                        contract, b->name);
        return AbiErrorCode_ReentrantCall;
    case REFUSE_CSTACK: {
        size_t left = ppi_cstack_left();
        ppi_error_textf("C stack overflow: %zu KiB of this thread's stack left, and entering "
                        "bundle `%s` needs %u KiB (calls nested too deeply, or a thread with "
                        "a small stack)",
                        left / 1024, b->name, PPI_CSTACK_RESERVE / 1024);
        return AbiErrorCode_Generic;
    }
    case REFUSE_CANCELLED:
        ppi_error_textf("Lua function call cancelled before it started (bundle `%s`, "
                        "contract '%s')",
                        b->name, contract);
        code = PP_ABI_CALL_CANCELLED;
        break;
    case REFUSE_GONE:
    case REFUSE_STALE:
        t->vm_locks--;
        if (!call->nested) ppi_lua_release(b);
        ppi_error_textf(why == REFUSE_GONE ? "contract '%s': bundle `%s` was unloaded; its "
                                             "interface pointer is stale"
                                           : "contract '%s' of bundle `%s` was removed by a "
                                             "reload; resolve its handle again",
                        contract, b->name);
        code = AbiErrorCode_StaleHandle;
        break;
    default:
        break;
    }
    call_pop(t, call);
    return code;
}

/* Enter b's VM for contract `c` (NULL: any) on thread `t`.  0 on success (`call`
 * pushed, VM lock held, by this call or, for a nested call, further out); else an
 * AbiError code with the thread's error text set. */
static PP_ALWAYS_INLINE uint32_t vm_enter(ppi_thread *t, lua_bundle *b, lua_contract *c,
                                          ppi_call *call) {
    uintptr_t me = ppi_thread_tag();
    bool nested = false;
    if (PP_UNLIKELY(ppi_lock_mine(&b->lock, me))) {
        int why = nested_refusal(t, b, c);
        if (why > 0) return refuse(t, b, c, call, why);
        nested = why == 0; /* NOT_MINE: a dead thread's tag, not this thread's lock */
    }
    if (PP_UNLIKELY(ppi_cstack_left() < PPI_CSTACK_RESERVE))
        return refuse(t, b, c, call, REFUSE_CSTACK);
    uint64_t timeout = t->next_timeout_ns ? t->next_timeout_ns : b->call_timeout_ns;
    call_push(t, call, b->rt, b, c, timeout, t->next_cancel);
    call->quiet = t->quiet_next;
    call->nested = nested;
    t->quiet_next = false;
    if (PP_UNLIKELY(call->cancel && pp_cancel_requested(call->cancel)))
        return refuse(t, b, c, call, REFUSE_CANCELLED);
    if (PP_UNLIKELY(nested)) {
        /* the VM lock is this thread's already: nothing to take */
    } else if (PP_LIKELY((t->vm_locks | t->ops_held) == 0 && call->deadline_ns == 0 &&
                         !call->cancel)) {
        /* an outermost call without limits waits as long as it takes (but for a fork
         * child's: acquire_vm_bounded) */
        if (PP_UNLIKELY(!ppi_lock_try_acquire(&b->lock, me))) {
            uint32_t code = acquire_vm_unlimited(b, call, t, me);
            if (code) {
                call_pop(t, call);
                return code;
            }
        }
    } else if (PP_UNLIKELY(!ppi_lock_try(&b->lock, me))) {
        uint32_t code = acquire_vm_bounded(b, call, t, me);
        if (code) {
            call_pop(t, call);
            return code;
        }
    }
    t->vm_locks++;
    if (PP_UNLIKELY(!b->L || atomic_load_explicit(&b->retired, memory_order_relaxed)))
        return refuse(t, b, c, call, REFUSE_GONE);
    if (PP_UNLIKELY(c && c->retired)) return refuse(t, b, c, call, REFUSE_STALE);
    return 0;
}

static PP_ALWAYS_INLINE void vm_leave(ppi_thread *t, lua_bundle *b, ppi_call *call) {
    t->vm_locks--;
    bool nested = call->nested;
    call_pop(t, call);
    if (PP_LIKELY(!nested)) ppi_lua_release(b); /* a nested call holds no lock of its own */
}

/* Report a failure that was formatted into `text`: last error, then the log (Debug
 * when the caller receives it as a value). */
static void report(lua_bundle *b, bool quiet, const char *text) {
    ppi_set_last_error(b->rt, text);
    ppi_log_emit(&b->rt->log, quiet ? LogLevel_Debug : LogLevel_Error, ppi_view("loader.lua"),
                 ppi_view(text));
}

/* ── vm.call ───────────────────────────────────────────────────────────────── */

/* vm.call's pcall through the public API (when the direct frame cannot be built: the
 * stack must grow).  Same results as ppi_lua_pcall_vm_call. */
static PP_NOINLINE int pcall_by_api(lua_State *L, lua_contract *c, uint32_t fn_id, int key,
                                    const void *args, void *out, CallArena *arena,
                                    const vm_frame *f) {
    if (!lua_checkstack(L, 8)) return LUA_ERRMEM;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_refs[fn_id]);
    if (key) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_rawgeti(L, -1, key);
        lua_remove(L, -2);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->default_ref);
    }
    if (key && lua_isnil(L, -1)) {
        lua_settop(L, f->base);
        return PPI_PCALL_NO_INSTANCE;
    }
    ppi_lua_push_pointer(L, args);
    ppi_lua_push_pointer(L, out);
    ppi_lua_push_pointer(L, arena);
    lua_pushvalue(L, f->arena_alloc);
    return lua_pcall(L, 5, 0, f->traceback);
}

/* The error path of a call: copy the text out of the VM, report it, leave the VM. */
static PP_COLD void call_failed(ppi_thread *t, lua_bundle *b, lua_contract *c, ppi_call *call,
                                uint32_t fn_id, int rc, int base, AbiError *out_err) {
    lua_State *L = b->L;
    char full[4096];
    uint32_t code = AbiErrorCode_Generic;
    if (call->tripped == PP_ABI_CALL_TIMEOUT) {
        code = PP_ABI_CALL_TIMEOUT;
        if (call->timeout_ns)
            snprintf(full, sizeof full,
                     "Lua function call timed out after %.3f s (bundle `%s`, contract '%s', "
                     "fn %u)",
                     (double)call->timeout_ns / 1e9, b->name, c->name, fn_id);
        else
            snprintf(full, sizeof full,
                     "Lua function call timed out: the enclosing call's time limit ran out "
                     "(bundle `%s`, contract '%s', fn %u)",
                     b->name, c->name, fn_id);
    } else if (call->tripped == PP_ABI_CALL_CANCELLED) {
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
    lua_settop(L, base);
    /* reported before leaving: once this call is out, the VM may close and its runtime
     * may go */
    report(b, call->quiet, full);
    vm_leave(t, b, call);
    /* the caller's message: the error without the traceback */
    const char *text = ppi_error_textf("%s", full);
    char *tb = strstr(t->error_text, "\nstack traceback:");
    if (tb) *tb = '\0';
    set_call_error(out_err, code, text);
}

/* The trampolines below mark the thread as inside the bundle's runtime for as long as
 * they touch anything it owns (ppi_enter_rt), so pp_runtime_close can wait for them.
 * vm.call is the hot one: everything on its success path is inlined here, the rest
 * is out of line. */

void ppi_lua_vm_call(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                     const void *args, void *out, CallArena *arena, AbiError *out_err) {
    lua_contract *c = loader_data.data;
    if (PP_UNLIKELY(!c)) {
        set_call_error(out_err, AbiErrorCode_InvalidPointer, "vm.call: loader_data is null");
        return;
    }
    ppi_thread *t = ppi_self();
    ppi_record *r = t->record;
    if (PP_UNLIKELY(!r) && !(r = ppi_record_attach(t))) {
        set_call_error(out_err, AbiErrorCode_Generic, "vm.call: out of memory");
        return;
    }
    lua_bundle *b = c->bundle;
    pp_runtime *prev = ppi_enter_rt(r, b->rt);
    ppi_call call;
    uint32_t code = vm_enter(t, b, c, &call);
    if (PP_UNLIKELY(code)) {
        set_call_error(out_err, code, t->error_text);
        goto out;
    }
    lua_State *L = b->L;
    vm_frame f = frame_open(L, &call, true);
    if (PP_UNLIKELY(fn_id >= atomic_load_explicit(&c->fn_count, memory_order_relaxed) ||
                    (uintptr_t)instance.data > INT32_MAX))
        goto not_available;
    int key = (int)(uintptr_t)instance.data;
    ppi_lua_limits_begin(L, &call);
    int rc;
#ifdef PP_DEBUG_LOCKS
    /* debug builds take the public-API path every fourth call, so it stays tested */
    static _Atomic unsigned api_turn;
    if (atomic_fetch_add_explicit(&api_turn, 1, memory_order_relaxed) % 4 == 0)
        rc = PPI_PCALL_BY_API;
    else
#endif
        rc = ppi_lua_pcall_vm_call(L, c->fn_refs[fn_id], key ? c->instances_ref : c->default_ref,
                                   key, args, out, arena, f.arena_alloc, f.traceback);
    if (PP_UNLIKELY(rc == PPI_PCALL_BY_API))
        rc = pcall_by_api(L, c, fn_id, key, args, out, arena, &f);
    if (PP_UNLIKELY(rc == PPI_PCALL_NO_INSTANCE)) {
        ppi_lua_limits_end(L, &call);
        goto not_available;
    }
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
    if (PP_UNLIKELY(rc != 0)) {
        call_failed(t, b, c, &call, fn_id, rc, f.base, out_err);
        goto out;
    }
    if (PP_UNLIKELY(call.nested)) lua_settop(L, f.base);
    vm_leave(t, b, &call);
    set_call_error(out_err, AbiErrorCode_Ok, NULL);
    goto out;
not_available:
    lua_settop(L, f.base);
    vm_leave(t, b, &call);
    set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
out:
    ppi_leave_rt(r, prev);
}

/* ── instances ─────────────────────────────────────────────────────────────── */

static void create_in_vm(lua_contract *c, const HostApi *host,
                         GuestContractInstance *out_instance) {
    lua_bundle *b = c->bundle;
    ppi_thread *t = ppi_self();
    ppi_call call;
    uint32_t code = vm_enter(t, b, c, &call);
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
        vm_frame f = frame_open(L, &call, false);
        uint64_t id = c->next_instance;
        push_helper(L, &call, STACK_MAKE_INSTANCE);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_pushnumber(L, (lua_Number)id);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->factory_ref);
        ppi_lua_push_pointer(L, host);
        ppi_lua_limits_begin(L, &call);
        int rc = lua_pcall(L, 4, 0, f.traceback);
        if (rc == LUA_ERRMEM) { /* as in vm.call: collected while still watched */
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
            ppi_registry_count_instance_unless(&b->rt->reg, c->contract_id, 1, &b->retired);
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
    vm_leave(t, b, &call);
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
    ppi_thread *t = ppi_self();
    ppi_call call;
    uint32_t code = vm_enter(t, b, c, &call);
    if (code) {
        /* a retired contract's instances died with its VM; anything else is worth a
         * word, since the instance stays alive until its VM goes */
        if (code != AbiErrorCode_StaleHandle)
            ppi_logf(b->rt, LogLevel_Warn, "loader.lua", "destroy_instance of '%s' instance %llu "
                     "not done: %s", c->name, (unsigned long long)(uintptr_t)instance.data,
                     t->error_text);
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
    vm_leave(t, b, &call);
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
