/*
 * bench_dispatch.c — C → vm.call figures for our host, and the LuaJIT floor.
 *
 *   bench_dispatch DIR dispatch N ROT [KEY]  every dispatch variant once, N calls
 *                                       each, in an order rotated by ROT (round-robin);
 *                                       with KEY only that variant (for perf record)
 *   bench_dispatch DIR allocs N         heap allocations per call (run it with
 *                                       LD_PRELOAD=alloc_count.so)
 *   bench_dispatch DIR gc N             Lua heap bytes per call (GC stopped)
 *   bench_dispatch DIR threads N ROT    1 thread, 2 threads x 2 bundles, 2 threads x
 *                                       1 bundle; N add calls per thread
 *   bench_dispatch DIR limits N ROT     add (N calls) and spin (a compiled loop of
 *                                       SPIN_ITERATIONS, N / 50000 + 5 calls) on a loader
 *                                       without limits and on one with a 60 s
 *                                       call_timeout: what a limit costs when no
 *                                       deadline passes
 *
 * DIR is benchmarks/bundles/bench.  Each result is a JSON line on stdout:
 * {"key": ..., "value": ns or count, "bad": wrong results}.
 *
 * The host side uses only csrc/include/polyplug.h.  The floor is a VmCallFn-shaped
 * function doing a bare lua_pcall of the same bench_fns.lua functions, with the same
 * five arguments, on a plain luaL_newstate() + luaL_openlibs() state; it runs through
 * the same loop (bench_loops.c) as the real vm.call.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_host.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

/* ── the floor ─────────────────────────────────────────────────────────────── */

typedef struct floor_vm {
    lua_State *L;
    int fn_refs[4];
    int instance_ref;
} floor_vm;

/* Stand-in for the loader's arena_alloc closure (pushed, never called by add/noop). */
static int floor_arena_alloc(lua_State *L) {
    lua_pushnumber(L, 0);
    return 1;
}

static void floor_call(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                       const void *args, void *out, CallArena *arena, AbiError *out_err) {
    (void)instance;
    floor_vm *f = loader_data.data;
    lua_State *L = f->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->fn_refs[fn_id]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, f->instance_ref);
    lua_pushnumber(L, (lua_Number)(uintptr_t)args);
    lua_pushnumber(L, (lua_Number)(uintptr_t)out);
    lua_pushnumber(L, (lua_Number)(uintptr_t)arena);
    lua_pushvalue(L, 1); /* arena_alloc stand-in, kept at stack index 1 */
    int rc = lua_pcall(L, 5, 0, 0);
    if (rc != 0) lua_settop(L, 1);
    out_err->code = rc == 0 ? 0 : 1;
    out_err->message = (StringView){NULL, 0};
}

/* The floor plus what any thread-safe trampoline pays at least: one uncontended
 * lock acquire (lock cmpxchg) and the release of our VM lock (a plain store, then a
 * load of the sleepers count), as a diagnostic row. */
static _Atomic uint32_t floor_lock, floor_sleepers;

static void floor_call_locked(VmLoaderData loader_data, GuestContractInstance instance,
                              uint32_t fn_id, const void *args, void *out, CallArena *arena,
                              AbiError *out_err) {
    uint32_t expected = 0;
    while (!atomic_compare_exchange_strong_explicit(&floor_lock, &expected, 1,
                                                    memory_order_acquire, memory_order_relaxed))
        expected = 0;
    floor_call(loader_data, instance, fn_id, args, out, arena, out_err);
    atomic_store_explicit(&floor_lock, 0, memory_order_release);
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&floor_sleepers, memory_order_relaxed)) abort();
}

static floor_vm *floor_new(const char *dir) {
    static floor_vm f;
    char path[4096];
    snprintf(path, sizeof path, "%s/bench_fns.lua", dir);
    lua_State *L = luaL_newstate();
    if (!L) bench_die("luaL_newstate", NULL);
    luaL_openlibs(L);
    lua_pushcfunction(L, floor_arena_alloc); /* stack index 1 */
    if (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "bench: floor: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    static const char *const names[4] = {"add", "noop", "gc_bytes", "gc_ctl"};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, -1, names[i]);
        if (!lua_isfunction(L, -1)) bench_die("floor: bench_fns.lua lacks a function", NULL);
        f.fn_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
    lua_newtable(L); /* the instance table, like the bundle's factory() result */
    f.instance_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    f.L = L;
    return &f;
}

/* ── dispatch variants ─────────────────────────────────────────────────────── */

typedef struct variant {
    const char *key;
    const bench_target *t;
    uint32_t fn_id;
    uint32_t expect_code;
    int check_add;
    CallArena *arena;
    bench_arena_reset_fn reset;
} variant;

enum { MAX_VARIANTS = 16 };

typedef struct setup {
    pp_runtime *rt;
    bench_target null_inst, real_inst, floor, floor_locked, plain;
    CallArena *arena;
    variant v[MAX_VARIANTS];
    int nv;
} setup;

static void add_variant(setup *s, const char *key, const bench_target *t, uint32_t fn_id,
                        uint32_t expect_code, int check_add, bool arena) {
    s->v[s->nv++] = (variant){key, t, fn_id, expect_code, check_add, arena ? s->arena : NULL,
                              pp_arena_reset};
}

static void setup_init(setup *s, const char *dir) {
    memset(s, 0, sizeof *s);
    s->rt = bench_runtime_new(false);
    uint64_t id = bench_load(s->rt, dir, "bench");
    const GuestContractInterface *iface = bench_iface(s->rt, id);
    s->null_inst = bench_target_of(s->rt, iface, false);
    s->real_inst = bench_target_of(s->rt, iface, true);
    s->arena = pp_arena_new(pp_runtime_host(s->rt), 4096);
    if (!s->arena) bench_die("pp_arena_new", NULL);
    floor_vm *f = floor_new(dir);
    s->floor = (bench_target){floor_call, {f}, {NULL, 0}};
    s->floor_locked = (bench_target){floor_call_locked, {f}, {NULL, 0}};
    s->plain = (bench_target){bench_plain_add, {NULL}, {NULL, 0}};

    add_variant(s, "c.add.null", &s->null_inst, BENCH_FN_ADD, 0, 1, false);
    add_variant(s, "c.add.inst", &s->real_inst, BENCH_FN_ADD, 0, 1, false);
    add_variant(s, "c.add.null.arena", &s->null_inst, BENCH_FN_ADD, 0, 1, true);
    add_variant(s, "c.add.inst.arena", &s->real_inst, BENCH_FN_ADD, 0, 1, true);
    add_variant(s, "c.noop.null", &s->null_inst, BENCH_FN_NOOP, 0, 0, false);
    add_variant(s, "c.noop.inst", &s->real_inst, BENCH_FN_NOOP, 0, 0, false);
    add_variant(s, "c.noop.null.arena", &s->null_inst, BENCH_FN_NOOP, 0, 0, true);
    add_variant(s, "c.noop.inst.arena", &s->real_inst, BENCH_FN_NOOP, 0, 0, true);
    add_variant(s, "c.unknown_fn", &s->null_inst, 99, AbiErrorCode_FunctionNotAvailable, 0,
                false);
    add_variant(s, "floor.add", &s->floor, BENCH_FN_ADD, 0, 1, false);
    add_variant(s, "floor.noop", &s->floor, BENCH_FN_NOOP, 0, 0, false);
    add_variant(s, "floor.add.locked", &s->floor_locked, BENCH_FN_ADD, 0, 1, false);
    add_variant(s, "floor.noop.locked", &s->floor_locked, BENCH_FN_NOOP, 0, 0, false);
    add_variant(s, "c.plain_fn", &s->plain, BENCH_FN_ADD, 0, 1, false);
}

static void run_variant(const variant *v, uint64_t n, bench_counter_fn allocs,
                        const char *suffix) {
    bench_result r;
    bench_vm_loop(v->t, v->fn_id, v->expect_code, v->check_add, v->arena, v->reset, n, allocs,
                  &r);
    char key[128];
    snprintf(key, sizeof key, "%s%s", v->key, suffix);
    bench_emit(key, allocs ? r.allocs_per_call : r.ns_per_call, r.bad);
}

static int mode_dispatch(setup *s, uint64_t n, int rot, const char *only) {
    if (only) {
        int kept = 0;
        for (int i = 0; i < s->nv; i++)
            if (strcmp(s->v[i].key, only) == 0) s->v[kept++] = s->v[i];
        if (!kept) {
            fprintf(stderr, "bench: no variant named %s\n", only);
            return 2;
        }
        s->nv = kept;
    }
    /* warm up every variant (JIT, caches) before timing any of them */
    for (int i = 0; i < s->nv; i++) {
        bench_result r;
        const variant *v = &s->v[i];
        bench_vm_loop(v->t, v->fn_id, v->expect_code, v->check_add, v->arena, v->reset,
                      n / 20 + 1000, NULL, &r);
    }
    for (int i = 0; i < s->nv; i++) run_variant(&s->v[(i + rot) % s->nv], n, NULL, "");
    return 0;
}

static int mode_allocs(setup *s, uint64_t n) {
    bench_counter_fn counter = bench_alloc_counter();
    if (!counter) {
        fprintf(stderr, "bench: allocs mode needs LD_PRELOAD=alloc_count.so\n");
        return 2;
    }
    for (int i = 0; i < s->nv; i++) {
        bench_result r;
        const variant *v = &s->v[i];
        bench_vm_loop(v->t, v->fn_id, v->expect_code, v->check_add, v->arena, v->reset, 1000,
                      NULL, &r); /* warm-up: first-call lazies are not per-call costs */
        run_variant(v, n, counter, ".allocs");
    }
    return 0;
}

static int mode_gc(setup *s, uint64_t n) {
    struct {
        const char *key;
        const bench_target *t;
        uint32_t fn;
    } rows[] = {
        {"c.add.null.gc_bytes", &s->null_inst, BENCH_FN_ADD},
        {"c.noop.null.gc_bytes", &s->null_inst, BENCH_FN_NOOP},
        {"floor.add.gc_bytes", &s->floor, BENCH_FN_ADD},
        {"floor.noop.gc_bytes", &s->floor, BENCH_FN_NOOP},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        bench_gc_bytes_per_call(rows[i].t, rows[i].fn, 1000); /* warm-up */
        bench_emit(rows[i].key, bench_gc_bytes_per_call(rows[i].t, rows[i].fn, n), 0);
    }
    return 0;
}

static int mode_threads(const char *dir, uint64_t n, int rot) {
    pp_runtime *rt = bench_runtime_new(false);
    uint64_t a = bench_load(rt, dir, "bench");
    uint64_t b = bench_load(rt, dir, "bench_second");
    bench_target ta = bench_target_of(rt, bench_iface(rt, a), false);
    bench_target tb = bench_target_of(rt, bench_iface(rt, b), false);
    const bench_target *one[1] = {&ta};
    const bench_target *two_bundles[2] = {&ta, &tb};
    const bench_target *same_bundle[2] = {&ta, &ta};
    struct {
        const char *key;
        const bench_target *const *targets;
        int nthreads;
    } rows[] = {
        {"threads.1", one, 1},
        {"threads.2x2", two_bundles, 2},
        {"threads.2x1", same_bundle, 2},
    };
    enum { NROWS = sizeof rows / sizeof rows[0] };
    uint64_t bad;
    for (int i = 0; i < NROWS; i++) bench_threads(rows[i].targets, rows[i].nthreads, n / 20 + 1000, &bad);
    for (int i = 0; i < NROWS; i++) {
        int k = (i + rot) % NROWS;
        double ns = bench_threads(rows[k].targets, rows[k].nthreads, n, &bad);
        if (ns < 0) bench_die("pthread_create", NULL);
        bench_emit(rows[k].key, ns, bad);
    }
    pp_runtime_free(rt);
    return 0;
}

/* ── what a call_timeout costs ─────────────────────────────────────────────── */

enum { SPIN_ITERATIONS = 1000000 };

/* ns per call of spin(SPIN_ITERATIONS), n calls; a wrong result counts as bad. */
static double spin_ns(const bench_target *t, uint64_t n, uint64_t *bad) {
    uint32_t args[1] = {SPIN_ITERATIONS};
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        uint32_t out = 0;
        AbiError err;
        memset(&err, 0, sizeof err);
        t->call(t->loader_data, t->instance, BENCH_FN_SPIN, args, &out, NULL, &err);
        if (err.code != 0 || out == 0) ++*bad;
    }
    return (double)(bench_now_ns() - t0) / (double)n;
}

static int mode_limits(const char *dir, uint64_t n, int rot) {
    pp_runtime *free_rt = bench_runtime_new(false);
    pp_runtime *limited_rt = bench_runtime_limited(60ull * 1000 * 1000 * 1000);
    bench_target unlimited = bench_target_of(
        free_rt, bench_iface(free_rt, bench_load(free_rt, dir, "bench")), false);
    bench_target limited = bench_target_of(
        limited_rt, bench_iface(limited_rt, bench_load(limited_rt, dir, "bench")), false);
    const bench_target *targets[2] = {&unlimited, &limited};
    static const char *const names[2] = {"unlimited", "limited"};
    uint64_t spins = n / 50000 + 5;
    for (int i = 0; i < 2; i++) { /* warm up both (JIT, caches) */
        bench_result r;
        uint64_t bad = 0;
        bench_vm_loop(targets[i], BENCH_FN_ADD, 0, 1, NULL, NULL, n / 20 + 1000, NULL, &r);
        spin_ns(targets[i], 3, &bad);
    }
    for (int j = 0; j < 2; j++) {
        int i = (j + rot) % 2;
        char key[64];
        bench_result r;
        bench_vm_loop(targets[i], BENCH_FN_ADD, 0, 1, NULL, NULL, n, NULL, &r);
        snprintf(key, sizeof key, "limits.add.%s", names[i]);
        bench_emit(key, r.ns_per_call, r.bad);
        uint64_t bad = 0;
        double ns = spin_ns(targets[i], spins, &bad);
        snprintf(key, sizeof key, "limits.spin.%s", names[i]);
        bench_emit(key, ns / 1e6, bad);
    }
    pp_runtime_free(free_rt);
    pp_runtime_free(limited_rt);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR dispatch|allocs|gc|threads|limits N [ROT]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const char *mode = argv[2];
    uint64_t n = strtoull(argv[3], NULL, 10);
    int rot = argc > 4 ? atoi(argv[4]) : 0;
    if (strcmp(mode, "threads") == 0) return mode_threads(dir, n, rot);
    if (strcmp(mode, "limits") == 0) return mode_limits(dir, n, rot);
    setup s;
    setup_init(&s, dir);
    int rc;
    if (strcmp(mode, "dispatch") == 0)
        rc = mode_dispatch(&s, n, rot, argc > 5 ? argv[5] : NULL);
    else if (strcmp(mode, "allocs") == 0)
        rc = mode_allocs(&s, n);
    else if (strcmp(mode, "gc") == 0)
        rc = mode_gc(&s, n);
    else {
        fprintf(stderr, "bench: unknown mode %s\n", mode);
        rc = 2;
    }
    pp_arena_free(s.arena);
    pp_runtime_free(s.rt);
    return rc;
}
