/*
 * bench_loops.c — see bench_loops.h.  Also exports flat, ctypes-friendly wrappers
 * (bench_flat_*) for the upstream measurement, which calls this file built as a .so.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_loops.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_EXPORT __attribute__((visibility("default")))

uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_vm_loop(const bench_target *t, uint32_t fn_id, uint32_t expect_code, int check_add,
                   CallArena *arena, bench_arena_reset_fn reset, uint64_t n,
                   bench_counter_fn allocs, bench_result *r) {
    uint32_t args[2];
    uint32_t out = 0;
    AbiError err;
    uint64_t bad = 0;
    VmCallFn call = t->call;
    VmLoaderData ld = t->loader_data;
    GuestContractInstance inst = t->instance;
    uint64_t a0 = allocs ? allocs() : 0;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        args[0] = (uint32_t)i;
        args[1] = 35;
        call(ld, inst, fn_id, args, &out, arena, &err);
        if (arena) reset(arena);
        bad += (err.code != expect_code) | (check_add && out != (uint32_t)i + 35u);
    }
    uint64_t t1 = bench_now_ns();
    uint64_t a1 = allocs ? allocs() : 0;
    r->ns_per_call = n ? (double)(t1 - t0) / (double)n : 0.0;
    r->allocs_per_call = allocs && n ? (double)(a1 - a0) / (double)n : -1.0;
    r->bad = bad;
}

static double gc_bytes(const bench_target *t) {
    double v = -1.0;
    AbiError err;
    t->call(t->loader_data, t->instance, BENCH_FN_GC_BYTES, NULL, &v, NULL, &err);
    return err.code == 0 ? v : -1.0;
}

static void gc_ctl(const bench_target *t, uint32_t op) {
    AbiError err;
    t->call(t->loader_data, t->instance, BENCH_FN_GC_CTL, &op, NULL, NULL, &err);
}

double bench_gc_bytes_per_call(const bench_target *t, uint32_t fn_id, uint64_t n) {
    uint32_t args[2] = {7, 35};
    uint32_t out = 0;
    AbiError err;
    gc_ctl(t, 2); /* full collection */
    gc_ctl(t, 0); /* stop */
    /* what reading the count itself allocates (fn 2's ffi.cast box, when interpreted) */
    double base0 = gc_bytes(t);
    double base1 = gc_bytes(t);
    double before = gc_bytes(t);
    for (uint64_t i = 0; i < n; i++)
        t->call(t->loader_data, t->instance, fn_id, args, &out, NULL, &err);
    double after = gc_bytes(t);
    gc_ctl(t, 1); /* restart */
    gc_ctl(t, 2);
    if (base0 < 0 || base1 < 0 || before < 0 || after < 0 || !n) return -1.0;
    return (after - before - (base1 - base0)) / (double)n;
}

/* ── threads ───────────────────────────────────────────────────────────────── */

typedef struct thread_arg {
    const bench_target *t;
    uint64_t n;
    uint32_t k;
    _Atomic int *go;
    _Atomic int *ready;
    uint64_t bad;
} thread_arg;

static void *thread_main(void *p) {
    thread_arg *a = p;
    uint32_t args[2];
    uint32_t out = 0;
    AbiError err;
    uint64_t bad = 0;
    VmCallFn call = a->t->call;
    VmLoaderData ld = a->t->loader_data;
    GuestContractInstance inst = a->t->instance;
    atomic_fetch_add(a->ready, 1);
    while (!atomic_load_explicit(a->go, memory_order_acquire)) {
    }
    for (uint64_t i = 0; i < a->n; i++) {
        args[0] = (uint32_t)i;
        args[1] = a->k;
        call(ld, inst, BENCH_FN_ADD, args, &out, NULL, &err);
        bad += (err.code != 0) | (out != (uint32_t)i + a->k);
    }
    a->bad = bad;
    return NULL;
}

double bench_threads(const bench_target *const *targets, int nthreads, uint64_t n_per_thread,
                     uint64_t *bad) {
    enum { MAX_THREADS = 64 };
    if (nthreads < 1 || nthreads > MAX_THREADS) return -1.0;
    pthread_t tid[MAX_THREADS];
    thread_arg args[MAX_THREADS];
    _Atomic int go = 0, ready = 0;
    int started = 0;
    for (int k = 0; k < nthreads; k++) {
        args[k] = (thread_arg){targets[k], n_per_thread, (uint32_t)k + 1, &go, &ready, 0};
        if (pthread_create(&tid[k], NULL, thread_main, &args[k]) != 0) break;
        started++;
    }
    while (atomic_load(&ready) < started) {
    }
    uint64_t t0 = bench_now_ns();
    atomic_store_explicit(&go, 1, memory_order_release);
    uint64_t total_bad = 0;
    for (int k = 0; k < started; k++) {
        pthread_join(tid[k], NULL);
        total_bad += args[k].bad;
    }
    uint64_t t1 = bench_now_ns();
    if (bad) *bad = total_bad;
    if (started != nthreads) return -1.0;
    return (double)(t1 - t0) / ((double)nthreads * (double)n_per_thread);
}

/* ── helpers ───────────────────────────────────────────────────────────────── */

CallArena *bench_arena_new(const HostApi *host, size_t cap) {
    CallArena *a = calloc(1, sizeof *a);
    uint8_t *buf = malloc(cap);
    if (!a || !buf) {
        free(a);
        free(buf);
        return NULL;
    }
    a->base = a->cur = buf;
    a->end = buf + cap;
    a->host = host;
    return a;
}

void bench_arena_reset_plain(CallArena *arena) { arena->cur = arena->base; }

void bench_plain_add(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                     const void *args, void *out, CallArena *arena, AbiError *out_err) {
    (void)loader_data;
    (void)instance;
    (void)arena;
    if (fn_id == BENCH_FN_ADD) {
        const uint32_t *a = args;
        *(uint32_t *)out = a[0] + a[1];
    }
    out_err->code = 0;
    out_err->message = (StringView){NULL, 0};
}

bench_counter_fn bench_alloc_counter(void) {
    void *sym = dlsym(RTLD_DEFAULT, "pp_bench_alloc_count");
    bench_counter_fn fn;
    memcpy(&fn, &sym, sizeof fn);
    return fn;
}

/* ── flat wrappers for ctypes (upstream side) ──────────────────────────────── */

static bench_target flat_target(void *call, void *loader_data, void *inst_data,
                                uint64_t inst_cid) {
    bench_target t;
    memcpy(&t.call, &call, sizeof t.call);
    t.loader_data.data = loader_data;
    t.instance.data = inst_data;
    t.instance.contract_id = inst_cid;
    return t;
}

/* out[0] = ns per call, out[1] = allocs per call (-1 without the interposer),
 * out[2] = bad calls.  arena: NULL or from bench_flat_arena_new. */
BENCH_EXPORT void bench_flat_loop(void *call, void *loader_data, void *inst_data,
                                  uint64_t inst_cid, uint32_t fn_id, uint32_t expect_code,
                                  int check_add, void *arena, uint64_t n, int count_allocs,
                                  double *out) {
    bench_target t = flat_target(call, loader_data, inst_data, inst_cid);
    bench_result r;
    bench_vm_loop(&t, fn_id, expect_code, check_add, arena, bench_arena_reset_plain, n,
                  count_allocs ? bench_alloc_counter() : NULL, &r);
    out[0] = r.ns_per_call;
    out[1] = r.allocs_per_call;
    out[2] = (double)r.bad;
}

BENCH_EXPORT double bench_flat_gc_bytes(void *call, void *loader_data, uint32_t fn_id,
                                        uint64_t n) {
    bench_target t = flat_target(call, loader_data, NULL, 0);
    return bench_gc_bytes_per_call(&t, fn_id, n);
}

/* calls/loader_datas: nthreads entries each.  out[0] = ns per call, out[1] = bad. */
BENCH_EXPORT void bench_flat_threads(void *const *calls, void *const *loader_datas,
                                     int nthreads, uint64_t n_per_thread, double *out) {
    bench_target ts[64];
    const bench_target *ptrs[64];
    if (nthreads < 1 || nthreads > 64) {
        out[0] = -1.0;
        out[1] = 0;
        return;
    }
    for (int k = 0; k < nthreads; k++) {
        ts[k] = flat_target(calls[k], loader_datas[k], NULL, 0);
        ptrs[k] = &ts[k];
    }
    uint64_t bad = 0;
    out[0] = bench_threads(ptrs, nthreads, n_per_thread, &bad);
    out[1] = (double)bad;
}

BENCH_EXPORT void *bench_flat_arena_new(void *host, uint64_t cap) {
    return bench_arena_new(host, (size_t)cap);
}

BENCH_EXPORT void *bench_flat_plain_add(void) {
    VmCallFn fn = bench_plain_add;
    void *p;
    memcpy(&p, &fn, sizeof p);
    return p;
}
