/*
 * pp_lock.c — the asymmetric fences, the VM lock, the clocks, and the checked
 * wrappers of the leaf locks.
 *
 * A Lua state runs one call at a time, so same-bundle calls from several threads are
 * serialised.  A plain mutex makes that collapse: every hand-off puts the waiter to
 * sleep and every unlock pays a futex wake, so two threads run slower together than
 * one alone.  This lock lets a waiter spin with exponential backoff (then yield)
 * before it sleeps, so calls run in batches per thread.  Only a waiter that has spun
 * for PPI_LOCK_SPIN_NS sleeps (futex), which keeps long guest calls from burning a
 * core; a bounded wait sleeps with a timeout, so waiting two seconds costs two
 * seconds of sleep, not of CPU.
 *
 * Words: `held` (0/1, the futex word) and `sleepers` (waiters past their spinning
 * phase).  The uncontended release is a plain store: no locked instruction, no
 * fence.  The price is paid by the one who goes to sleep:
 *
 *     release:  owner = 0; held = 0 (release); light fence; if sleepers: wake one
 *     sleeper:  sleepers += 1; heavy fence;
 *               loop { if cas(held, 0 -> 1): break; futex_wait(held, 1) }
 *               sleepers -= 1
 *
 * No wake is lost.  Take any release racing with a sleeper's heavy fence: either
 * the release's load of `sleepers` comes after the releasing thread's point P
 * (pp_internal.h, "Asymmetric fences") and sees the sleeper, which it then wakes —
 * the futex compares `held` with 1 under its own lock, so a wake that comes before
 * the sleeper is queued finds `held` already 0 and the sleeper does not sleep — or
 * the release's store comes before P, and the sleeper's compare-and-swap, which
 * comes after the heavy fence, sees the lock free.  A release that starts after the
 * heavy fence returned sees the count outright.  A woken sleeper that loses the lock
 * to a spinner sleeps again and is woken by that spinner's release, whose load of
 * `sleepers` comes after the fence.  Without membarrier both fences are full fences
 * and the same argument is Dekker's.
 *
 * Bounded waits (ppi_lock_acquire_until) use the same protocol with a futex timeout;
 * a thread that holds another lock only ever waits that way (pp_internal.h).  The
 * owner tag is the callers' business (pp_lua_call.c); the lock is never recursive.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/membarrier.h>
#endif

#include "pp_internal.h"

enum { BACKOFF_MIN = 16, BACKOFF_MAX = 4096 }; /* pause instructions between probes */
#define PPI_LOCK_SPIN_NS 2000000LL /* 2 ms of spinning/yielding, then sleep */

/* ── asymmetric fences ─────────────────────────────────────────────────────── */

bool ppi_fence_asymmetric;
static pthread_once_t fence_once = PTHREAD_ONCE_INIT;

#if defined(__linux__) && defined(SYS_membarrier)
static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }
#endif

static void fence_setup(void) {
#if defined(__linux__) && defined(SYS_membarrier)
    long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        ppi_fence_asymmetric = true;
#endif
}

void ppi_fence_init(void) { pthread_once(&fence_once, fence_setup); }

void ppi_fence_heavy(void) {
    atomic_thread_fence(memory_order_seq_cst);
    if (!ppi_fence_asymmetric) return;
#if defined(__linux__) && defined(SYS_membarrier)
    if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return;
    /* a child of fork() whose registration did not carry over: register again */
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0 &&
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0)
        return;
    /* the original command: every thread of every process (slow, but the same
     * guarantee) */
    if (membarrier(MEMBARRIER_CMD_GLOBAL) == 0) return;
    /* the light sides run without fences already: nothing safe is left to fall back
     * on, and a lost wake-up or a leaked VM is worse than stopping */
    fprintf(stderr, "polyplug: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed (%s)\n",
            strerror(errno));
    abort();
#endif
}

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
 * A deadline is read from CLOCK_MONOTONIC, never from the coarse clock: the coarse
 * clock is cheaper to read, but on a virtual machine it lags by more than its stated
 * resolution when ticks are late (10 ms measured against a 4 ms resolution), which
 * would end a call before its limit.  Calls with long limits read no clock at all
 * (pp_lua_watch.c, pending deadlines).
 */
long long ppi_deadline_after(uint64_t timeout_ns) {
    long long now = ppi_now_ns();
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

static bool try_take(ppi_lock *l) {
    uint32_t expected = 0;
    return atomic_load_explicit(&l->held, memory_order_relaxed) == 0 &&
           atomic_compare_exchange_strong_explicit(&l->held, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

/* Probe until `deadline` (CLOCK_MONOTONIC ns); true once the lock is ours.  Probing
 * pulls the lock's cache line away from the holder, so probes back off exponentially
 * (the holder runs long batches of calls), then yield between probes. */
static bool spin_until(ppi_lock *l, long long deadline) {
    unsigned backoff = BACKOFF_MIN;
    for (;;) {
        if (try_take(l)) return true;
        for (unsigned k = 0; k < backoff; k++) cpu_relax();
        if (backoff < BACKOFF_MAX) {
            backoff *= 2;
            continue;
        }
        if (ppi_now_ns() >= deadline) return false;
        sched_yield();
    }
}

/* The sleeping phase (the protocol at the top): until the lock is ours, or until
 * `deadline` (< 0: none) has passed. */
static bool sleep_until(ppi_lock *l, long long deadline) {
    PPI_ASSERT_MAY_TAKE(PPI_LEVEL_VM, "a VM lock");
    atomic_fetch_add_explicit(&l->sleepers, 1, memory_order_seq_cst);
    ppi_fence_heavy();
    bool got;
    for (;;) {
        if ((got = try_take(l))) break;
        long long left = -1;
        if (deadline >= 0) {
            left = deadline - ppi_now_ns();
            if (left <= 0) break;
        }
        futex_wait(&l->held, 1, left);
    }
    atomic_fetch_sub_explicit(&l->sleepers, 1, memory_order_relaxed);
    return got;
}

void ppi_lock_acquire_slow(ppi_lock *l) {
    if (spin_until(l, ppi_now_ns() + PPI_LOCK_SPIN_NS)) return;
    sleep_until(l, -1);
}

void ppi_lock_wake(ppi_lock *l) { futex_wake_one(&l->held); }

bool ppi_lock_sleep_until(ppi_lock *l, long long deadline_ns) {
    return sleep_until(l, deadline_ns < 0 ? 0 : deadline_ns);
}

bool ppi_lock_acquire_until(ppi_lock *l, long long deadline_ns) {
    long long spin_end = ppi_now_ns() + PPI_LOCK_SPIN_NS;
    if (spin_until(l, spin_end < deadline_ns ? spin_end : deadline_ns)) return true;
    if (deadline_ns < 0) deadline_ns = 0; /* a negative deadline has passed already */
    return sleep_until(l, deadline_ns);
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

/* ── leaf locks across fork() ────────────────────────────────────────────────── */

/*
 * fork() copies only the calling thread.  A leaf lock another thread held at that
 * instant would stay held in the child forever, and every registry lookup there would
 * hang.  So every leaf lock is created through ppi_leaf_*_init, which lists it, and a
 * fork handler takes every listed lock before the fork (in the order they were
 * created; leaf locks never nest, and a holder waits for nothing, so this ends as
 * soon as the holders leave their short sections), lets the parent go on, and gives
 * the child freshly initialised locks: an rwlock remembers its writer's thread id,
 * which the child's thread does not have.  The forking thread holds no leaf lock
 * itself: a leaf section never calls out (pp_internal.h).
 */
typedef struct leaf_entry {
    void *lock;
    bool rw;
} leaf_entry;

static pthread_mutex_t g_leaves_lock = PTHREAD_MUTEX_INITIALIZER;
static leaf_entry *g_leaves;
static size_t g_leaves_len, g_leaves_cap;
static pthread_once_t g_leaves_once = PTHREAD_ONCE_INIT;

static void leaves_before_fork(void) {
    pthread_mutex_lock(&g_leaves_lock);
    for (size_t i = 0; i < g_leaves_len; i++) {
        if (g_leaves[i].rw)
            pthread_rwlock_wrlock(g_leaves[i].lock);
        else
            pthread_mutex_lock(g_leaves[i].lock);
    }
}

static void leaves_after_fork_parent(void) {
    for (size_t i = g_leaves_len; i-- > 0;) {
        if (g_leaves[i].rw)
            pthread_rwlock_unlock(g_leaves[i].lock);
        else
            pthread_mutex_unlock(g_leaves[i].lock);
    }
    pthread_mutex_unlock(&g_leaves_lock);
}

static void leaves_after_fork_child(void) {
    for (size_t i = 0; i < g_leaves_len; i++) {
        if (g_leaves[i].rw)
            pthread_rwlock_init(g_leaves[i].lock, NULL);
        else
            pthread_mutex_init(g_leaves[i].lock, NULL);
    }
    pthread_mutex_init(&g_leaves_lock, NULL);
}

static void leaves_register_fork_handlers(void) {
    pthread_atfork(leaves_before_fork, leaves_after_fork_parent, leaves_after_fork_child);
}

static int leaf_add(void *lock, bool rw) {
    pthread_once(&g_leaves_once, leaves_register_fork_handlers);
    pthread_mutex_lock(&g_leaves_lock);
    int rc = 0;
    if (g_leaves_len == g_leaves_cap &&
        !ppi_grow((void **)&g_leaves, &g_leaves_cap, g_leaves_cap ? g_leaves_cap * 2 : 16,
                  sizeof *g_leaves))
        rc = ENOMEM;
    else
        g_leaves[g_leaves_len++] = (leaf_entry){lock, rw};
    pthread_mutex_unlock(&g_leaves_lock);
    return rc;
}

/* Forget `lock`, keeping the others in creation order. */
static void leaf_remove(void *lock) {
    pthread_mutex_lock(&g_leaves_lock);
    for (size_t i = 0; i < g_leaves_len; i++) {
        if (g_leaves[i].lock != lock) continue;
        memmove(&g_leaves[i], &g_leaves[i + 1], (g_leaves_len - i - 1) * sizeof *g_leaves);
        g_leaves_len--;
        break;
    }
    pthread_mutex_unlock(&g_leaves_lock);
}

int ppi_leaf_mutex_init(pthread_mutex_t *m) {
    int rc = pthread_mutex_init(m, NULL);
    if (rc == 0 && (rc = leaf_add(m, false)) != 0) pthread_mutex_destroy(m);
    return rc;
}

int ppi_leaf_mutex_adopt(pthread_mutex_t *m) { return leaf_add(m, false); }

void ppi_leaf_mutex_destroy(pthread_mutex_t *m) {
    leaf_remove(m);
    pthread_mutex_destroy(m);
}

int ppi_leaf_rwlock_init(pthread_rwlock_t *l) {
    int rc = pthread_rwlock_init(l, NULL);
    if (rc == 0 && (rc = leaf_add(l, true)) != 0) pthread_rwlock_destroy(l);
    return rc;
}

void ppi_leaf_rwlock_destroy(pthread_rwlock_t *l) {
    leaf_remove(l);
    pthread_rwlock_destroy(l);
}

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
