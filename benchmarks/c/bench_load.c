/*
 * bench_load.c — load and reload figures for our host, from C (pp_runtime_load /
 * pp_runtime_reload, no Python in the process).
 *
 *   bench_load DIR load COUNT     COUNT bundles (the bench bundle under COUNT names)
 *                                 into a fresh runtime: ms and RSS KiB per bundle
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
    pp_runtime_free(rt);
    free(names);
    free(ids);
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
        fprintf(stderr, "usage: %s DIR load|loadpath|reload|floor|floor-fns COUNT\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[3]);
    if (count < 1) count = 1;
    if (strcmp(argv[2], "load") == 0) return mode_load(argv[1], count);
    if (strcmp(argv[2], "loadpath") == 0) return mode_loadpath(argv[1], count);
    if (strcmp(argv[2], "reload") == 0) return mode_reload(argv[1], count);
    if (strcmp(argv[2], "floor") == 0) return mode_floor(NULL, count, "floor.load");
    if (strcmp(argv[2], "floor-fns") == 0) return mode_floor(argv[1], count, "floor.load_fns");
    fprintf(stderr, "bench: unknown mode %s\n", argv[2]);
    return 2;
}
