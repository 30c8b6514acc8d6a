/*
 * bench_load.c — load and reload figures for our host, from C (pp_runtime_load /
 * pp_runtime_reload, no Python in the process).
 *
 *   bench_load DIR load COUNT     COUNT bundles (the bench bundle under COUNT names)
 *                                 into a fresh runtime: ms and RSS KiB per bundle;
 *                                 then ms per pp_runtime_unload of each, in load order
 *   bench_load DIR grow FEW MANY  MANY - FEW bundles into a runtime (RSS KiB per
 *                                 bundle), then FEW more into it and FEW into a fresh
 *                                 runtime, one load each in turns: the median ms of the
 *                                 loads into each, timed alike (whatever else the
 *                                 machine does falls on both); then ms per unload of
 *                                 the MANY
 *   bench_load GEN loadpath COUNT GEN/bench_0000 ... by path (pp_runtime_load_path:
 *                                 manifest.toml read, checked and validated in C)
 *   bench_load DIR reload COUNT   COUNT reloads of one bundle: ms per reload and the
 *                                 total RSS growth in KiB
 *   bench_load DIR floor COUNT    the floor: COUNT plain luaL_newstate() +
 *                                 luaL_openlibs() states, ms and RSS KiB per state
 *   bench_load DIR floor-fns COUNT  the same, each state also running
 *                                 DIR/bench_fns.lua (which requires ffi)
 *
 * Run each in a fresh process: RSS deltas are only meaningful from a cold heap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_host.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

static uint64_t check_call(pp_runtime *rt, uint64_t id) {
    bench_target t = bench_target_of(rt, bench_iface(rt, id), false);
    bench_result r;
    bench_vm_loop(&t, BENCH_FN_ADD, 0, 1, NULL, NULL, 10, NULL, &r);
    return r.bad;
}

/* Unload every bundle of `ids`, in that order: ms per unload. */
static double unload_all(pp_runtime *rt, const uint64_t *ids, int count) {
    pp_error err;
    pp_error_clear(&err);
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < count; i++)
        if (pp_runtime_unload(rt, ids[i], &err) != PP_OK) bench_die("pp_runtime_unload", &err);
    return (double)(bench_now_ns() - t0) / 1e6 / count;
}

static int mode_load(const char *dir, int count) {
    pp_runtime *rt = bench_runtime_new(false);
    char (*names)[32] = calloc((size_t)count, sizeof *names);
    uint64_t *ids = calloc((size_t)count, sizeof *ids);
    if (!names || !ids) bench_die("calloc", NULL);
    for (int i = 0; i < count; i++) snprintf(names[i], sizeof names[i], "bench_%04d", i);
    long rss0 = bench_rss_kib();
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < count; i++) ids[i] = bench_load(rt, dir, names[i]);
    uint64_t t1 = bench_now_ns();
    long rss1 = bench_rss_kib();
    uint64_t bad = check_call(rt, ids[0]) + check_call(rt, ids[count - 1]);
    bench_emit("c.load.ms", (double)(t1 - t0) / 1e6 / count, bad);
    bench_emit("c.load.rss_kib", (double)(rss1 - rss0) / count, bad);
    bench_emit("c.unload.ms", unload_all(rt, ids, count), 0);
    pp_runtime_free(rt);
    free(names);
    free(ids);
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The median of `n` durations in ns, as ms (sorts them). */
static double median_ms(uint64_t *ns, int n) {
    qsort(ns, (size_t)n, sizeof *ns, cmp_u64);
    double mid = n % 2 ? (double)ns[n / 2] : ((double)ns[n / 2 - 1] + (double)ns[n / 2]) / 2;
    return mid / 1e6;
}

static int mode_grow(const char *dir, int few, int many) {
    if (many <= few) bench_die("bench_load grow: MANY must exceed FEW", NULL);
    pp_runtime *small = bench_runtime_new(false), *large = bench_runtime_new(false);
    uint64_t *ids = calloc((size_t)many, sizeof *ids);
    uint64_t *t_small = calloc((size_t)few, sizeof *t_small);
    uint64_t *t_large = calloc((size_t)few, sizeof *t_large);
    if (!ids || !t_small || !t_large) bench_die("calloc", NULL);
    char name[32];
    long rss0 = bench_rss_kib();
    int n = 0;
    for (; n < many - few; n++) {
        snprintf(name, sizeof name, "bench_%05d", n);
        ids[n] = bench_load(large, dir, name);
    }
    long rss1 = bench_rss_kib();
    uint64_t small_last = 0;
    for (int r = 0; r < few; r++, n++) {
        snprintf(name, sizeof name, "bench_%05d", r);
        uint64_t t0 = bench_now_ns();
        small_last = bench_load(small, dir, name);
        uint64_t t1 = bench_now_ns();
        snprintf(name, sizeof name, "bench_%05d", n);
        ids[n] = bench_load(large, dir, name);
        t_small[r] = t1 - t0;
        t_large[r] = bench_now_ns() - t1;
    }
    uint64_t bad = check_call(small, small_last) + check_call(large, ids[0]) +
                   check_call(large, ids[n - 1]);
    bench_emit("c.grow.small.ms", median_ms(t_small, few), bad);
    bench_emit("c.grow.large.ms", median_ms(t_large, few), bad);
    bench_emit("c.grow.rss_kib", (double)(rss1 - rss0) / (many - few), bad);
    bench_emit("c.grow.unload.ms", unload_all(large, ids, n), 0);
    pp_runtime_free(small);
    pp_runtime_free(large);
    free(ids);
    free(t_small);
    free(t_large);
    return 0;
}

static int mode_loadpath(const char *gen, int count) {
    pp_runtime *rt = bench_runtime_new(false);
    char (*paths)[4096] = calloc((size_t)count, sizeof *paths);
    if (!paths) bench_die("calloc", NULL);
    for (int i = 0; i < count; i++) snprintf(paths[i], sizeof paths[i], "%s/bench_%04d", gen, i);
    pp_error err;
    pp_error_clear(&err);
    long rss0 = bench_rss_kib();
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < count; i++) {
        StringView p = {(const uint8_t *)paths[i], strlen(paths[i])};
        if (pp_runtime_load_path(rt, p, &err) != PP_OK) bench_die("pp_runtime_load_path", &err);
    }
    uint64_t t1 = bench_now_ns();
    long rss1 = bench_rss_kib();
    char name[32];
    snprintf(name, sizeof name, "bench_%04d", count - 1);
    uint64_t bad = check_call(rt, pp_fnv1a64((const uint8_t *)"bench_0000", 10)) +
                   check_call(rt, pp_fnv1a64((const uint8_t *)name, strlen(name)));
    bench_emit("c.load.path.ms", (double)(t1 - t0) / 1e6 / count, bad);
    bench_emit("c.load.path.rss_kib", (double)(rss1 - rss0) / count, bad);
    pp_runtime_free(rt);
    free(paths);
    return 0;
}

static int mode_reload(const char *dir, int count) {
    pp_runtime *rt = bench_runtime_new(true);
    uint64_t id = bench_load(rt, dir, "bench");
    uint64_t bad = check_call(rt, id);
    long rss0 = bench_rss_kib();
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < count; i++) bench_reload(rt, dir, "bench");
    uint64_t t1 = bench_now_ns();
    long rss1 = bench_rss_kib();
    bad += check_call(rt, id);
    bench_emit("c.reload.ms", (double)(t1 - t0) / 1e6 / count, bad);
    bench_emit("c.reload.rss_growth_kib", (double)(rss1 - rss0), bad);
    pp_runtime_free(rt);
    return 0;
}

/* COUNT plain states; with `dir`, each also runs DIR/bench_fns.lua (which requires
 * ffi): the least a LuaJIT state holding the bench functions can cost. */
static int mode_floor(const char *dir, int count, const char *key) {
    char path[4096];
    if (dir) snprintf(path, sizeof path, "%s/bench_fns.lua", dir);
    lua_State **states = calloc((size_t)count, sizeof *states);
    if (!states) bench_die("calloc", NULL);
    long rss0 = bench_rss_kib();
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < count; i++) {
        lua_State *L = luaL_newstate();
        if (!L) bench_die("luaL_newstate", NULL);
        luaL_openlibs(L);
        if (dir && (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, 0) != 0)) {
            fprintf(stderr, "bench: floor: %s\n", lua_tostring(L, -1));
            return 2;
        }
        states[i] = L;
    }
    uint64_t t1 = bench_now_ns();
    long rss1 = bench_rss_kib();
    char k[64];
    snprintf(k, sizeof k, "%s.ms", key);
    bench_emit(k, (double)(t1 - t0) / 1e6 / count, 0);
    snprintf(k, sizeof k, "%s.rss_kib", key);
    bench_emit(k, (double)(rss1 - rss0) / count, 0);
    for (int i = 0; i < count; i++) lua_close(states[i]);
    free(states);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR load|loadpath|reload|floor|floor-fns COUNT\n"
                        "       %s DIR grow FEW MANY\n", argv[0], argv[0]);
        return 2;
    }
    int count = atoi(argv[3]);
    if (count < 1) count = 1;
    if (strcmp(argv[2], "load") == 0) return mode_load(argv[1], count);
    if (strcmp(argv[2], "grow") == 0 && argc > 4) return mode_grow(argv[1], count, atoi(argv[4]));
    if (strcmp(argv[2], "loadpath") == 0) return mode_loadpath(argv[1], count);
    if (strcmp(argv[2], "reload") == 0) return mode_reload(argv[1], count);
    if (strcmp(argv[2], "floor") == 0) return mode_floor(NULL, count, "floor.load");
    if (strcmp(argv[2], "floor-fns") == 0) return mode_floor(argv[1], count, "floor.load_fns");
    fprintf(stderr, "bench: unknown mode %s\n", argv[2]);
    return 2;
}
