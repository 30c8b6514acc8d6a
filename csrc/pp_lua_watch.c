/*
 * pp_lua_watch.c — call limits: one watchdog thread per process enforces deadlines
 * and cancel tokens.
 *
 * A limited call costs a few plain stores: it writes (VM, deadline, cancel token) into
 * its thread's watch record, and a long limit reads no clock (4. below).  No hook is armed while the call is within its limits, so
 * JIT-compiled code runs at full speed.  The watchdog ticks every millisecond while
 * any record has a deadline or a token, and when a deadline has passed or a token was
 * cancelled it arms the VM's count hook with a count of 1 — from its own thread, which
 * is what LUAJIT_ENABLE_CHECKHOOK is built for: compiled loops check the hook mask and
 * leave the trace.  The hook (on the VM's thread) marks the innermost call tripped,
 * keeps firing on every instruction so a guest pcall cannot swallow it, and raises.
 *
 * The record stays published between calls: when a call ends, its thread clears the
 * deadline (and restores the enclosing limited call's values, if any) with plain
 * stores, and leaves `vm` naming the VM it was in.  Three things keep that safe, each
 * a handshake where the frequent side is cheap and the rare side pays:
 *
 *   1. VM lifetime.  The watchdog may touch a lua_State only while it is not freed.
 *      Invariant: a record names only VMs that are not freed.  A thread writes a VM
 *      into its record only while it runs a call inside that VM (or restores the VM
 *      of an enclosing call it is still inside), so no record gains a VM that is
 *      being closed; and closing a VM (ppi_lua_watch_forget, from the final free of
 *      lua_close) clears every record that names it, then waits while the watchdog
 *      is arming:
 *
 *          close:     cas(rec->vm, L -> NULL) for every record;  wait while arming
 *          watchdog:  arming = 1;  L = rec->vm;  arm L if not NULL;  arming = 0
 *
 *      (all sequentially consistent: either the watchdog's read of rec->vm comes
 *      after the close's compare-and-swap and sees NULL or a VM that is alive, or
 *      the close sees `arming` set and waits until the hook is set).  Closing is rare;
 *      calls pay nothing for it.
 *   2. Stale armings.  The watchdog may read a deadline just before the call that
 *      published it clears it, and arm the hook after that call ended — on an idle VM,
 *      or under another thread's call.  limit_hook handles it: a hook that fires in a
 *      call that is not limited, or whose limits have not run out, removes itself.  So
 *      the common limited call (outermost, a pending deadline, no token: inline in
 *      pp_lua_internal.h) does not even look for a hook when it ends.
 *      Every lua_sethook of this file runs under the hook lock (g_hook_lock), so the
 *      watchdog's arming and a thread's own hook changes never interleave field by
 *      field; it is held only around lua_sethook, never while waiting for anything.
 *   3. Cancel tokens.  A token belongs to the caller, who may free it the moment its
 *      call returns, so the watchdog must not read a token after its call ended.  This
 *      is the one per-call handshake left, paid only by calls with a token:
 *
 *          call end:  rec->cancel = <enclosing call's token or NULL>;  wait while
 *                     rec->pinning
 *          watchdog:  rec->pinning = 1;  read the token only if rec->cancel still
 *                     holds it;  rec->pinning = 0
 *
 *   4. Clock reads.  A call whose own limit is PPI_LAZY_DEADLINE_NS (0.1 s) or more
 *      reads no clock (CLOCK_MONOTONIC costs 25-60 ns on a VM, more than the rest of
 *      a limited call): it publishes a pending deadline, a negative mark unique in its
 *      record, and the watchdog, the first time it sees the mark, replaces it with its
 *      own `now` + the limit (compare-and-swap, so a mark the owner has moved past
 *      stays gone).  The limit thus starts about one tick (1 ms, or the wake-up of a
 *      sleeping watchdog) after the call did: never early, late by about 1% for a
 *      0.1 s limit and 0.1% for a 1 s one.  The thread fixes the deadline itself, by
 *      the same compare-and-swap, only when it needs the value: a nested call
 *      inheriting it, a wait for the VM lock, or the hook deciding whether the call
 *      is out of time (ppi_lua_deadline).
 *
 * The watchdog sleeps on a futex when no record has a deadline or a token.  Going to
 * sleep it announces `sleeping`, then looks at the records once more; a call that
 * publishes a deadline or a token looks at `sleeping` afterwards and wakes it.  That
 * is a store-then-load on both sides: the call uses the light fence, the watchdog the
 * heavy one (pp_internal.h, "Asymmetric fences"), so a publishing call pays no locked
 * instruction.
 *
 * Records are allocated once per thread, linked into a push-only list and reused by
 * later threads (never freed), so the watchdog walks them without a lock.
 */
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

_Atomic uint32_t ppi_watch_sleeping; /* futex word: 1 while the watchdog sleeps */
_Atomic bool ppi_watch_running;      /* the watchdog thread is running */
static _Atomic uint32_t g_arming;   /* 1 while the watchdog arms a VM it read from a record */
static _Atomic uint32_t g_hook_lock;
static pthread_once_t g_started = PTHREAD_ONCE_INIT;
static _Atomic bool g_ready; /* g_started has run */
static bool g_running;

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wait (yielding) while *flag is set: the other side holds it for a few instructions
 * and never waits while it does. */
static void wait_clear(_Atomic uint32_t *flag) {
    while (atomic_load(flag)) sched_yield();
}

static void limit_hook(lua_State *L, lua_Debug *ar);

/* lua_sethook under the hook lock: `on` arms the limit hook, else removes any hook. */
static void set_hook(lua_State *L, bool on, int count) {
    while (atomic_exchange_explicit(&g_hook_lock, 1, memory_order_acquire)) sched_yield();
    if (on)
        lua_sethook(L, limit_hook, LUA_MASKCOUNT, count);
    else
        lua_sethook(L, NULL, 0, 0);
    atomic_store_explicit(&g_hook_lock, 0, memory_order_release);
}

/* Has `w`'s token been cancelled?  Reads the token only while it is pinned (3.). */
static bool token_cancelled(ppi_record *w, pp_cancel *cancel) {
    atomic_store(&w->pinning, 1);
    bool ours = atomic_load(&w->cancel) == cancel;
#ifdef PP_DEBUG_LOCKS
    sched_yield(); /* widens the window a broken handshake would need (ASan sees it) */
#endif
    bool cancelled = ours && pp_cancel_requested(cancel);
    atomic_store(&w->pinning, 0);
    return cancelled;
}

#ifdef PP_DEBUG_LOCKS
/*
 * Debug builds check invariant 1: they keep the set of VMs not yet forgotten, the
 * watchdog aborts if it is about to arm one that is not in it, and it yields before
 * and after it reads the VM from a record, which widens the windows a broken
 * handshake would need.
 */
static pthread_mutex_t g_live_lock = PTHREAD_MUTEX_INITIALIZER;
static const void **g_live;
static size_t g_live_len, g_live_cap;

void ppi_lua_watch_born(lua_State *L) {
    pthread_mutex_lock(&g_live_lock);
    if (!ppi_grow((void **)&g_live, &g_live_cap, g_live_len + 1, sizeof *g_live)) abort();
    g_live[g_live_len++] = L;
    pthread_mutex_unlock(&g_live_lock);
}

static bool live_take(const lua_State *L, bool remove) {
    bool found = false;
    pthread_mutex_lock(&g_live_lock);
    for (size_t i = 0; i < g_live_len && !found; i++) {
        if (g_live[i] != L) continue;
        found = true;
        if (remove) g_live[i] = g_live[--g_live_len];
    }
    pthread_mutex_unlock(&g_live_lock);
    return found;
}
#endif

/* Arm the VM `w` names, unless it was forgotten meanwhile (1.). */
static void arm(ppi_record *w) {
#ifdef PP_DEBUG_LOCKS
    sched_yield();
#endif
    atomic_store(&g_arming, 1);
    lua_State *L = atomic_load(&w->vm);
#ifdef PP_DEBUG_LOCKS
    sched_yield();
    if (L && !live_take(L, false)) {
        fprintf(stderr, "polyplug: the watchdog was about to arm a VM that was closed\n");
        abort();
    }
#endif
    if (L) {
        set_hook(L, true, HOOK_BURST);
        /* inside a __gc finalizer (or lua_close) LuaJIT marks hooks active so they do
         * not fire; past the deadline they must */
        ppi_lua_unblock_hooks(L);
    }
    atomic_store(&g_arming, 0);
}

static long long saturated_add(long long now, uint64_t ns) {
    return ns >= (uint64_t)(LLONG_MAX - now) ? LLONG_MAX : now + (long long)ns;
}

/* Check one record; true while it has limits to watch. */
static bool check_record(ppi_record *w, long long now) {
    long long deadline = atomic_load_explicit(&w->deadline, memory_order_acquire);
    pp_cancel *cancel = atomic_load_explicit(&w->cancel, memory_order_acquire);
    if (!deadline && !cancel) return false;
    if (deadline < 0) {
        /* a pending deadline (4.): its limit starts now; the owner may have fixed it,
         * or moved on to another call, meanwhile (then the mark is gone) */
        long long fixed = saturated_add(now, atomic_load_explicit(&w->timeout,
                                                                  memory_order_relaxed));
        atomic_compare_exchange_strong(&w->deadline, &deadline, fixed);
        return true;
    }
    if ((deadline && now >= deadline) || (cancel && token_cancelled(w, cancel))) arm(w);
    return true;
}

static void *watchdog_main(void *arg) {
    (void)arg;
    unsigned quiet = 0;
    for (;;) {
        bool active = false;
        long long now = ppi_now_ns();
        for (ppi_record *w = ppi_records(); w; w = w->next)
            if (check_record(w, now)) active = true;
        quiet = active ? 0 : quiet + 1;
        if (quiet >= IDLE_TICKS) {
            /* going to sleep: announce it, then look once more (a call publishing now
             * either is seen here or sees `sleeping` and wakes us) */
            atomic_store(&ppi_watch_sleeping, 1);
            ppi_fence_heavy();
            bool any = false;
            for (ppi_record *w = ppi_records(); w && !any; w = w->next)
                any = atomic_load(&w->deadline) != 0 || atomic_load(&w->cancel) != NULL;
            if (!any) futex_wait(&ppi_watch_sleeping, 1);
            atomic_store(&ppi_watch_sleeping, 0);
            quiet = 0;
            continue;
        }
        struct timespec ts = {0, TICK_NS};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/*
 * fork() copies only the calling thread: a child of a process whose watchdog ran has
 * none, yet its flags said it had, so its limited calls published their deadlines to
 * nobody and a runaway call never stopped.  The child forgets the watchdog (its next
 * limited call starts a new one) and what the threads it did not inherit left behind:
 * their records' limits (nobody ends those calls), the pin and the locks the watchdog
 * may have held at the fork.  A limited call the forking thread itself is inside of is
 * watched again from the child's next limited call on.
 */
static void watch_after_fork(void) {
    static const pthread_once_t fresh = PTHREAD_ONCE_INIT;
    const ppi_record *own = ppi_self()->record;
    for (ppi_record *w = ppi_records(); w; w = w->next) {
        atomic_store(&w->pinning, 0);
        if (w == own) continue;
        atomic_store(&w->deadline, 0);
        atomic_store(&w->cancel, NULL);
    }
    atomic_store(&g_arming, 0);
    atomic_store(&g_hook_lock, 0);
    atomic_store(&ppi_watch_sleeping, 0);
    g_running = false;
    atomic_store(&ppi_watch_running, false);
    atomic_store(&g_ready, false);
    memcpy(&g_started, &fresh, sizeof fresh);
#ifdef PP_DEBUG_LOCKS
    pthread_mutex_init(&g_live_lock, NULL);
#endif
}

static void register_fork_handler(void) { pthread_atfork(NULL, NULL, watch_after_fork); }

static void start_watchdog(void) {
    static pthread_once_t fork_handler = PTHREAD_ONCE_INIT; /* a child inherits it */
    pthread_once(&fork_handler, register_fork_handler);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t th;
    g_running = pthread_create(&th, &attr, watchdog_main, NULL) == 0;
    pthread_attr_destroy(&attr);
    atomic_store_explicit(&ppi_watch_running, g_running, memory_order_relaxed);
    atomic_store_explicit(&g_ready, true, memory_order_release);
}

void ppi_watch_wake(void) {
    atomic_store(&ppi_watch_sleeping, 0);
    futex_wake(&ppi_watch_sleeping);
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
        set_hook(L, false, 0); /* a stale arming: nothing to stop */
        return;
    }
    if (!call->tripped) {
        if (call->cancel && pp_cancel_requested(call->cancel))
            call->tripped = PP_ABI_CALL_CANCELLED;
        else if (call->deadline_ns && ppi_now_ns() >= ppi_lua_deadline(call))
            call->tripped = PP_ABI_CALL_TIMEOUT;
        else {
            /* armed for an earlier call (a stale arming): stop firing; without a
             * watchdog the periodic hook stays */
            if (g_running) set_hook(L, false, 0);
            return;
        }
        set_hook(L, true, HOOK_BURST);
    }
    /* raising from a hook leaves the "hook active" mark set, and an xpcall message
     * handler would then run unhookable: clear it, as a hook that returns would */
    ppi_lua_hook_leave(L);
    luaL_error(L, "%s", call->tripped == PP_ABI_CALL_TIMEOUT ? "call timed out"
                                                              : "call cancelled");
}

/* The innermost call enclosing `call` that is published in the watch record. */
static const ppi_call *watched_outer(const ppi_call *call) {
    for (const ppi_call *o = call->outer; o; o = o->outer)
        if (o->limited && o->watch_vm) return o;
    return NULL;
}

/* A pending deadline is fixed only while its call is this thread's innermost
 * published one (a nested call fixes its enclosing call's before it publishes itself),
 * so the record's deadline is that call's mark or the watchdog's value for it. */
long long ppi_lua_deadline(ppi_call *call) {
    if (PP_LIKELY(call->deadline_ns != PPI_DEADLINE_PENDING)) return call->deadline_ns;
    long long fixed = ppi_deadline_after(call->timeout_ns);
    ppi_record *w = ppi_self()->record;
    if (call->watch_mark && w) {
        /* published: agree with the watchdog, which may have fixed it first (4.) */
        long long mark = call->watch_mark;
        if (!atomic_compare_exchange_strong(&w->deadline, &mark, fixed) && mark > 0)
            fixed = mark;
        call->watch_mark = 0;
    }
    call->deadline_ns = fixed;
    return fixed;
}

void ppi_lua_watch_begin(lua_State *L, ppi_call *call) {
    call->limited = PPI_WATCHED;
    call->watch_vm = NULL;
    if (PP_UNLIKELY(!atomic_load_explicit(&g_ready, memory_order_acquire)))
        pthread_once(&g_started, start_watchdog);
    ppi_record *w = g_running ? ppi_my_record() : NULL;
    if (PP_UNLIKELY(!w)) {
        /* no watchdog: check on a count hook instead (slower, still correct) */
        ppi_lua_deadline(call);
        set_hook(L, true, 1000);
        return;
    }
    call->watch_vm = L;
    long long deadline = call->deadline_ns;
    if (deadline == PPI_DEADLINE_PENDING) {
        deadline = -(long long)(++w->seq & (uint64_t)LLONG_MAX); /* unique in this record */
        call->watch_mark = deadline;
        atomic_store_explicit(&w->timeout, call->timeout_ns, memory_order_relaxed);
    }
    /* the VM and the limit before the deadline: the watchdog reads it first (acquire) */
    atomic_store_explicit(&w->vm, L, memory_order_relaxed);
    if (PP_UNLIKELY(call->cancel || atomic_load_explicit(&w->cancel, memory_order_relaxed)))
        atomic_store_explicit(&w->cancel, call->cancel, memory_order_release);
    atomic_store_explicit(&w->deadline, deadline, memory_order_release);
    ppi_fence_light();
    if (PP_UNLIKELY(atomic_load_explicit(&ppi_watch_sleeping, memory_order_relaxed)))
        ppi_watch_wake();
    /* a limit that has already passed (a nested call inheriting an expired deadline,
     * a token cancelled in between) is checked at once; a call's own deadline lies in
     * the future (the watchdog sees it pass) */
    if (PP_UNLIKELY(call->tripped || (call->cancel && pp_cancel_requested(call->cancel)) ||
                    (deadline > 0 && !call->timeout_ns && ppi_now_ns() >= deadline)))
        set_hook(L, true, HOOK_BURST);
}

void ppi_lua_limits_release(ppi_call *call) {
    if (!call->limited) return;
    call->limited = 0;
    ppi_record *w = ppi_self()->record;
    if (!call->watch_vm || !w) return;
    if (PP_LIKELY(!call->outer && !call->cancel)) {
        /* the common case: an outermost call without a token */
        atomic_store_explicit(&w->deadline, 0, memory_order_relaxed);
        return;
    }
    /* the enclosing limited call, if any, is watched again; else the record keeps
     * naming this VM (1.) with no limits */
    const ppi_call *o = watched_outer(call);
    pp_cancel *cancel = o ? o->cancel : NULL;
    if (call->cancel && call->cancel != cancel) {
        /* unpin the token before the caller may free it (3.) */
        atomic_store(&w->cancel, cancel);
        wait_clear(&w->pinning);
    } else if (cancel) {
        atomic_store_explicit(&w->cancel, cancel, memory_order_relaxed);
    }
    if (o) {
        /* the enclosing call's deadline was fixed when this call inherited it */
        atomic_store_explicit(&w->vm, o->watch_vm, memory_order_relaxed);
        atomic_store_explicit(&w->deadline, o->deadline_ns, memory_order_release);
    } else {
        atomic_store_explicit(&w->deadline, 0, memory_order_relaxed);
    }
}

void ppi_lua_watch_end(lua_State *L, ppi_call *call) {
    ppi_lua_limits_release(call);
    /* an enclosing call in the same VM that already tripped keeps its hook; anything
     * else armed during this call goes (the mask, not the function: a hook's fields
     * are written one by one) */
    const ppi_call *outer = call->outer;
    if (outer && call->vm && outer->vm == call->vm && outer->tripped)
        set_hook(L, true, HOOK_BURST);
    else if (lua_gethookmask(L))
        set_hook(L, false, 0);
}

void ppi_lua_watch_forget(lua_State *L) {
    for (ppi_record *w = ppi_records(); w; w = w->next) {
        void *expected = L;
        atomic_compare_exchange_strong(&w->vm, &expected, NULL);
    }
    wait_clear(&g_arming);
#ifdef PP_DEBUG_LOCKS
    live_take(L, true);
#endif
}
