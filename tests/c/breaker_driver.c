/*
 * breaker_driver.c — the C reproductions of a fresh-eyes review of the lifecycle work
 * (issue 11), kept as regression scenarios: tests/test_lifecycle_c.py runs each under
 * ASan+UBSan with a hard timeout.  Each scenario describes the bug it found (all
 * fixed now) and prints what it saw.
 *
 *   breaker_driver --work <dir> --scenario <name> [--iterations N]
 *
 *   free-race-error   a call that fails is the last one in a retired VM; pp_runtime_free
 *                     on another thread sees open_vms == 0 and frees the runtime and the
 *                     bundle record while the failing call still reports (report(b, ..)
 *                     after vm_leave in ppi_lua_vm_call) -> heap-use-after-free
 *   free-race-create  the same through create_guest_instance: vm_leave closes the VM,
 *                     then host_create_guest_instance counts the instance in rt->reg
 *   retired-runs      after pp_runtime_unload returned, calls through an interface
 *                     pointer kept from before keep succeeding while other calls keep
 *                     the retired VM busy (vm_enter checks b->L, not b->retired)
 *   retired-one-call  the same with one call: a caller that starts after unload returned
 *                     and sleeps on the VM lock is woken by the busy caller's release and
 *                     takes the lock before that caller's reap (pp_lua_call.c:175-177), so
 *                     it finds b->L still set and runs (most runs)
 *   slot-reuse        (held up) checked calls through freshly found handles and raw calls
 *                     through resolved pointers, while another thread unloads bundle X
 *                     and loads Y into the same registry slot, over and over: every
 *                     answer must come from the handle's own bundle or be StaleHandle
 *   finalizer-reload  a guest whose __gc finalizer reloads its own bundle through
 *                     HostApi.reload_bundle (the C host's path hook calls
 *                     pp_runtime_reload): each retired VM is closed inside the
 *                     ppi_ops_unlock of the reload its predecessor's finalizer started,
 *                     so the C stack grows by one reload per generation until it
 *                     overflows
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "polyplug.h"
#include "driver_util.h"

static char g_work[900];

/* fn 0: *out = 42; fn 1: spin *args us, then raise a long error; fn 2: spin *args us.
 * The factory spins `factory_us` microseconds. */
static const char LUA[] =
    "local ffi = require('ffi')\n"
    "local pg = require('polyplug_guest')\n"
    "require('abi')\n"
    "local function spin(us) local t = os.clock() + us / 1e6 while os.clock() < t do end end\n"
    "local long = string.rep('x', 3000)\n"
    "factory_us = 0\n"
    "function polyplug_init()\n"
    "  return { ['brk.c'] = { factory = function() spin(factory_us) return {} end,\n"
    "    functions = { [0] = function(_, _, out) pg.ptr(out, 'uint64_t *')[0] = 42 end,\n"
    "      function(_, args) spin(pg.ptr(args, 'const uint32_t *')[0]) error(long) end,\n"
    "      function(_, args) spin(pg.ptr(args, 'const uint32_t *')[0]) end,\n"
    "      function(_, args) factory_us = pg.ptr(args, 'const uint32_t *')[0] end } } }, { code = 0 }\n"
    "end\n";

static char g_dir[1024];
static uint64_t g_id, g_cid;

static bool write_bundle(void) {
    snprintf(g_dir, sizeof g_dir, "%s/brk", g_work);
    mkdir(g_dir, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/bundle.lua", g_dir);
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs(LUA, f);
    fclose(f);
    g_id = fnv1a64("brk");
    g_cid = fnv1a64("guest_contract:brk.c@1");
    return true;
}

static pp_runtime *new_runtime(pp_loader **ld_out) {
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hot_reload_enabled = true;
    cfg.log = quiet_log;
    cfg.log_max_level = LogLevel_Error;
    pp_error e;
    pp_error_clear(&e);
    pp_runtime *rt = pp_runtime_new(&cfg, &e);
    pp_loader *ld = pp_lua_loader_new(NULL);
    if (!rt || !ld || pp_runtime_add_loader(rt, ld, &e) != PP_OK) return NULL;
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.id = g_id;
    m.name = view("brk");
    m.loader = view("lua");
    m.file = view("bundle.lua");
    m.path = view(g_dir);
    m.version_text = view("1.0.0");
    m.version.major = 1;
    pp_source src = {PP_SOURCE_PATH, view(g_dir)};
    if (pp_runtime_load(rt, &m, &src, &e) != PP_OK) {
        fprintf(stderr, "load: %s\n", e.message);
        return NULL;
    }
    *ld_out = ld;
    return rt;
}

static const GuestContractInterface *resolve(pp_runtime *rt) {
    const HostApi *host = pp_runtime_host(rt);
    GuestContractHandle h = host->find_guest_contract(host, g_cid, 1);
    return h.index == UINT32_MAX ? NULL : host->resolve_guest_contract(host, h);
}

static uint32_t raw_call(const GuestContractInterface *iface, uint32_t fn, uint32_t arg,
                         uint64_t *out) {
    AbiError err;
    memset(&err, 0, sizeof err);
    pp_call(iface, NULL, 0, fn, &arg, out, NULL, &err);
    return err.code;
}

/* ── free-race-error / free-race-create ─────────────────────────────────────── */

typedef struct job {
    pp_runtime *rt;
    const GuestContractInterface *iface;
    bool create;
    atomic_bool started;
    uint32_t code;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    atomic_store(&j->started, true);
    if (j->create) {
        const HostApi *host = pp_runtime_host(j->rt);
        GuestContractInstance inst = {NULL, 0};
        host->create_guest_instance(host, j->iface, NULL, &inst);
        j->code = inst.data != NULL;
    } else {
        j->code = raw_call(j->iface, 1, 3000, NULL);
    }
    return NULL;
}

static int scenario_free_race(bool create, int iterations) {
    for (int i = 0; i < iterations; i++) {
        pp_loader *ld = NULL;
        pp_runtime *rt = new_runtime(&ld);
        if (!rt) return 2;
        job j = {rt, resolve(rt), create, false, 99};
        if (create) raw_call(j.iface, 3, 3000, NULL); /* the factory spins 3 ms */
        pthread_t th;
        pthread_create(&th, NULL, run_job, &j);
        while (!atomic_load(&j.started)) sleep_us(20);
        sleep_us(1000); /* the call is inside the VM */
        /* close (the VM is retired, still busy), then free as soon as it is idle: a
         * host that polls close(0) before freeing, as the docs allow */
        while (pp_runtime_close(rt, 0, NULL) != PP_OK) {
        }
        pp_runtime_free(rt);
        pp_loader_release(ld);
        pthread_join(th, NULL);
    }
    printf("free-race-%s: %d iterations, no use-after-free seen\n", create ? "create" : "error",
           iterations);
    return 0;
}

/* ── retired-runs ──────────────────────────────────────────────────────────── */

static atomic_bool g_unloaded, g_stop;
static _Atomic unsigned long g_ok_after, g_stale_after;

static void *busy_caller(void *arg) {
    const GuestContractInterface *iface = arg;
    while (!atomic_load(&g_stop)) {
        bool after = atomic_load(&g_unloaded);
        uint32_t code = raw_call(iface, 2, 3000, NULL); /* > 2 ms: waiters sleep */
        if (after) {
            if (code == 0) atomic_fetch_add(&g_ok_after, 1);
            else atomic_fetch_add(&g_stale_after, 1);
        }
        if (code != 0 && after) break;
    }
    return NULL;
}

static int scenario_retired_runs(int iterations) {
    unsigned long runs_with_success = 0, total_ok = 0;
    double longest = 0;
    for (int i = 0; i < iterations; i++) {
        pp_loader *ld = NULL;
        pp_runtime *rt = new_runtime(&ld);
        if (!rt) return 2;
        const GuestContractInterface *iface = resolve(rt);
        atomic_store(&g_unloaded, false);
        atomic_store(&g_stop, false);
        atomic_store(&g_ok_after, 0);
        atomic_store(&g_stale_after, 0);
        pthread_t th[3];
        for (int t = 0; t < 3; t++) pthread_create(&th[t], NULL, busy_caller, (void *)iface);
        sleep_us(5000);
        pp_error e;
        pp_error_clear(&e);
        if (pp_runtime_unload(rt, g_id, &e) != PP_OK) printf("unload: %s\n", e.message);
        atomic_store(&g_unloaded, true);
        double t0 = now_s();
        /* after unload returned, every call should answer StaleHandle */
        while (now_s() - t0 < 3.0) {
            bool done = true;
            /* each caller stops on its first failure after the unload */
            sleep_us(1000);
            if (atomic_load(&g_stale_after) < 3) done = false;
            if (done) break;
        }
        double lasted = now_s() - t0;
        atomic_store(&g_stop, true);
        for (int t = 0; t < 3; t++) pthread_join(th[t], NULL);
        unsigned long ok = atomic_load(&g_ok_after);
        if (ok) runs_with_success++;
        total_ok += ok;
        if (ok && lasted > longest) longest = lasted;
        pp_runtime_free(rt);
        pp_loader_release(ld);
    }
    printf("retired-runs: %d unloads; in %lu of them calls through the unloaded bundle's "
           "interface still succeeded after unload returned (%lu successful calls in all; "
           "the retired VM stayed in use for up to %.3f s)\n",
           iterations, runs_with_success, total_ok, longest);
    return runs_with_success ? 1 : 0;
}

typedef struct late_call {
    const GuestContractInterface *iface;
    uint32_t fn, arg, code;
    uint64_t out;
} late_call;

static void *run_late(void *arg) {
    late_call *c = arg;
    c->code = raw_call(c->iface, c->fn, c->arg, &c->out);
    return NULL;
}

static int scenario_retired_one_call(int iterations) {
    int ran = 0;
    for (int i = 0; i < iterations; i++) {
        pp_loader *ld = NULL;
        pp_runtime *rt = new_runtime(&ld);
        if (!rt) return 2;
        const GuestContractInterface *iface = resolve(rt);
        late_call busy = {iface, 2, 300000, 99, 0}, late = {iface, 0, 0, 99, 0};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, run_late, &busy); /* inside the VM for 300 ms */
        sleep_us(50000);
        pp_error e;
        pp_error_clear(&e);
        int32_t st = pp_runtime_unload(rt, g_id, &e);
        pthread_create(&t2, NULL, run_late, &late); /* starts after unload returned */
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        if (st != PP_OK) printf("unload: %s\n", e.message);
        if (late.code == 0) ran++;
        pp_runtime_free(rt);
        pp_loader_release(ld);
    }
    printf("retired-one-call: in %d of %d runs a call started after pp_runtime_unload returned "
           "ran in the unloaded bundle (code 0, out 42) instead of answering StaleHandle\n",
           ran, iterations);
    return ran ? 1 : 0;
}

/* ── slot-reuse ────────────────────────────────────────────────────────────── */

typedef struct tagged {
    char name[16], dir[1024];
    uint64_t id, cid;
    unsigned tag;
} tagged;

static tagged g_tb[2];
static _Atomic unsigned long g_wrong, g_answers, g_stales;

static bool write_tagged(tagged *t, const char *name, unsigned tag) {
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dir, sizeof t->dir, "%s/%s", g_work, name);
    mkdir(t->dir, 0755);
    char path[1100], canon[64], lua[1024];
    snprintf(path, sizeof path, "%s/bundle.lua", t->dir);
    snprintf(lua, sizeof lua,
             "local pg = require('polyplug_guest')\n"
             "function polyplug_init()\n"
             "  return { ['%s.c'] = { factory = function() return {} end,\n"
             "    functions = { [0] = function(_, _, out) pg.ptr(out, 'uint64_t *')[0] = %u end } } }, { code = 0 }\n"
             "end\n", name, tag);
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs(lua, f);
    fclose(f);
    snprintf(canon, sizeof canon, "guest_contract:%s.c@1", name);
    t->id = fnv1a64(name);
    t->cid = fnv1a64(canon);
    t->tag = tag;
    return true;
}

static int32_t load_tagged(pp_runtime *rt, const tagged *t) {
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.id = t->id;
    m.name = view(t->name);
    m.loader = view("lua");
    m.file = view("bundle.lua");
    m.path = view(t->dir);
    m.version_text = view("1.0.0");
    m.version.major = 1;
    pp_source src = {PP_SOURCE_PATH, view(t->dir)};
    pp_error e;
    pp_error_clear(&e);
    return pp_runtime_load(rt, &m, &src, &e);
}

static pp_runtime *g_srt;

static void *slot_caller(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    const HostApi *host = pp_runtime_host(g_srt);
    while (!atomic_load(&g_stop)) {
        const tagged *t = &g_tb[rand_r(&seed) % 2];
        GuestContractHandle h = host->find_guest_contract(host, t->cid, 1);
        if (h.index == UINT32_MAX) continue;
        for (int k = 0; k < 20; k++) {
            uint64_t out = 0;
            AbiError err;
            uint32_t code;
            if (k & 1) {
                code = pp_call_handle(g_srt, h.index, h.generation, NULL, 0, 0, NULL, &out, NULL,
                                      &err);
            } else {
                const GuestContractInterface *iface = host->resolve_guest_contract(host, h);
                if (!iface) {
                    atomic_fetch_add(&g_stales, 1);
                    continue;
                }
                memset(&err, 0, sizeof err);
                pp_call(iface, NULL, 0, 0, NULL, &out, NULL, &err);
                code = err.code;
            }
            if (code == 0) {
                atomic_fetch_add(&g_answers, 1);
                if (out != t->tag) atomic_fetch_add(&g_wrong, 1);
            } else if (code == AbiErrorCode_StaleHandle) {
                atomic_fetch_add(&g_stales, 1);
            } else {
                atomic_fetch_add(&g_wrong, 1);
            }
        }
    }
    return NULL;
}

static int scenario_slot_reuse(int seconds) {
    if (!write_tagged(&g_tb[0], "sx", 1) || !write_tagged(&g_tb[1], "sy", 2)) return 2;
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = quiet_log;
    pp_error e;
    pp_error_clear(&e);
    g_srt = pp_runtime_new(&cfg, &e);
    pp_loader *ld = pp_lua_loader_new(NULL);
    pp_runtime_add_loader(g_srt, ld, &e);
    if (load_tagged(g_srt, &g_tb[0]) != PP_OK) return 2;
    atomic_store(&g_stop, false);
    pthread_t th[3];
    for (int t = 0; t < 3; t++) pthread_create(&th[t], NULL, slot_caller, (void *)(uintptr_t)(t + 1));
    double end = now_s() + seconds;
    unsigned long swaps = 0;
    int cur = 0;
    while (now_s() < end) {
        pp_runtime_unload(g_srt, g_tb[cur].id, &e);
        cur ^= 1;
        if (load_tagged(g_srt, &g_tb[cur]) != PP_OK) printf("load failed\n");
        swaps++;
    }
    atomic_store(&g_stop, true);
    for (int t = 0; t < 3; t++) pthread_join(th[t], NULL);
    pp_runtime_free(g_srt);
    pp_loader_release(ld);
    printf("slot-reuse: %lu swaps, %lu answers, %lu stale, %lu wrong (another bundle answered "
           "or an unexpected code)\n",
           swaps, atomic_load(&g_answers), atomic_load(&g_stales), atomic_load(&g_wrong));
    return atomic_load(&g_wrong) ? 1 : 0;
}

/* ── finalizer-reload ──────────────────────────────────────────────────────── */

static const char FIN_LUA[] =
    "local ffi = require('ffi')\n"
    "require('abi')\n"
    "keep = nil\n"
    "function polyplug_init(h)\n"
    "  local host = ffi.cast('HostApi *', ffi.cast('uintptr_t', h))\n"
    "  keep = ffi.gc(ffi.new('int[1]'), function()\n"
    "    local err = ffi.new('AbiError[1]')\n"
    "    host.reload_bundle(host, 'fin', 3, err)\n"
    "  end)\n"
    "  return { ['fin.c'] = { factory = function() return {} end,\n"
    "    functions = { [0] = function() end } } }, { code = 0 }\n"
    "end\n";

static char g_fin_dir[1024];
static _Atomic unsigned long g_reloads;
static int g_depth, g_max_depth;

static void fin_manifest(pp_manifest *m) {
    memset(m, 0, sizeof *m);
    m->id = fnv1a64("fin");
    m->name = view("fin");
    m->loader = view("lua");
    m->file = view("bundle.lua");
    m->path = view(g_fin_dir);
    m->version_text = view("1.0.0");
    m->version.major = 1;
}

static int32_t fin_reload_hook(void *ud, pp_runtime *rt, StringView path, pp_error *err) {
    (void)ud, (void)path;
    pp_manifest m;
    fin_manifest(&m);
    g_depth++;
    if (g_depth > g_max_depth) g_max_depth = g_depth;
    int32_t st = pp_runtime_reload(rt, &m, err);
    g_depth--;
    if (st == PP_OK) atomic_fetch_add(&g_reloads, 1);
    return st;
}

static int scenario_finalizer_reload(int iterations) {
    snprintf(g_fin_dir, sizeof g_fin_dir, "%s/fin", g_work);
    mkdir(g_fin_dir, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/bundle.lua", g_fin_dir);
    FILE *f = fopen(path, "wb");
    if (!f) return 2;
    fputs(FIN_LUA, f);
    fclose(f);
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hot_reload_enabled = true;
    cfg.log = quiet_log;
    cfg.log_max_level = LogLevel_Error;
    pp_error e;
    pp_error_clear(&e);
    pp_runtime *rt = pp_runtime_new(&cfg, &e);
    pp_loader *ld = pp_lua_loader_new(NULL);
    pp_runtime_add_loader(rt, ld, &e);
    pp_runtime_set_path_hooks(rt, NULL, fin_reload_hook, NULL);
    pp_manifest m;
    fin_manifest(&m);
    pp_source src = {PP_SOURCE_PATH, view(g_fin_dir)};
    if (pp_runtime_load(rt, &m, &src, &e) != PP_OK) {
        fprintf(stderr, "load: %s\n", e.message);
        return 2;
    }
    (void)iterations;
    int32_t st = pp_runtime_reload(rt, &m, &e);
    printf("finalizer-reload: first reload %s; %lu reloads started by finalizers, path hook "
           "nested %d deep\n",
           pp_status_name(st), atomic_load(&g_reloads), g_max_depth);
    pp_runtime_free(rt);
    pp_loader_release(ld);
    return 0;
}

int main(int argc, char **argv) {
    const char *scenario = NULL;
    int iterations = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--work") == 0)
            snprintf(g_work, sizeof g_work, "%s", argv[i + 1]);
        else if (strcmp(argv[i], "--scenario") == 0)
            scenario = argv[i + 1];
        else if (strcmp(argv[i], "--iterations") == 0)
            iterations = atoi(argv[i + 1]);
    }
    if (!g_work[0] || !scenario) {
        fprintf(stderr, "usage: breaker --work DIR --scenario NAME [--iterations N]\n");
        return 2;
    }
    mkdir(g_work, 0755);
    if (!write_bundle()) return 2;
    if (strcmp(scenario, "free-race-error") == 0) return scenario_free_race(false, iterations);
    if (strcmp(scenario, "free-race-create") == 0) return scenario_free_race(true, iterations);
    if (strcmp(scenario, "retired-runs") == 0) return scenario_retired_runs(iterations);
    if (strcmp(scenario, "retired-one-call") == 0) return scenario_retired_one_call(iterations);
    if (strcmp(scenario, "slot-reuse") == 0) return scenario_slot_reuse(iterations);
    if (strcmp(scenario, "finalizer-reload") == 0) return scenario_finalizer_reload(iterations);
    fprintf(stderr, "unknown scenario %s\n", scenario);
    return 2;
}
