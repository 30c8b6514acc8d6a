/*
 * native_stress.c — a C host (public headers only) calls a native bundle from several
 * threads while the main thread hot-reloads it between two builds, and unloads and
 * loads it again, for a number of rounds.  A Lua bundle sits beside it: one thread
 * calls the native function that calls into the Lua bundle (C -> Lua).
 *
 *   native_stress --plugins <dir with plug.so, plug_v3.so> --work <dir> [--rounds N]
 *
 * Threads:
 *   checked  pp_call_handle(tag): the tag of a loaded build (1 or 3), or StaleHandle
 *            while the bundle is unloaded (the thread then finds the contract again);
 *   raw      the interface pointer and the function pointer it resolved at the start:
 *            always the first build's answers (its library is never closed before the
 *            runtime is freed), even while the bundle is unloaded;
 *   mixed    pp_call_handle(lua_add): 40 + 2 through the Lua bundle, or StaleHandle.
 * Every other outcome is a problem ("problem: ..." lines).  The last line is a summary
 * "rounds=.. checked=.. raw=.. mixed=.. stale=.. problems=..".  Exit status 0 without
 * problems, 1 with, 2 on a setup error.  The tests run it plain, under ASan+UBSan and
 * under valgrind (tests/test_native_c.py).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "polyplug.h"
#include "driver_util.h"

static pp_runtime *g_rt;
static atomic_bool g_stop;
static _Atomic unsigned long long g_checked, g_raw, g_mixed, g_stale;
static char g_dir[2048], g_lua_dir[2048], g_plugins[2048];
static uint64_t g_math_id, g_bundle_id;

static void die(const char *what) {
    fprintf(stderr, "native_stress: %s\n", what);
    exit(2);
}

static uint64_t fnv(const char *s) { return pp_fnv1a64((const uint8_t *)s, strlen(s)); }

static StringView sv(const char *s) {
    StringView v = {(const uint8_t *)s, strlen(s)};
    return v;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) die("cannot write a file");
}

/* Put plugin `variant` in place as a new file (as a build writes one). */
static void install(const char *variant) {
    char src[4200], tmp[4200], dst[4200];
    snprintf(src, sizeof src, "%s/%s.so", g_plugins, variant);
    snprintf(tmp, sizeof tmp, "%s/libplug.so.tmp", g_dir);
    snprintf(dst, sizeof dst, "%s/libplug.so", g_dir);
    FILE *in = fopen(src, "rb"), *out = fopen(tmp, "wb");
    if (!in || !out) die("cannot copy a plugin");
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) die("cannot copy a plugin");
    fclose(in);
    if (fclose(out) != 0 || rename(tmp, dst) != 0) die("cannot copy a plugin");
}

static bool find(uint64_t cid, GuestContractHandle *h) {
    return pp_registry_find(g_rt, cid, 1, h, NULL) == PP_OK;
}

/* A thread of checked calls: fn `fn` with `args` through the contract's handle must
 * answer one of `expect` (or StaleHandle while the bundle is unloaded, after which the
 * thread finds the contract again).  `count` counts the good answers. */
typedef struct checked_job {
    const char *what;
    uint32_t fn;
    uint32_t args[2];
    uint32_t expect[2];
    _Atomic unsigned long long *count;
} checked_job;

static void *checked(void *arg) {
    const checked_job *job = arg;
    GuestContractHandle h = {UINT32_MAX, 0};
    while (!atomic_load(&g_stop)) {
        if (h.index == UINT32_MAX && !find(g_math_id, &h)) continue;
        uint32_t out = 0;
        AbiError err;
        uint32_t code = pp_call_handle(g_rt, h.index, h.generation, NULL, 0, job->fn,
                                       job->args, &out, NULL, &err);
        if (code == AbiErrorCode_StaleHandle) {
            atomic_fetch_add(&g_stale, 1);
            h.index = UINT32_MAX;
        } else if (code != 0 || (out != job->expect[0] && out != job->expect[1])) {
            problem("%s call: code %u out %u", job->what, code, out);
        } else {
            atomic_fetch_add(job->count, 1);
        }
    }
    return NULL;
}

static void *raw(void *arg) {
    const GuestContractInterface *iface = arg;
    NativeGuestFn add;
    memcpy(&add, &iface->dispatch.native.functions[0], sizeof add);
    GuestContractInstance none = {NULL, 0};
    while (!atomic_load(&g_stop)) {
        uint32_t args[2] = {20, 22}, sum = 0, tag = 0;
        AbiError err = {0, {NULL, 0}};
        add(none, args, &sum, &err);
        pp_call(iface, NULL, 0, 1, NULL, &tag, NULL, &err);
        if (sum != 42 || tag != 1 || err.code != 0)
            problem("raw call: sum %u tag %u code %u", sum, tag, err.code);
        else
            atomic_fetch_add(&g_raw, 1);
    }
    return NULL;
}

static void flow(int32_t st, const pp_error *err, const char *what) {
    if (st != PP_OK) problem("%s: %s", what, err->message);
}

static const char LUA[] =
    "local pg = require('polyplug_guest')\n"
    "local function add(_, a, o)\n"
    "    local x = pg.ptr(a, 'const uint32_t *')\n"
    "    pg.ptr(o, 'uint32_t *')[0] = x[0] + x[1]\n"
    "end\n"
    "function polyplug_init()\n"
    "    return { ['mixed.lua'] = { factory = function() return {} end,\n"
    "                               functions = { [0] = add } } }, { code = 0 }\n"
    "end\n";

int main(int argc, char **argv) {
    const char *work = NULL;
    int rounds = 60;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--plugins") == 0)
            snprintf(g_plugins, sizeof g_plugins, "%s", argv[i + 1]);
        else if (strcmp(argv[i], "--work") == 0)
            work = argv[i + 1];
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
        else
            die("usage: native_stress --plugins DIR --work DIR [--rounds N]");
    }
    if (!work || !g_plugins[0]) die("usage: native_stress --plugins DIR --work DIR [--rounds N]");
    snprintf(g_dir, sizeof g_dir, "%s/nstress", work);
    snprintf(g_lua_dir, sizeof g_lua_dir, "%s/mixed", work);
    mkdir(work, 0777);
    if ((mkdir(g_dir, 0777) && errno != EEXIST) || (mkdir(g_lua_dir, 0777) && errno != EEXIST))
        die("cannot make the bundle directories");
    g_bundle_id = fnv("nstress");
    g_math_id = fnv("guest_contract:native.math@1");
    char path[4200], text[1024];
    snprintf(text, sizeof text,
             "name = \"nstress\"\nid = %llu\nversion = \"1.0.0\"\nloader = \"native\"\n"
             "file = \"libplug.so\"\nprovides = [\"native.math@1\"]\n\n[function_count]\n"
             "\"native.math@1\" = 9\n",
             (unsigned long long)g_bundle_id);
    snprintf(path, sizeof path, "%s/manifest.toml", g_dir);
    write_text(path, text);
    snprintf(text, sizeof text,
             "name = \"mixed\"\nid = %llu\nloader = \"lua\"\nfile = \"bundle.lua\"\n",
             (unsigned long long)fnv("mixed"));
    snprintf(path, sizeof path, "%s/manifest.toml", g_lua_dir);
    write_text(path, text);
    snprintf(path, sizeof path, "%s/bundle.lua", g_lua_dir);
    write_text(path, LUA);
    install("plug");

    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hot_reload_enabled = true;
    cfg.log_max_level = LogLevel_Error;
    pp_error err;
    pp_error_clear(&err);
    g_rt = pp_runtime_new(&cfg, &err);
    if (!g_rt) die(err.message);
    pp_loader *lua = pp_lua_loader_new(NULL), *native = pp_native_loader_new(NULL);
    if (pp_runtime_add_loader(g_rt, lua, &err) || pp_runtime_add_loader(g_rt, native, &err))
        die(err.message);
    pp_loader_release(lua);
    pp_loader_release(native);
    if (pp_runtime_load_path(g_rt, sv(g_lua_dir), &err) ||
        pp_runtime_load_path(g_rt, sv(g_dir), &err))
        die(err.message);
    GuestContractHandle h;
    const GuestContractInterface *first = NULL;
    if (!find(g_math_id, &h) || pp_registry_resolve(g_rt, h, &first, &err)) die("no native.math");

    /* tag (fn 1) of build 1 or 3; lua_add (fn 5): 40 + 2 through the Lua bundle */
    checked_job tags = {"checked", 1, {0, 0}, {1, 3}, &g_checked};
    checked_job mixed = {"mixed", 5, {40, 2}, {42, 42}, &g_mixed};
    pthread_t threads[3];
    pthread_create(&threads[0], NULL, checked, &tags);
    pthread_create(&threads[1], NULL, raw, (void *)first);
    pthread_create(&threads[2], NULL, checked, &mixed);
    struct timespec pause = {0, 2000000};
    int done = 0;
    for (; done < rounds; done++) {
        install(done % 2 == 0 ? "plug_v3" : "plug");
        pp_error_clear(&err);
        if (done % 10 == 9) {
            flow(pp_runtime_unload(g_rt, g_bundle_id, &err), &err, "unload");
            nanosleep(&pause, NULL);
            flow(pp_runtime_load_path(g_rt, sv(g_dir), &err), &err, "load");
        } else {
            flow(pp_runtime_reload_path(g_rt, sv(g_dir), &err), &err, "reload");
        }
        nanosleep(&pause, NULL);
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < 3; i++) pthread_join(threads[i], NULL);
    pp_runtime_free(g_rt);
    printf("rounds=%d checked=%llu raw=%llu mixed=%llu stale=%llu problems=%u\n", done,
           (unsigned long long)g_checked, (unsigned long long)g_raw,
           (unsigned long long)g_mixed, (unsigned long long)g_stale, atomic_load(&g_problems));
    return atomic_load(&g_problems) ? 1 : 0;
}
