/*
 * lifecycle_driver.c — lifecycle and concurrency scenarios for a C host, meant to run
 * under AddressSanitizer + UndefinedBehaviorSanitizer (tests/test_lifecycle_c.py).
 * Public headers only (polyplug.h, polyplug_abi.h).
 *
 *   lifecycle_driver --work <dir> --scenario <name> [--seconds S] [--threads N]
 *
 * Scenarios:
 *   stale-interface  a raw vm.call through an interface pointer kept across unload and
 *                    across the reuse of its registry slot answers StaleHandle
 *   close-in-flight  pp_runtime_close waits for a call running in a VM, then frees
 *   close-busy       pp_runtime_close with a short wait fails with RuntimeBusy; the VM
 *                    closes when the call returns; pp_runtime_free is clean
 *   instances-race   calls and instance create/destroy through interface pointers kept
 *                    forever, while another thread unloads, loads and reloads
 *   random           N threads doing random calls, nested calls, instance create and
 *                    destroy, reloads, failing loads, unloads and loads for S seconds,
 *                    then close with calls still running; a watchdog fails the run if
 *                    no operation finishes for 30 s
 *   fork-new-thread  a thread is inside a call when the process forks; in the child a new
 *                    thread (which glibc gives the copied thread's stack, and so its
 *                    thread tag) calls the same bundle: it must wait and time out, not
 *                    pass for the holder and enter the VM in the middle of that call
 *
 * Every outcome is checked against the set of results the scenario allows; anything
 * else is printed as a "problem: ..." line.  The last line is "<scenario> ... problems=N";
 * exit status 0 without problems, 1 with, 2 on a usage or setup error, 3 on a hang.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "polyplug.h"
#include "driver_util.h"

#define MAX_BUNDLES 4
#define MAX_THREADS 16
#define MAX_KEPT 4096

static pp_runtime *g_rt;
static pp_loader *g_loader;
static char g_work[900];
static atomic_bool g_stop;
static _Atomic unsigned long long g_progress; /* operations finished (for the watchdog) */
static _Atomic unsigned long long g_ops[10];  /* per kind of operation */

/* ── bundles ───────────────────────────────────────────────────────────────── */

/* Bundle `name` provides `contract`:
 *   fn 0: *out = tag * 2^40 + version * 4096 + *args   (who answered, which version)
 *   fn 1: args = {iface, arg}: calls fn 0 of that interface, *out = its result, or its
 *         AbiError code (below 2^40: no tag)
 *   fn 2: sets *out (a uint32, when given) to 1, then spins *args microseconds
 *   fn 3: raises an error
 * `broken` makes polyplug_init raise. */
static bool write_bundle(const char *name, const char *contract, int tag, unsigned version,
                         bool broken) {
    char dir[1024], path[1100], lua[4096];
    snprintf(dir, sizeof dir, "%s/%s", g_work, name);
    mkdir(dir, 0755);
    snprintf(lua, sizeof lua,
             "local ffi = require(\"ffi\")\n"
             "local pg = require(\"polyplug_guest\")\n"
             "require(\"abi\")\n"
             "local TAG, V = %d, %u\n"
             "ffi.cdef[[ typedef struct { long s, ns; } lc_ts;\n"
             "           int clock_gettime(int clock, lc_ts *ts); ]]\n"
             "local ts = ffi.new(\"lc_ts\")\n"
             "local function now()\n"
             "    ffi.C.clock_gettime(1, ts)\n"
             "    return tonumber(ts.s) + tonumber(ts.ns) / 1e9\n"
             "end\n"
             "local function answer(_, args, out)\n"
             "    pg.ptr(out, \"uint64_t *\")[0] = TAG * 2^40 + V * 4096 + pg.ptr(args, \"const uint32_t *\")[0]\n"
             "end\n"
             "local function nested(_, args, out)\n"
             "    local a = pg.ptr(args, \"const uint64_t *\")\n"
             "    local iface = ffi.cast(\"const GuestContractInterface *\", a[0])\n"
             "    local arg, res = ffi.new(\"uint32_t[1]\", a[1]), ffi.new(\"uint64_t[1]\")\n"
             "    local err = ffi.new(\"AbiError[1]\")\n"
             "    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new(\"GuestContractInstance\"), 0, arg, res, nil, err)\n"
             "    pg.ptr(out, \"uint64_t *\")[0] = err[0].code == 0 and res[0] or err[0].code\n"
             "end\n"
             "local function spin(_, args, out)\n"
             "    if out ~= 0 then pg.ptr(out, \"volatile uint32_t *\")[0] = 1 end\n"
             "    local t = now() + pg.ptr(args, \"const uint32_t *\")[0] / 1e6\n"
             "    while now() < t do end\n"
             "end\n"
             "local function fail() error(\"boom\") end\n"
             "function polyplug_init()\n"
             "    %s\n"
             "    return { [\"%s\"] = { factory = function() return {} end,\n"
             "        functions = { [0] = answer, nested, spin, fail } } }, { code = 0 }\n"
             "end\n",
             tag, version, broken ? "error('broken on purpose')" : "", contract);
    snprintf(path, sizeof path, "%s/bundle.lua", dir);
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return false;
    bool ok = fputs(lua, f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0;
}

typedef struct bundle {
    char name[64], contract[64], dir[1024];
    uint64_t id, contract_id;
    int tag;
} bundle;

static bundle g_bundles[MAX_BUNDLES];
static int g_nbundles = 3;

static void bundle_init(bundle *b, int i, const char *prefix) {
    snprintf(b->name, sizeof b->name, "%s%d", prefix, i);
    snprintf(b->contract, sizeof b->contract, "%s.c%d", prefix, i);
    snprintf(b->dir, sizeof b->dir, "%s/%s", g_work, b->name);
    char canon[128];
    snprintf(canon, sizeof canon, "guest_contract:%s@1", b->contract);
    b->id = fnv1a64(b->name);
    b->contract_id = fnv1a64(canon);
    b->tag = i + 1;
}

static int32_t load(const bundle *b, pp_error *err) {
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.id = b->id;
    m.name = view(b->name);
    m.loader = view("lua");
    m.file = view("bundle.lua");
    m.path = view(b->dir);
    m.version_text = view("1.0.0");
    m.version.major = 1;
    pp_source src = {PP_SOURCE_PATH, view(b->dir)};
    pp_error_clear(err);
    return pp_runtime_load(g_rt, &m, &src, err);
}

static int32_t reload(const bundle *b, pp_error *err) {
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.id = b->id;
    m.name = view(b->name);
    m.loader = view("lua");
    m.file = view("bundle.lua");
    m.path = view(b->dir);
    m.version_text = view("1.0.0");
    m.version.major = 1;
    pp_error_clear(err);
    return pp_runtime_reload(g_rt, &m, err);
}

static const GuestContractInterface *resolve(const bundle *b) {
    const HostApi *host = pp_runtime_host(g_rt);
    GuestContractHandle h = host->find_guest_contract(host, b->contract_id, 1);
    return h.index == UINT32_MAX ? NULL : host->resolve_guest_contract(host, h);
}

static uint32_t raw_call(const GuestContractInterface *iface, void *instance, uint64_t cid,
                         uint32_t fn, const void *args, uint64_t *out) {
    AbiError err;
    memset(&err, 0, sizeof err);
    pp_call(iface, instance, cid, fn, args, out, NULL, &err);
    return err.code;
}

static bool make_runtime(void) {
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hot_reload_enabled = true;
    cfg.log = quiet_log;
    cfg.log_max_level = LogLevel_Error;
    pp_error e;
    pp_error_clear(&e);
    g_rt = pp_runtime_new(&cfg, &e);
    g_loader = pp_lua_loader_new(NULL);
    if (!g_rt || !g_loader || pp_runtime_add_loader(g_rt, g_loader, &e) != PP_OK) {
        fprintf(stderr, "runtime setup failed: %s\n", e.message);
        return false;
    }
    return true;
}

static void free_runtime(void) {
    pp_runtime_free(g_rt);
    pp_loader_release(g_loader);
    g_rt = NULL;
    g_loader = NULL;
}

/* ── stale-interface ───────────────────────────────────────────────────────── */

static int scenario_stale_interface(void) {
    bundle a, b;
    bundle_init(&a, 0, "stale");
    bundle_init(&b, 1, "stale");
    pp_error e;
    if (!make_runtime() || !write_bundle(a.name, a.contract, a.tag, 1, false) ||
        !write_bundle(b.name, b.contract, b.tag, 1, false) || load(&a, &e) != PP_OK) {
        fprintf(stderr, "setup failed\n");
        return 2;
    }
    const HostApi *host = pp_runtime_host(g_rt);
    GuestContractHandle ha = host->find_guest_contract(host, a.contract_id, 1);
    const GuestContractInterface *iface = host->resolve_guest_contract(host, ha);
    GuestContractInterface copy = *iface;
    uint32_t arg = 5;
    uint64_t out = 0;
    if (raw_call(iface, NULL, 0, 0, &arg, &out) != 0 || out != (1ull << 40) + 4096 + 5)
        problem("call before unload: out %llu", (unsigned long long)out);
    if (pp_runtime_unload(g_rt, a.id, &e) != PP_OK) problem("unload: %s", e.message);
    uint32_t c1 = raw_call(iface, NULL, 0, 0, &arg, &out);
    uint32_t c2 = raw_call(&copy, NULL, 0, 0, &arg, &out);
    if (load(&b, &e) != PP_OK) problem("load b: %s", e.message);
    GuestContractHandle hb = host->find_guest_contract(host, b.contract_id, 1);
    bool reused = hb.index == ha.index && hb.generation != ha.generation;
    out = 0;
    uint32_t c3 = raw_call(iface, NULL, 0, 0, &arg, &out);
    GuestContractInstance inst = {NULL, 0};
    host->create_guest_instance(host, iface, NULL, &inst);
    host->destroy_guest_instance(host, iface, inst);
    printf("after unload: %u, by-value copy: %u, slot reused: %d, old pointer after reuse: %u "
           "(out %llu), instance: %s\n",
           c1, c2, reused, c3, (unsigned long long)out, inst.data ? "made" : "none");
    if (c1 != AbiErrorCode_StaleHandle || c2 != AbiErrorCode_StaleHandle ||
        c3 != AbiErrorCode_StaleHandle || out != 0 || !reused || inst.data)
        problem("a retired interface did not answer StaleHandle");
    free_runtime();
    return 0;
}

/* ── close-in-flight / close-busy ──────────────────────────────────────────── */

typedef struct slow_call {
    const GuestContractInterface *iface;
    uint32_t micros;
    uint32_t code;
    volatile uint32_t inside; /* the guest sets it once it runs */
} slow_call;

static void *run_slow(void *arg) {
    slow_call *s = arg;
    AbiError err;
    memset(&err, 0, sizeof err);
    pp_call(s->iface, NULL, 0, 2, &s->micros, (void *)&s->inside, NULL, &err);
    s->code = err.code;
    return NULL;
}

/* A runtime with one bundle `<prefix>0` loaded; false (said on stderr) if it failed. */
static bool one_bundle_runtime(bundle *a, const char *prefix) {
    bundle_init(a, 0, prefix);
    pp_error e;
    pp_error_clear(&e);
    if (!make_runtime() || !write_bundle(a->name, a->contract, a->tag, 1, false) ||
        load(a, &e) != PP_OK) {
        fprintf(stderr, "setup failed: %s\n", e.message);
        return false;
    }
    return true;
}

static int scenario_close(bool busy) {
    bundle a;
    if (!one_bundle_runtime(&a, "closing")) return 2;
    pp_error e;
    pp_error_clear(&e);
    slow_call s = {resolve(&a), busy ? 1000000u : 300000u, 99, 0};
    pthread_t th;
    pthread_create(&th, NULL, run_slow, &s);
    while (!s.inside) sleep_us(100); /* the call is inside the VM */
    double t0 = now_s();
    int32_t st = pp_runtime_close(g_rt, busy ? 50000000ull : 5000000000ull, &e);
    double waited = now_s() - t0;
    pthread_join(th, NULL);
    uint32_t after = raw_call(s.iface, NULL, 0, 0, &s.micros, NULL);
    printf("close: %s after %.2f s, the call: %u, a call after close: %u\n",
           pp_status_name(st), waited, s.code, after);
    if (busy ? st != PP_ERR_RUNTIME_BUSY : st != PP_OK)
        problem("close returned %s: %s", pp_status_name(st), e.message);
    if (s.code != 0 || after != AbiErrorCode_StaleHandle) problem("unexpected call results");
    free_runtime();
    return 0;
}

/* ── fork-new-thread ───────────────────────────────────────────────────────── */

typedef struct fork_call {
    const GuestContractInterface *iface;
    pthread_t self;
    uint32_t code;
    double seconds;
} fork_call;

static void *run_answer(void *arg) {
    fork_call *f = arg;
    f->self = pthread_self();
    uint32_t x = 1;
    uint64_t out = 0;
    double t0 = now_s();
    f->code = raw_call(f->iface, NULL, 0, 0, &x, &out);
    f->seconds = now_s() - t0;
    return NULL;
}

static int scenario_fork_new_thread(void) {
    bundle a;
    if (!one_bundle_runtime(&a, "forked")) return 2;
    slow_call s = {resolve(&a), 8000000u, 99, 0};
    pthread_t th;
    pthread_create(&th, NULL, run_slow, &s);
    while (!s.inside) sleep_us(100); /* the call is inside the VM */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        fork_call f = {s.iface, 0, 99, 0};
        pthread_t nt;
        pthread_create(&nt, NULL, run_answer, &f);
        pthread_join(nt, NULL);
        printf("child: new thread %s the copied thread's stack, its call: %u after %.1f s\n",
               pthread_equal(f.self, th) ? "got" : "did not get", f.code, f.seconds);
        bool ok = f.code == PP_ABI_CALL_TIMEOUT && f.seconds > 4.5;
        if (!ok) printf("problem: the call in the child should time out after 5 s\n");
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        problem("the child ended with status %d", status);
    pthread_join(th, NULL);
    if (s.code != 0) problem("the parent's call: %u", s.code);
    free_runtime();
    return 0;
}

/* ── instances-race and random: shared workers ─────────────────────────────── */

static _Atomic(const GuestContractInterface *) g_kept[MAX_KEPT];
static _Atomic unsigned g_nkept;

/* Remember an interface pointer forever (C hosts cache them). */
static const GuestContractInterface *keep(const GuestContractInterface *iface) {
    if (!iface) return NULL;
    unsigned n = atomic_load(&g_nkept);
    if (n < MAX_KEPT && atomic_compare_exchange_strong(&g_nkept, &n, n + 1))
        atomic_store(&g_kept[n], iface);
    return iface;
}

static const GuestContractInterface *any_kept(unsigned *seed) {
    unsigned n = atomic_load(&g_nkept);
    return n ? atomic_load(&g_kept[(unsigned)rand_r(seed) % n]) : NULL;
}

static bool allowed_call(uint32_t code) {
    return code == AbiErrorCode_Ok || code == AbiErrorCode_StaleHandle ||
           code == AbiErrorCode_FunctionNotAvailable || code == PP_ABI_CALL_TIMEOUT;
}

static bool answer_ok(uint64_t out, uint32_t arg) {
    uint64_t tag = out >> 40, a = out & 0xFFF;
    return tag >= 1 && tag <= MAX_BUNDLES && a == arg;
}

/* One random operation on the cached interfaces or through the registry. */
static atomic_bool g_closing;

/* A flow's status is fine when it is `ok`, or RuntimeClosed once close began. */
static bool flow_ok(int32_t st, int32_t ok1, int32_t ok2) {
    return st == PP_OK || st == ok1 || st == ok2 ||
           (st == PP_ERR_RUNTIME_CLOSED && atomic_load(&g_closing));
}

static void worker_step(unsigned *seed, bool with_flows) {
    const HostApi *host = pp_runtime_host(g_rt);
    int op = rand_r(seed) % (with_flows ? 10 : 7);
    bundle *b = &g_bundles[rand_r(seed) % g_nbundles];
    pp_error e;
    pp_error_clear(&e);
    switch (op) {
    case 0:
    case 1: { /* a raw call through a kept pointer, or a fresh one */
        const GuestContractInterface *iface = op == 0 ? any_kept(seed) : keep(resolve(b));
        if (!iface) break;
        uint32_t arg = (uint32_t)rand_r(seed) % 4096;
        uint64_t out = 0;
        uint32_t code = raw_call(iface, NULL, 0, 0, &arg, &out);
        if (!allowed_call(code) || (code == 0 && !answer_ok(out, arg)))
            problem("raw call: code %u out %llu arg %u", code, (unsigned long long)out, arg);
        break;
    }
    case 2: { /* a checked call through a handle */
        GuestContractHandle h = host->find_guest_contract(host, b->contract_id, 1);
        if (h.index == UINT32_MAX) break;
        uint32_t arg = 7;
        uint64_t out = 0;
        AbiError err;
        uint32_t code = pp_call_handle(g_rt, h.index, h.generation, NULL, 0, 0, &arg, &out,
                                       NULL, &err);
        if (!allowed_call(code) || (code == 0 && !answer_ok(out, arg)))
            problem("checked call: code %u", code);
        break;
    }
    case 3: { /* a nested call: a guest calls another bundle through a kept pointer */
        const GuestContractInterface *outer = keep(resolve(b));
        const GuestContractInterface *inner = any_kept(seed);
        if (!outer || !inner) break;
        uint64_t args[2] = {(uint64_t)(uintptr_t)inner, 9};
        uint64_t out = 0;
        uint32_t code = raw_call(outer, NULL, 0, 1, args, &out);
        bool inner_ok = out < (1ull << 40) ? allowed_call((uint32_t)out) ||
                                                 out == AbiErrorCode_ReentrantCall
                                           : answer_ok(out, 9);
        if (!allowed_call(code) || (code == 0 && !inner_ok))
            problem("nested call: code %u out %llu", code, (unsigned long long)out);
        break;
    }
    case 4: { /* an instance: create, call, destroy, through a kept pointer */
        const GuestContractInterface *iface = any_kept(seed);
        if (!iface) break;
        GuestContractInstance inst = {NULL, 0};
        host->create_guest_instance(host, iface, NULL, &inst);
        if (inst.data) {
            uint32_t arg = 3;
            uint64_t out = 0;
            uint32_t code = raw_call(iface, inst.data, inst.contract_id, 0, &arg, &out);
            if (!allowed_call(code)) problem("instance call: code %u", code);
            if (rand_r(seed) % 4) host->destroy_guest_instance(host, iface, inst);
        }
        break;
    }
    case 5: { /* a short busy call, to make waiting likely */
        const GuestContractInterface *iface = any_kept(seed);
        uint32_t micros = (uint32_t)rand_r(seed) % 2000;
        if (iface) {
            uint32_t code = raw_call(iface, NULL, 0, 2, &micros, NULL);
            if (!allowed_call(code)) problem("spin call: code %u", code);
        }
        break;
    }
    case 6: { /* a guest error */
        const GuestContractInterface *iface = any_kept(seed);
        if (iface) {
            uint32_t code = raw_call(iface, NULL, 0, 3, NULL, NULL);
            if (code != AbiErrorCode_Generic && !allowed_call(code))
                problem("failing call: code %u", code);
        }
        break;
    }
    case 7: { /* reload (the bundle may be unloaded: BundleNotFound) */
        int32_t st = reload(b, &e);
        if (!flow_ok(st, PP_ERR_BUNDLE_NOT_FOUND, PP_ERR_GENERIC))
            problem("reload %s: %s", b->name, e.message);
        break;
    }
    case 8: { /* unload, then load again */
        int32_t st = pp_runtime_unload(g_rt, b->id, &e);
        if (!flow_ok(st, PP_ERR_BUNDLE_NOT_FOUND, PP_ERR_BUNDLE_NOT_FOUND))
            problem("unload %s: %s", b->name, e.message);
        st = load(b, &e);
        if (!flow_ok(st, PP_ERR_ALREADY_LOADED, PP_ERR_ALREADY_LOADED))
            problem("load %s: %s", b->name, e.message);
        break;
    }
    case 9: { /* a load whose init fails */
        bundle broken;
        bundle_init(&broken, MAX_BUNDLES - 1, "broken");
        if (!flow_ok(load(&broken, &e), PP_ERR_INIT_FAILED, PP_ERR_INIT_FAILED) ||
            e.status == PP_OK)
            problem("broken load: %s", e.message);
        break;
    }
    }
    atomic_fetch_add(&g_progress, 1);
    atomic_fetch_add(&g_ops[op], 1);
}

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    bool flows = (seed & 1) != 0;
    while (!atomic_load(&g_stop)) worker_step(&seed, flows);
    return NULL;
}

static void *watchdog(void *arg) {
    (void)arg;
    unsigned long long last = atomic_load(&g_progress);
    double since = now_s();
    while (!atomic_load(&g_stop)) {
        sleep_us(200000);
        unsigned long long p = atomic_load(&g_progress);
        if (p != last) {
            last = p;
            since = now_s();
        } else if (now_s() - since > 30) {
            printf("HUNG: no operation finished for 30 s\n");
            fflush(stdout);
            _exit(3);
        }
    }
    return NULL;
}

static int scenario_random(double seconds, int nthreads, bool instances_only) {
    if (!make_runtime()) return 2;
    for (int i = 0; i < g_nbundles; i++) {
        bundle_init(&g_bundles[i], i, "rnd");
        pp_error e;
        if (!write_bundle(g_bundles[i].name, g_bundles[i].contract, g_bundles[i].tag, 1, false) ||
            load(&g_bundles[i], &e) != PP_OK) {
            fprintf(stderr, "setup failed\n");
            return 2;
        }
        keep(resolve(&g_bundles[i]));
    }
    bundle broken;
    bundle_init(&broken, MAX_BUNDLES - 1, "broken");
    write_bundle(broken.name, broken.contract, broken.tag, 1, true);
    pthread_t threads[MAX_THREADS], dog;
    atomic_store(&g_stop, false);
    pthread_create(&dog, NULL, watchdog, NULL);
    for (int t = 0; t < nthreads; t++)
        pthread_create(&threads[t], NULL, worker,
                       (void *)(uintptr_t)(instances_only ? 2u * (unsigned)t + 2 : 1000u + (unsigned)t));
    double end = now_s() + seconds;
    unsigned seed = 77;
    while (now_s() < end) {
        if (instances_only) { /* one thread churns: unload + load, or reload */
            worker_step(&seed, true);
        } else {
            sleep_us(10000);
        }
    }
    /* close while the workers are still calling: they get StaleHandle from now on */
    pp_error e;
    pp_error_clear(&e);
    atomic_store(&g_closing, true);
    int32_t st = pp_runtime_close(g_rt, 10000000000ull, &e);
    atomic_store(&g_stop, true);
    for (int t = 0; t < nthreads; t++) pthread_join(threads[t], NULL);
    pthread_join(dog, NULL);
    if (st != PP_OK && st != PP_ERR_RUNTIME_BUSY) problem("close: %s", e.message);
    unsigned long long ops = atomic_load(&g_progress);
    free_runtime();
    printf("operations=%llu (by kind:", ops);
    for (int k = 0; k < 10; k++) printf(" %llu", atomic_load(&g_ops[k]));
    printf(")\n");
    /* a floor, not a speed test: bundles calling each other from several threads wait
     * out the nested-wait bound (5 s) when their calls form a cycle */
    if (ops < (unsigned long long)nthreads)
        problem("only %llu operations in %.1f s", ops, seconds);
    return 0;
}

/* ── main ──────────────────────────────────────────────────────────────────── */

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: lifecycle_driver --work <dir> --scenario <stale-interface|fileset|"
                    "close-in-flight|close-busy|instances-race|random> [--seconds S] "
                    "[--threads N]\n");
    exit(2);
}

/* ── fileset: a bundle loaded from bytes held in memory, not from its directory ── */

/* The disk says TAG 1; the fileset's entry says TAG 9 and requires `mod`, which only
 * the fileset has (also required by a call long after the load).  The fileset outlives
 * the document and this function's reference: the VM keeps one until it closes. */
static int scenario_fileset(void) {
    if (!make_runtime()) return 2;
    bundle b;
    bundle_init(&b, 0, "fs");
    if (!write_bundle(b.name, b.contract, 1, 1, false)) return 2;
    char path[1100];
    snprintf(path, sizeof path, "%s/bundle.lua", b.dir);
    FILE *f = fopen(path, "rb");
    static char text[8192];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = '\0';
    /* TAG 9, and fn 3 answers what the lazily required module says */
    char *tag = strstr(text, "local TAG, V = 1,");
    char *fail = strstr(text, "local function fail() error(\"boom\") end");
    if (!tag || !fail) return 2;
    tag[15] = '9';
    const char *lazy = "local function fail(_, _, out) pg.ptr(out, \"uint64_t *\")[0] = "
                       "require(\"lib.mod\").value end";
    static char entry[9000];
    snprintf(entry, sizeof entry, "%.*s%s%s", (int)(fail - text), text, lazy,
             fail + strlen("local function fail() error(\"boom\") end"));
    char manifest[512];
    snprintf(manifest, sizeof manifest,
             "name = \"%s\"\nid = %llu\nversion = \"1.0.0\"\nloader = \"lua\"\n"
             "file = \"./bundle.lua\"\n",
             b.name, (unsigned long long)b.id);
    pp_error err;
    pp_error_clear(&err);
    pp_fileset *fs = pp_fileset_new();
    pp_manifest_doc *doc = NULL;
    if (!fs || pp_fileset_add(fs, view("bundle.lua"), view(entry), &err) ||
        pp_fileset_add(fs, view("lib/../lib/mod.lua"), view("return { value = 77 }"), &err) ||
        pp_fileset_add(fs, view("../escape.lua"), view(""), &err) != PP_ERR_INVALID_ARGUMENT ||
        pp_manifest_doc_parse(view(manifest), view(b.dir), 0, &doc, &err)) {
        problem("fileset setup: %s", err.message);
        return 1;
    }
    pp_error_clear(&err);
    pp_manifest_doc_set_files(doc, fs);
    pp_fileset_release(fs); /* the document holds it now */
    if (pp_fileset_add(fs, view("late.lua"), view(""), &err) != PP_ERR_INVALID_ARGUMENT)
        problem("a sealed fileset accepted a file");
    pp_error_clear(&err);
    if (pp_runtime_check_manifest(g_rt, doc, &err) ||
        pp_runtime_load_manifest(g_rt, doc, NULL, &err)) {
        problem("load from a fileset: %s", err.message);
        return 1;
    }
    pp_manifest_doc_free(doc); /* the VM keeps its own reference */
    const GuestContractInterface *iface = resolve(&b);
    uint32_t arg = 5;
    uint64_t out = 0;
    uint32_t code = iface ? raw_call(iface, NULL, b.contract_id, 0, &arg, &out) : 99;
    unsigned long long tag_seen = out >> 40;
    if (code || tag_seen != 9) problem("fileset entry not used: code %u tag %llu", code, tag_seen);
    code = iface ? raw_call(iface, NULL, b.contract_id, 3, NULL, &out) : 99;
    if (code || out != 77)
        problem("fileset module not used: code %u out %llu", code, (unsigned long long)out);
    printf("fileset tag=%llu module=%llu\n", tag_seen, (unsigned long long)out);
    pp_error_clear(&err);
    if (pp_runtime_unload(g_rt, b.id, &err)) problem("unload: %s", err.message);
    free_runtime();
    return 0;
}

int main(int argc, char **argv) {
    const char *scenario = NULL;
    double seconds = 3.0;
    int nthreads = 4;
    g_work[0] = '\0';
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--work") == 0)
            snprintf(g_work, sizeof g_work, "%s", argv[++i]);
        else if (strcmp(argv[i], "--scenario") == 0)
            scenario = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0)
            nthreads = atoi(argv[++i]);
        else
            usage();
    }
    if (!g_work[0] || !scenario || nthreads < 1 || nthreads > MAX_THREADS || !(seconds > 0))
        usage();
    mkdir(g_work, 0755);
    int rc;
    if (strcmp(scenario, "stale-interface") == 0)
        rc = scenario_stale_interface();
    else if (strcmp(scenario, "close-in-flight") == 0)
        rc = scenario_close(false);
    else if (strcmp(scenario, "close-busy") == 0)
        rc = scenario_close(true);
    else if (strcmp(scenario, "instances-race") == 0)
        rc = scenario_random(seconds, 3, true);
    else if (strcmp(scenario, "random") == 0)
        rc = scenario_random(seconds, nthreads, false);
    else if (strcmp(scenario, "fileset") == 0)
        rc = scenario_fileset();
    else if (strcmp(scenario, "fork-new-thread") == 0)
        rc = scenario_fork_new_thread();
    else
        usage();
    printf("%s problems=%u\n", scenario, atomic_load(&g_problems));
    return rc ? rc : atomic_load(&g_problems) ? 1 : 0;
}
