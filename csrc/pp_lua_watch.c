/*
 * pp_lua_watch.c — call limits: one watchdog thread per process enforces deadlines
 * and cancel tokens.
 *
 * A limited call costs a few stores: it publishes (VM, deadline, cancel token) in its
 * thread's watch record.  No hook is armed while the call is within its limits, so
 * JIT-compiled code runs at full speed.  The watchdog ticks every millisecond while
 * any record is published, and when a deadline has passed or a token was cancelled it
 * arms the VM's count hook with a count of 1 — from its own thread, which is what
 * LUAJIT_ENABLE_CHECKHOOK is built for: compiled loops check the hook mask and leave
 * the trace.  The hook (on the VM's thread) marks the innermost call tripped, keeps
 * firing on every instruction so a guest pcall cannot swallow it, and raises.
 *
 * Safety of arming from another thread: the watchdog may only touch a lua_State while
 * a call is inside it (a VM is closed only when no call is).  A call unpublishes its
 * VM before it leaves, and the two sides synchronise like Dekker's algorithm:
 *
 *     call end:  store rec->vm = NULL   (seq_cst); then wait while rec->arming
 *     watchdog:  store rec->arming = 1  (seq_cst); then arm only if rec->vm is unchanged
 *
 * so either the watchdog sees the VM gone, or the call waits until arming is done.
 *
 * Records are allocated once per thread that makes a limited call, linked into a
 * push-only list, and reused by later threads (never freed), so the watchdog can walk
 * them without a lock.  The watchdog sleeps on a futex when no record is published
 * (`sleeping`, the same Dekker pattern against a call publishing).
 */
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"
#include "pp_lua_internal.h"
#include "pp_lua_jit.h"

enum {
    HOOK_BURST = 1,       /* once tripped, the hook fires on every instruction */
    TICK_NS = 1000000,    /* the watchdog's period while calls are limited */
    IDLE_TICKS = 200      /* quiet ticks before it sleeps */
};

static _Atomic uint32_t g_sleeping; /* futex word: 1 while the watchdog sleeps */
static pthread_once_t g_started = PTHREAD_ONCE_INIT;
static bool g_running;

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void limit_hook(lua_State *L, lua_Debug *ar);

/* Arm `w`'s VM if its deadline passed or its token was cancelled. */
static void check_record(ppi_record *w, long long now) {
    lua_State *L = atomic_load(&w->vm);
    if (!L) return;
    long long deadline = atomic_load_explicit(&w->deadline, memory_order_relaxed);
    pp_cancel *cancel = atomic_load_explicit(&w->cancel, memory_order_relaxed);
    if (!((deadline && now >= deadline) || pp_cancel_requested(cancel))) return;
    atomic_store(&w->arming, 1);
    if (atomic_load(&w->vm) == L) {
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_BURST);
        /* inside a __gc finalizer (or lua_close) LuaJIT marks hooks active so they do
         * not fire; past the deadline they must */
        ppi_lua_unblock_hooks(L);
    }
    atomic_store(&w->arming, 0);
}

static void *watchdog_main(void *arg) {
    (void)arg;
    unsigned quiet = 0;
    for (;;) {
        bool active = false;
        long long now = ppi_now_ns();
        for (ppi_record *w = ppi_records(); w; w = w->next) {
            if (!atomic_load_explicit(&w->vm, memory_order_relaxed)) continue;
            active = true;
            check_record(w, now);
        }
        quiet = active ? 0 : quiet + 1;
        if (quiet >= IDLE_TICKS) {
            /* going to sleep: announce it, then look once more (a call publishing
             * now either is seen here or sees `sleeping` and wakes us) */
            atomic_store(&g_sleeping, 1);
            bool any = false;
            for (ppi_record *w = ppi_records(); w && !any; w = w->next)
                any = atomic_load(&w->vm) != NULL;
            if (!any) futex_wait(&g_sleeping, 1);
            atomic_store(&g_sleeping, 0);
            quiet = 0;
            continue;
        }
        struct timespec ts = {0, TICK_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void start_watchdog(void) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t th;
    g_running = pthread_create(&th, &attr, watchdog_main, NULL) == 0;
    pthread_attr_destroy(&attr);
}

/* This thread's record, with the watchdog running (NULL if it could not start). */
static ppi_record *my_record(void) {
    pthread_once(&g_started, start_watchdog);
    return g_running ? ppi_my_record() : NULL;
}

/* ── the hook and the per-call limits ──────────────────────────────────────── */

/* Runs on the VM's thread; the thread's innermost call is the one in this VM. */
static void limit_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    /* inside a jit.profile callback or a jit.attach handler an error is fatal (the
     * profiler exits the process): stay armed, and raise once it has returned */
    if (PP_UNLIKELY(ppi_lua_in_vmevent(L))) return;
    ppi_call *call = ppi_self()->call;
    if (!call || !call->limited) {
        lua_sethook(L, NULL, 0, 0); /* a stale arming: nothing to stop */
        return;
    }
    if (!call->tripped) {
        if (call->cancel && pp_cancel_requested(call->cancel))
            call->tripped = PP_ABI_CALL_CANCELLED;
        else if (call->deadline_ns && ppi_now_ns() >= call->deadline_ns)
            call->tripped = PP_ABI_CALL_TIMEOUT;
        else {
            /* armed for an earlier call (a stale arming): stop firing; without a
             * watchdog the periodic hook stays */
            if (g_running) lua_sethook(L, NULL, 0, 0);
            return;
        }
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_BURST);
    }
    /* raising from a hook leaves the "hook active" mark set, and an xpcall message
     * handler would then run unhookable: clear it, as a hook that returns would */
    ppi_lua_hook_leave(L);
    luaL_error(L, "%s", call->tripped == PP_ABI_CALL_TIMEOUT ? "call timed out"
                                                              : "call cancelled");
}

static void publish(ppi_record *w, lua_State *L, long long deadline, pp_cancel *cancel) {
    atomic_store_explicit(&w->deadline, deadline, memory_order_relaxed);
    atomic_store_explicit(&w->cancel, cancel, memory_order_relaxed);
    atomic_store(&w->vm, L); /* seq_cst: pairs with `sleeping` and `arming` */
    if (PP_UNLIKELY(L && atomic_load(&g_sleeping))) {
        atomic_store(&g_sleeping, 0);
        futex_wake(&g_sleeping);
    }
}

void ppi_lua_limits_begin(lua_State *L, ppi_call *call) {
    if (PP_LIKELY(!call->deadline_ns && !call->cancel)) return;
    ppi_record *w = my_record();
    if (!w) { /* no watchdog: check on a count hook instead (slower, still correct) */
        call->limited = true;
        call->saved_vm = NULL;
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, 1000);
        return;
    }
    call->saved_vm = atomic_load_explicit(&w->vm, memory_order_relaxed);
    call->saved_deadline = atomic_load_explicit(&w->deadline, memory_order_relaxed);
    call->saved_cancel = atomic_load_explicit(&w->cancel, memory_order_relaxed);
    call->limited = true;
    publish(w, L, call->deadline_ns, call->cancel);
    /* a limit that has already passed (a nested call inheriting an expired deadline,
     * a token cancelled in between) is checked at once; a call's own deadline was
     * just set in the future (the watchdog sees it pass) */
    if (call->tripped || pp_cancel_requested(call->cancel) ||
        (call->deadline_ns && !call->timeout_ns && ppi_now_ns() >= call->deadline_ns))
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_BURST);
}

void ppi_lua_limits_release(ppi_call *call) {
    if (!call->limited) return;
    call->limited = false;
    ppi_record *w = ppi_self()->record;
    if (!w) return;
    atomic_store(&w->vm, NULL);
    while (atomic_load(&w->arming)) sched_yield();
    /* the enclosing limited call, if any, is watched again */
    if (call->saved_vm) publish(w, call->saved_vm, call->saved_deadline, call->saved_cancel);
}

void ppi_lua_limits_end(lua_State *L, ppi_call *call) {
    if (PP_LIKELY(!call->limited)) return;
    ppi_lua_limits_release(call);
    /* an enclosing call in the same VM that already tripped keeps its hook */
    const ppi_call *outer = call->outer;
    if (outer && call->vm && outer->vm == call->vm && outer->tripped)
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_BURST);
    else if (lua_gethook(L))
        lua_sethook(L, NULL, 0, 0);
}
