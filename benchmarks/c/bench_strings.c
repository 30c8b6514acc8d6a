/*
 * bench_strings.c — C → vm.call figures for the string functions of the strings bundle
 * (benchmarks/bundles/strings): what the guest SDK costs without Python.
 *
 *   bench_strings DIR calls N ROT [KEY]   every variant once, N calls each (fewer for
 *                                         the large ones), in an order rotated by ROT;
 *                                         with KEY only that variant (for perf record)
 *
 * Each call goes through the interface's vm.call with a 4 KiB CallArena from
 * pp_arena_new, reset before every call (as pp_call_handle and the Python layer do),
 * and every result is checked.  The floor variants run the same bodies.lua functions
 * in a plain luaL_newstate() + luaL_openlibs() state through the Lua C API, with Lua
 * values instead of memory: push the string, lua_pcall, copy the result out — what
 * a binding such as lupa does below Python.  Results are JSON lines on stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_host.h"
#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

enum { FN_ADD = 0, FN_SLEN = 1, FN_CONST = 2, FN_UPPER = 3, FN_ECHO = 4 };

typedef struct variant {
    const char *key;
    uint32_t fn_id;      /* in the bundle; for the floor, the body to run */
    const char *body;    /* bodies.lua function name (floor) */
    const uint8_t *in;   /* string argument, or NULL for none */
    size_t in_len;
    const uint8_t *want; /* expected string result, or NULL for a u32 result */
    size_t want_len;
    uint32_t want_u32;
    int floor;           /* run through the plain-Lua floor instead of vm.call */
    uint64_t divisor;    /* calls = N / divisor */
} variant;

typedef struct strings_vm {
    const GuestContractInterface *iface;
    CallArena *arena;
    lua_State *floor;    /* bodies.lua's table at stack index 1 */
} strings_vm;

static uint8_t *filled(size_t n, uint8_t lo, uint8_t span) {
    uint8_t *p = malloc(n);
    if (!p) bench_die("malloc", NULL);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(lo + i % span);
    return p;
}

static uint8_t *upper_of(const uint8_t *s, size_t n) {
    uint8_t *p = malloc(n ? n : 1);
    if (!p) bench_die("malloc", NULL);
    for (size_t i = 0; i < n; i++) p[i] = (s[i] >= 'a' && s[i] <= 'z') ? s[i] - 32 : s[i];
    return p;
}

static void load(strings_vm *vm, const char *dir) {
    pp_runtime *rt = bench_runtime_new(false);
    pp_error err;
    pp_error_clear(&err);
    StringView path = {(const uint8_t *)dir, strlen(dir)};
    if (pp_runtime_load_path(rt, path, &err) != PP_OK) bench_die("pp_runtime_load_path", &err);
    static const char key[] = "guest_contract:bench.strings@1";
    GuestContractHandle h;
    if (pp_registry_find(rt, pp_fnv1a64((const uint8_t *)key, sizeof key - 1), 1, &h, &err) !=
        PP_OK)
        bench_die("pp_registry_find", &err);
    if (pp_registry_resolve(rt, h, &vm->iface, &err) != PP_OK)
        bench_die("pp_registry_resolve", &err);
    vm->arena = pp_arena_new(pp_runtime_host(rt), 4096);
    if (!vm->arena) bench_die("pp_arena_new", NULL);

    char file[4096];
    snprintf(file, sizeof file, "%s/bodies.lua", dir);
    lua_State *L = luaL_newstate();
    if (!L) bench_die("luaL_newstate", NULL);
    luaL_openlibs(L);
    if (luaL_loadfile(L, file) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "bench: floor: %s\n", lua_tostring(L, -1));
        exit(2);
    }
    vm->floor = L;
}

/* One call through vm.call; returns 1 when the result is wrong. */
static int call_vm(const strings_vm *vm, const variant *v) {
    StringView arg = {v->in, v->in_len};
    union {
        StringView s;
        uint32_t u;
    } out;
    memset(&out, 0, sizeof out);
    AbiError err;
    pp_arena_reset(vm->arena);
    const VmDispatch *d = &vm->iface->dispatch.vm;
    GuestContractInstance inst = {NULL, 0};
    d->call(d->loader_data, inst, v->fn_id, v->in ? &arg : NULL, &out, vm->arena, &err);
    if (err.code != 0) return 1;
    if (!v->want) return out.u != v->want_u32;
    return out.s.len != v->want_len || memcmp(out.s.ptr, v->want, v->want_len) != 0;
}

/* The same body through the Lua C API with Lua values (the floor). */
static int call_floor(lua_State *L, const variant *v, uint8_t *sink, size_t sink_cap) {
    lua_getfield(L, 1, v->body);
    int nargs = 0;
    if (v->in) {
        lua_pushlstring(L, (const char *)v->in, v->in_len);
        nargs = 1;
    }
    if (lua_pcall(L, nargs, 1, 0) != 0) {
        lua_settop(L, 1);
        return 1;
    }
    int bad;
    if (!v->want) {
        bad = (uint32_t)lua_tonumber(L, -1) != v->want_u32;
    } else {
        size_t n = 0;
        const char *s = lua_tolstring(L, -1, &n);
        if (s && n <= sink_cap) memcpy(sink, s, n); /* the copy a binding makes */
        bad = !s || n != v->want_len || memcmp(sink, v->want, n) != 0;
    }
    lua_settop(L, 1);
    return bad;
}

static uint8_t g_sink[1 << 17];

static double run(const strings_vm *vm, const variant *v, uint64_t n, uint64_t *bad) {
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++)
        *bad += (uint64_t)(v->floor ? call_floor(vm->floor, v, g_sink, sizeof g_sink)
                                    : call_vm(vm, v));
    return (double)(bench_now_ns() - t0) / (double)n;
}

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[2], "calls") != 0) {
        fprintf(stderr, "usage: %s DIR calls N [ROT [KEY]]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    uint64_t n = strtoull(argv[3], NULL, 10);
    int rot = argc > 4 ? atoi(argv[4]) : 0;
    const char *only = argc > 5 ? argv[5] : NULL;

    static const uint8_t hello[] = "hello, world";
    static const uint8_t hello_up[] = "HELLO, WORLD";
    uint8_t *text4k = filled(4096, 'a', 26);
    uint8_t *text4k_up = upper_of(text4k, 4096);
    uint8_t *blob = filled(65536, 0, 255); /* every byte value but 0xff, NULs included */
    variant all[] = {
        {"c.str.slen", FN_SLEN, "slen", hello, 12, NULL, 0, 12, 0, 1},
        {"c.str.const", FN_CONST, "const", NULL, 0, hello, 12, 0, 0, 1},
        {"c.str.upper12", FN_UPPER, "upper", hello, 12, hello_up, 12, 0, 0, 1},
        {"c.str.upper4k", FN_UPPER, "upper", text4k, 4096, text4k_up, 4096, 0, 0, 20},
        {"c.str.echo64k", FN_ECHO, "echo", blob, 65536, blob, 65536, 0, 0, 200},
        {"floor.str.slen", FN_SLEN, "slen", hello, 12, NULL, 0, 12, 1, 1},
        {"floor.str.const", FN_CONST, "const", NULL, 0, hello, 12, 0, 1, 1},
        {"floor.str.upper12", FN_UPPER, "upper", hello, 12, hello_up, 12, 0, 1, 1},
        {"floor.str.upper4k", FN_UPPER, "upper", text4k, 4096, text4k_up, 4096, 0, 1, 20},
        {"floor.str.echo64k", FN_ECHO, "echo", blob, 65536, blob, 65536, 0, 1, 200},
    };
    enum { NV = sizeof all / sizeof all[0] };
    variant v[NV];
    int nv = 0;
    for (int i = 0; i < NV; i++)
        if (!only || strcmp(all[i].key, only) == 0) v[nv++] = all[i];
    if (!nv) {
        fprintf(stderr, "bench: no variant named %s\n", only);
        return 2;
    }

    strings_vm vm;
    load(&vm, dir);
    uint64_t ignored = 0;
    for (int i = 0; i < nv; i++) run(&vm, &v[i], n / v[i].divisor / 20 + 200, &ignored);
    for (int i = 0; i < nv; i++) {
        const variant *x = &v[(i + rot) % nv];
        uint64_t bad = 0;
        double ns = run(&vm, x, n / x->divisor + 1, &bad);
        bench_emit(x->key, ns, bad);
    }
    free(text4k);
    free(text4k_up);
    free(blob);
    return 0;
}
