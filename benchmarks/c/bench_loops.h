/*
 * bench_loops.h — the measurement loops shared by every C figure.
 *
 * Only the frozen ABI (polyplug_abi.h) is used here, so the same object code drives
 * our vm.call (bench_dispatch.c), the floor (a VmCallFn-shaped bare lua_pcall) and
 * upstream 0.1.3's vm.call (this file built as a .so and called through ctypes by
 * benchmarks/py/bench_upstream.py).  Anything that differs between the systems — how
 * an arena is reset, where allocation counts come from — is passed in.
 */
#ifndef BENCH_LOOPS_H
#define BENCH_LOOPS_H

#include "polyplug_abi.h"

/* What one loop calls: a vm.call entry point, its loader data and an instance. */
typedef struct bench_target {
    VmCallFn call;
    VmLoaderData loader_data;
    GuestContractInstance instance;
} bench_target;

typedef void (*bench_arena_reset_fn)(CallArena *arena);
/* Returns the number of heap allocations made so far in the process. */
typedef uint64_t (*bench_counter_fn)(void);

typedef struct bench_result {
    double ns_per_call;
    double allocs_per_call; /* -1 when no counter was given */
    uint64_t bad;           /* calls with a wrong result or an unexpected error code */
} bench_result;

/* Fixed function ids of the bench bundle (benchmarks/bundles/bench/bench_fns.lua). */
enum {
    BENCH_FN_ADD = 0,
    BENCH_FN_NOOP = 1,
    BENCH_FN_GC_BYTES = 2,
    BENCH_FN_GC_CTL = 3,
    BENCH_FN_SPIN = 4
};

uint64_t bench_now_ns(void);

/*
 * Call `t` n times with `fn_id` and args {i, 35} for i = 0..n-1; after each call reset
 * `arena` (if any) with `reset`.  A call is bad when its error code is not
 * `expect_code` or, with `check_add`, when *out != i + 35.
 */
void bench_vm_loop(const bench_target *t, uint32_t fn_id, uint32_t expect_code, int check_add,
                   CallArena *arena, bench_arena_reset_fn reset, uint64_t n,
                   bench_counter_fn allocs, bench_result *r);

/* Lua heap bytes allocated per call of `fn_id` over n calls, with the guest's GC
 * stopped (fn 2 reads collectgarbage("count"), fn 3 stops/restarts the GC). */
double bench_gc_bytes_per_call(const bench_target *t, uint32_t fn_id, uint64_t n);

/*
 * nthreads threads, thread k calling add on targets[k] n_per_thread times with
 * args {i, k} and checking every result.  Returns the aggregate wall time per call
 * (wall / (nthreads * n_per_thread)) in ns; *bad receives the wrong results.
 * Returns a negative value if a thread could not be started.
 */
double bench_threads(const bench_target *const *targets, int nthreads, uint64_t n_per_thread,
                     uint64_t *bad);

/* A CallArena over a fresh heap buffer (for hosts without pp_arena_new) and its reset. */
CallArena *bench_arena_new(const HostApi *host, size_t cap);
void bench_arena_reset_plain(CallArena *arena);

/* The "C indirect call" baseline: a VmCallFn that adds in C. */
void bench_plain_add(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                     const void *args, void *out, CallArena *arena, AbiError *out_err);

/* The allocation counter of benchmarks/c/alloc_count.c when it is preloaded, else NULL. */
bench_counter_fn bench_alloc_counter(void);

#endif /* BENCH_LOOPS_H */
