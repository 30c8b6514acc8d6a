/*
 * pp_lock.c — the VM lock, and the checked wrappers of the leaf locks.
 *
 * A Lua state runs one call at a time, so same-bundle calls from several threads are
 * serialised.  A plain mutex makes that collapse: every hand-off puts the waiter to
 * sleep and every unlock pays a futex wake, so two threads run slower together than
 * one alone.  This lock lets a waiter spin with exponential backoff (then yield)
 * before it sleeps, so the holder's unlock stays a single atomic exchange and calls
 * run in batches per thread.  Only a waiter that has spun for PPI_LOCK_SPIN_NS
 * sleeps (futex), which keeps long guest calls from burning a core; a bounded wait
 * sleeps with a timeout, so waiting two seconds costs two seconds of sleep, not of
 * CPU.
 *
 * States: 0 free, 1 held, 2 held and a waiter may sleep (Drepper, "Futexes are
 * tricky", mutex 3, with a spinning phase in front of the sleeping one).  The owner
 * tag and recursion depth are the callers' business (pp_lua_call.c); the lock word
 * itself is never recursive.
 */
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pp_internal.h"

enum { BACKOFF_MIN = 16, BACKOFF_MAX = 4096 }; /* pause instructions between probes */
#define PPI_LOCK_SPIN_NS 2000000LL /* 2 ms of spinning/yielding, then sleep */

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

long long ppi_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * The coarse clock (the time of the last timer tick, ~5 ns to read instead of ~25) is
 * good enough for a long limit: it lags CLOCK_MONOTONIC by at most its resolution, so
 * a deadline of coarse + resolution + timeout is never early, and late by at most one
 * resolution, under 1% of any timeout this is used for.  0: not usable here.
 */
static _Atomic long long coarse_res_ns = -1;

static long long coarse_resolution(void) {
    long long res = atomic_load_explicit(&coarse_res_ns, memory_order_relaxed);
    if (PP_UNLIKELY(res < 0)) {
        struct timespec ts;
        res = 0;
#ifdef CLOCK_MONOTONIC_COARSE
        if (clock_getres(CLOCK_MONOTONIC_COARSE, &ts) == 0 && ts.tv_sec == 0 &&
            ts.tv_nsec <= 20000000L)
            res = ts.tv_nsec;
#endif
        atomic_store_explicit(&coarse_res_ns, res, memory_order_relaxed);
    }
    return res;
}

long long ppi_deadline_after(uint64_t timeout_ns) {
    long long res = coarse_resolution();
    long long now;
    if (res && timeout_ns >= 100 * (uint64_t)res) {
#ifdef CLOCK_MONOTONIC_COARSE
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + res;
#else
        now = ppi_now_ns();
#endif
    } else {
        now = ppi_now_ns();
    }
    /* saturate: a huge timeout is no earlier than "never" */
    return timeout_ns >= (uint64_t)(LLONG_MAX - now) ? LLONG_MAX : now + (long long)timeout_ns;
}

/* Sleep while *addr == expected, at most `ns` nanoseconds (< 0: no limit). */
static void futex_wait(_Atomic uint32_t *addr, uint32_t expected, long long ns) {
    struct timespec ts, *tp = NULL;
    if (ns >= 0) {
        ts.tv_sec = (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        tp = &ts;
    }
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, tp, NULL, 0);
}

static void futex_wake_one(_Atomic uint32_t *addr) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Probe until `deadline` (CLOCK_MONOTONIC ns); true once the lock is ours.  Probing
 * pulls the lock's cache line away from the holder, so probes back off exponentially
 * (the holder runs long batches of calls), then yield between probes. */
static bool spin_until(ppi_lock *l, long long deadline) {
    unsigned backoff = BACKOFF_MIN;
    for (;;) {
        uint32_t expected = 0;
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
        for (unsigned k = 0; k < backoff; k++) cpu_relax();
        if (backoff < BACKOFF_MAX) {
            backoff *= 2;
            continue;
        }
        if (ppi_now_ns() >= deadline) return false;
        sched_yield();
    }
}

void ppi_lock_acquire_slow(ppi_lock *l) {
    if (spin_until(l, ppi_now_ns() + PPI_LOCK_SPIN_NS)) return;
    /* sleeping phase: mark "waiters" and sleep until an unlock wakes us */
    uint32_t c = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
    while (c != 0) {
        futex_wait(&l->state, 2, -1);
        c = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
    }
}

void ppi_lock_wake(ppi_lock *l) { futex_wake_one(&l->state); }

bool ppi_lock_acquire_until(ppi_lock *l, long long deadline_ns) {
    long long now = ppi_now_ns();
    long long spin_end = now + PPI_LOCK_SPIN_NS;
    if (spin_until(l, spin_end < deadline_ns ? spin_end : deadline_ns)) return true;
    for (;;) {
        /* the lock may stay marked 2 after a timeout: its holder then wakes nobody */
        if (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) == 0) return true;
        now = ppi_now_ns();
        if (now >= deadline_ns) return false;
        futex_wait(&l->state, 2, deadline_ns - now);
    }
}

/* ── leaf locks and the order checks ───────────────────────────────────────── */

#ifdef PP_DEBUG_LOCKS
/* The lock-order rules of pp_internal.h, checked at every acquisition: flow and VM
 * locks come before leaf locks, and leaf locks never nest.  (A flow lock taken while
 * holding a VM lock is the allowed, bounded exception: ppi_ops_lock.) */
void ppi_assert_may_take(int level, const char *what) {
    if (ppi_self()->leaf_held == 0) return;
    fprintf(stderr, "polyplug: lock order violated: taking %s (level %d) while holding a "
            "leaf lock\n", what, level);
    abort();
}

void ppi_leaf_taken(void) {
    ppi_thread *t = ppi_self();
    if (t->leaf_held) {
        fprintf(stderr, "polyplug: lock order violated: two leaf locks held at once\n");
        abort();
    }
    t->leaf_held++;
}

void ppi_leaf_released(void) { ppi_self()->leaf_held--; }
#endif

void ppi_mutex_lock(pthread_mutex_t *m) {
    PPI_ASSERT_MAY_TAKE(PPI_LEVEL_LEAF, "a leaf mutex");
    pthread_mutex_lock(m);
    PPI_LEAF_TAKEN();
}

void ppi_mutex_unlock(pthread_mutex_t *m) {
    PPI_LEAF_RELEASED();
    pthread_mutex_unlock(m);
}

void ppi_rdlock(pthread_rwlock_t *l) {
    PPI_ASSERT_MAY_TAKE(PPI_LEVEL_LEAF, "the registry lock");
    pthread_rwlock_rdlock(l);
    PPI_LEAF_TAKEN();
}

void ppi_wrlock(pthread_rwlock_t *l) {
    PPI_ASSERT_MAY_TAKE(PPI_LEVEL_LEAF, "the registry lock");
    pthread_rwlock_wrlock(l);
    PPI_LEAF_TAKEN();
}

void ppi_rwunlock(pthread_rwlock_t *l) {
    PPI_LEAF_RELEASED();
    pthread_rwlock_unlock(l);
}
