/*
 * pp_lock.c — the per-VM lock.
 *
 * A Lua state runs one call at a time, so same-bundle calls from several threads are
 * serialised.  A plain mutex makes that collapse: every hand-off puts the waiter to
 * sleep and every unlock pays a futex wake, so two threads run slower together than
 * one alone.  This lock lets a waiter spin with exponential backoff (then yield)
 * instead of sleeping, so the holder's unlock stays a single atomic store and calls
 * run in batches per thread.
 * Only a waiter that has spun for PPI_LOCK_SPIN_NS sleeps (futex), which keeps long
 * guest calls from burning a core.
 *
 * States: 0 free, 1 held, 2 held and a waiter may sleep (Drepper, "Futexes are
 * tricky", mutex 3, with a spinning phase in front of the sleeping one).
 */
#include <linux/futex.h>
#include <sched.h>
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

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
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
        if (now_ns() >= deadline) return false;
        sched_yield();
    }
}

void ppi_lock_acquire_slow(ppi_lock *l) {
    if (spin_until(l, now_ns() + PPI_LOCK_SPIN_NS)) return;
    /* sleeping phase: mark "waiters" and sleep until an unlock wakes us */
    uint32_t c = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
    while (c != 0) {
        futex_wait(&l->state, 2);
        c = atomic_exchange_explicit(&l->state, 2, memory_order_acquire);
    }
}

void ppi_lock_wake(ppi_lock *l) { futex_wake_one(&l->state); }

bool ppi_lock_acquire_within(ppi_lock *l, uint64_t ns) {
    return spin_until(l, now_ns() + (long long)ns);
}
