/*
 * stress_driver.c — threads calling into several Lua bundles through the checked call
 * path (pp_call_handle) while another thread hot-reloads them and unloads / loads them
 * again, for a bounded time.  Public headers only (polyplug.h, polyplug_abi.h).
 *
 *   stress_driver --work <dir> [--seconds S] [--threads N] [--bundles B] [--gate 0|1]
 *                 [--limits 0|1]
 *
 * --scenario queued-unload: instead of the stress, 100 rounds per second of: unload a
 * bundle while one call runs in it and three more wait for its lock.
 *
 * --scenario handoff: instead of the stress, three threads make 100 calls per second
 * each into one bundle, every call holding the VM for 3 ms, so waiters sleep and every
 * hand-off wakes one (the VM lock's sleeping protocol).
 *
 * --limits 1: callers also run calls under limits (pp_set_call_limits): a long limit (a
 * pending deadline the watchdog fixes), a short one that runs out in the middle of a
 * spinning call (the watchdog arms the hook while VMs are reloaded and unloaded under
 * it), and a cancel token of their own, allocated before the call and freed right
 * after it (the watchdog must never read a token after its call returned).  A call
 * stopped by its limit (CallTimeout, Cancelled) is an expected outcome there.
 *
 * --gate 1: callers look a contract up only while its bundle is fully loaded, and keep
 * the handle only if no unload/load began around the lookup.  Calls still race with
 * unloads and reloads, but never with a load in progress: this separates the two.
 *
 * Bundle b's fn 0 returns (b << 40) | (version << 12) | arg, so every result names the
 * bundle, version and argument it came from.  A call must either return the result of
 * a version that was current during the call (not older than the version committed
 * when it started, not newer than the newest one written when it returned) or fail
 * with StaleHandle (its bundle was unloaded; the caller finds the contract again).
 * Any other outcome is a problem; problems are printed as "problem: ..." lines.
 *
 * The last stdout line is a summary "stats ok=.. stale=.. not_found=.. unexpected=..
 * reloads=.. unloads=.. loads=.. failures=.. problems=..".  Exit status 0 when there
 * were no problems, 1 otherwise, 2 on a usage or setup error.  Run it under ASan+UBSan
 * (tests/test_stress.py) so a use-after-free between an unload and a call in flight
 * is reported, not silently survived.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "polyplug.h"
#include "driver_util.h"

#define MAX_BUNDLES 8
#define MAX_THREADS 32

typedef struct bundle {
    char name[64];
    char contract[64];
    char dir[1024];
    uint64_t id;
    uint64_t contract_id;
    _Atomic uint32_t written;   /* newest version on disk */
    _Atomic uint32_t committed; /* every call starting now sees this version or newer */
    _Atomic bool ready;         /* loaded and not being unloaded (for --gate) */
    _Atomic uint64_t epoch;     /* completed loads (for --gate) */
} bundle;

typedef struct caller_stats {
    unsigned long long ok, stale, not_found, unexpected, stopped;
} caller_stats;

static pp_runtime *g_rt;
static bundle g_bundles[MAX_BUNDLES];
static int g_nbundles = 3;
static bool g_gate; /* --gate: look contracts up only while their bundle is fully loaded */
static bool g_limits; /* --limits: calls under time limits and cancel tokens too */
static atomic_bool g_stop;
static unsigned long long g_reloads, g_unloads, g_loads, g_failures;
static unsigned long long g_served, g_refused; /* --scenario queued-unload */
static long g_handoff_calls;                     /* --scenario handoff, per thread */

/* ── bundles on disk ───────────────────────────────────────────────────────── */

static bool write_text(const char *path, const char *text) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%.1100s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    ok = fclose(f) == 0 && ok;
    return ok && rename(tmp, path) == 0; /* the loader never sees a half-written file */
}

static bool write_entry(int b, uint32_t version) {
    char lua[2048], path[1100];
    snprintf(lua, sizeof lua,
             "local pg = require(\"polyplug_guest\")\n"
             "local B, V = %d, %u\n"
             "function polyplug_init()\n"
             "    return { [\"%s\"] = { contract_version = 1,\n"
             "        factory = function() return {} end,\n"
             "        functions = { [0] = function(_, args, out)\n"
             "            local a = pg.ptr(args, \"const uint32_t *\")[0]\n"
             "            pg.ptr(out, \"uint64_t *\")[0] = B * 2^40 + V * 4096 + a\n"
             "        end, function(_, args, out)\n"
             "            local n, s = pg.ptr(args, \"const uint32_t *\")[0] * 100, 0\n"
             "            for i = 1, n do s = (s + i) %% 65521 end\n"
             "            pg.ptr(out, \"uint64_t *\")[0] = s\n"
             "        end } } }, { code = 0 }\n"
             "end\n",
             b, version, g_bundles[b].contract);
    snprintf(path, sizeof path, "%.1024s/bundle.lua", g_bundles[b].dir);
    return write_text(path, lua);
}

static void manifest_of(const bundle *bd, pp_manifest *m) {
    memset(m, 0, sizeof *m);
    m->id = bd->id;
    m->name = view(bd->name);
    m->loader = view("lua");
    m->file = view("bundle.lua");
    m->path = view(bd->dir);
    m->version_text = view("1.0.0");
    m->version.major = 1;
}

static int32_t load(int b, pp_error *err) {
    pp_manifest m;
    manifest_of(&g_bundles[b], &m);
    pp_source src = {PP_SOURCE_PATH, view(g_bundles[b].dir)};
    pp_error_clear(err);
    return pp_runtime_load(g_rt, &m, &src, err);
}

/* ── threads ───────────────────────────────────────────────────────────────── */

static void *caller(void *arg) {
    caller_stats *st = arg;
    unsigned seed = (unsigned)(uintptr_t)arg;
    GuestContractHandle handles[MAX_BUNDLES];
    bool have[MAX_BUNDLES] = {false};
    while (!atomic_load(&g_stop)) {
        int b = rand_r(&seed) % g_nbundles;
        bundle *bd = &g_bundles[b];
        if (!have[b]) {
            pp_error e;
            pp_error_clear(&e);
            uint64_t epoch = atomic_load(&bd->epoch);
            if (g_gate && !atomic_load(&bd->ready)) {
                st->not_found++;
                continue;
            }
            if (pp_registry_find(g_rt, bd->contract_id, 1, &handles[b], &e) != PP_OK) {
                if (strcmp(pp_status_exception(e.status), "PluginNotFound") == 0) {
                    st->not_found++;
                } else {
                    st->unexpected++;
                    problem("find %s: %s: %s", bd->contract, pp_status_name(e.status),
                            e.message);
                }
                continue;
            }
            /* --gate: keep the handle only if no unload/load began around the lookup, so
             * it names a registration whose load had finished */
            if (g_gate && (!atomic_load(&bd->ready) || atomic_load(&bd->epoch) != epoch)) {
                st->not_found++;
                continue;
            }
            have[b] = true;
        }
        uint32_t a = (uint32_t)rand_r(&seed) % 4096;
        uint64_t out = 0;
        AbiError err;
        memset(&err, 0, sizeof err);
        /* --limits: 0 none, 1 a long limit, 2 a short one on a spinning call, 3 a token,
         * 4 a token cancelled before the call, 5 a token on a spinning call */
        int mode = g_limits ? rand_r(&seed) % 6 : 0;
        pp_cancel *token = mode >= 3 ? pp_cancel_new() : NULL;
        if (mode == 4) pp_cancel_request(token);
        pp_set_call_limits(mode == 1 ? 60000000000ull : mode == 2 ? 200000ull : 0, token);
        uint32_t fn = mode == 2 || mode == 5 ? 1 : 0;
        uint32_t lo = atomic_load(&bd->committed);
        uint32_t code = pp_call_handle(g_rt, handles[b].index, handles[b].generation, NULL, 0, fn,
                                       &a, &out, NULL, &err);
        uint32_t hi = atomic_load(&bd->written);
        pp_set_call_limits(0, NULL);
        pp_cancel_free(token); /* at once: the watchdog must be done with it */
        if (mode && code != err.code) {
            st->unexpected++;
            problem("pp_call_handle returned %u but wrote AbiError.code %u", code, err.code);
            continue;
        }
        if (mode && (code == PP_ABI_CALL_TIMEOUT || code == PP_ABI_CALL_CANCELLED)) {
            if (mode == 4 ? code != PP_ABI_CALL_CANCELLED : mode != 2) {
                st->unexpected++;
                problem("call %s in limits mode %d stopped with code %u", bd->contract, mode,
                        code);
            }
            st->stopped++;
            continue;
        }
        if (mode == 4 && code != AbiErrorCode_StaleHandle) {
            st->unexpected++;
            problem("a call with a cancelled token returned %u", code);
            continue;
        }
        if (fn == 1 && code == AbiErrorCode_Ok) {
            st->ok++;
            continue;
        }
        if (code != err.code) {
            st->unexpected++;
            problem("pp_call_handle returned %u but wrote AbiError.code %u", code, err.code);
            continue;
        }
        if (code == AbiErrorCode_StaleHandle) {
            st->stale++;
            have[b] = false;
            continue;
        }
        if (code != AbiErrorCode_Ok) {
            st->unexpected++;
            problem("call %s(%u): code %u: %.*s", bd->contract, a, code,
                    err.message.ptr ? (int)err.message.len : 0,
                    err.message.ptr ? (const char *)err.message.ptr : "");
            continue;
        }
        uint64_t vb = out >> 40, vver = (out >> 12) & 0xFFFFFFF, varg = out & 0xFFF;
        if (vb != (uint64_t)b || varg != a || vver < lo || vver > hi) {
            st->unexpected++;
            problem("wrong result from %s(%u): bundle %llu version %llu arg %llu, expected "
                    "version %u..%u",
                    bd->contract, a, (unsigned long long)vb, (unsigned long long)vver,
                    (unsigned long long)varg, lo, hi);
            continue;
        }
        st->ok++;
    }
    return NULL;
}

static void *reloader(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&g_stop)) {
        int b = rand_r(&seed) % g_nbundles;
        bundle *bd = &g_bundles[b];
        pp_error e;
        pp_error_clear(&e);
        if (rand_r(&seed) % 10 < 6) {
            uint32_t v = atomic_load(&bd->written) + 1;
            atomic_store(&bd->written, v);
            if (!write_entry(b, v)) {
                problem("cannot write %s/bundle.lua: %s", bd->dir, strerror(errno));
                g_failures++;
                return NULL;
            }
            pp_manifest m;
            manifest_of(bd, &m);
            if (pp_runtime_reload(g_rt, &m, &e) != PP_OK) {
                problem("reload %s: %s", bd->name, e.message);
                g_failures++;
                return NULL;
            }
            atomic_store(&bd->committed, v);
            g_reloads++;
        } else {
            atomic_store(&bd->ready, false);
            if (pp_runtime_unload(g_rt, bd->id, &e) != PP_OK) {
                problem("unload %s: %s", bd->name, e.message);
                g_failures++;
                return NULL;
            }
            g_unloads++;
            sleep_us((unsigned)rand_r(&seed) % 2000);
            uint32_t v = atomic_load(&bd->written) + 1;
            atomic_store(&bd->written, v);
            if (!write_entry(b, v) || load(b, &e) != PP_OK) {
                problem("load %s: %s", bd->name, e.message);
                g_failures++;
                return NULL;
            }
            atomic_store(&bd->committed, v);
            atomic_fetch_add(&bd->epoch, 1);
            atomic_store(&bd->ready, true);
            g_loads++;
        }
        sleep_us((unsigned)rand_r(&seed) % 500);
    }
    return NULL;
}

/* ── scenario: unload while calls are queued on the bundle's lock ──────────── */

/* One thread runs a slow guest call (it holds the bundle's lock); three more calls
 * pass the handle check and wait for that lock; then the bundle is unloaded.  Every
 * queued call must end with its result or StaleHandle, never touch freed memory. */

typedef struct queued_call {
    GuestContractHandle h;
    uint32_t fn_id;
    uint32_t arg;
    uint64_t out;
    uint32_t code;
    atomic_bool started;
} queued_call;

/* The slow call returns at this CLOCK_MONOTONIC time in ns (0 = not set yet).  A
 * deadline, not a flag set by another thread: with every CPU busy spinning, a thread
 * woken to set a flag may run milliseconds late, and by then all waiters sleep in the
 * lock's FIFO futex queue, where the unload, queued last, always comes last. */
static _Atomic uint64_t g_release_at;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *queued_caller(void *arg) {
    queued_call *q = arg;
    AbiError err;
    memset(&err, 0, sizeof err);
    atomic_store(&q->started, true);
    const void *args = q->fn_id == 0 ? (const void *)&g_release_at : (const void *)&q->arg;
    q->code = pp_call_handle(g_rt, q->h.index, q->h.generation, NULL, 0, q->fn_id, args,
                             &q->out, NULL, &err);
    return NULL;
}

static int queued_unload_round(int round) {
    bundle *bd = &g_bundles[0];
    pp_error e;
    pp_error_clear(&e);
    GuestContractHandle h;
    if (load(0, &e) != PP_OK || pp_registry_find(g_rt, bd->contract_id, 1, &h, &e) != PP_OK) {
        fprintf(stderr, "scenario setup failed: %s\n", e.message);
        return 2;
    }
    enum { WAITERS = 3 };
    queued_call slow = {h, 0, 0, 0, 0, false}, fast[WAITERS];
    pthread_t slow_thread, fast_threads[WAITERS];
    atomic_store(&g_release_at, 0);
    pthread_create(&slow_thread, NULL, queued_caller, &slow);
    while (!atomic_load(&slow.started)) sleep_us(20);
    sleep_us(200); /* the slow call now holds the bundle's lock */
    for (int i = 0; i < WAITERS; i++) {
        fast[i] = (queued_call){h, 1, (uint32_t)i, 0, 0, false};
        pthread_create(&fast_threads[i], NULL, queued_caller, &fast[i]);
    }
    for (int i = 0; i < WAITERS; i++)
        while (!atomic_load(&fast[i].started)) sleep_us(20);
    sleep_us(100); /* the fast calls passed the handle check and spin on the lock */
    /* release the slow call 1 ms from now: the unload is spinning on the lock by then,
     * along with the queued calls, and none of them has spun long enough to sleep */
    atomic_store(&g_release_at, now_ns() + 1000000u);
    if (pp_runtime_unload(g_rt, bd->id, &e) != PP_OK) problem("unload: %s", e.message);
    pthread_join(slow_thread, NULL);
    if (!(slow.code == AbiErrorCode_Ok && slow.out == 1) && slow.code != AbiErrorCode_StaleHandle)
        problem("round %d: the slow call ended with code %u, out %llu", round, slow.code,
                (unsigned long long)slow.out);
    for (int i = 0; i < WAITERS; i++) {
        pthread_join(fast_threads[i], NULL);
        bool ok = fast[i].code == AbiErrorCode_Ok && fast[i].out == 7000u + (unsigned)i;
        if (ok)
            g_served++;
        else if (fast[i].code == AbiErrorCode_StaleHandle)
            g_refused++;
        else
            problem("round %d: queued call %d ended with code %u, out %llu", round, i,
                    fast[i].code, (unsigned long long)fast[i].out);
    }
    return 0;
}

/* The scenarios' bundle 0: fn 0 busy-waits until the CLOCK_MONOTONIC time in *args
 * (at most 1 s) and writes 1; fn 1 writes 7000 + *args. */
static int write_slow_entry(void) {
    bundle *bd = &g_bundles[0];
    char lua[2048], path[1100];
    snprintf(lua, sizeof lua,
             "local pg = require(\"polyplug_guest\")\n"
             "local ffi = require(\"ffi\")\n"
             "ffi.cdef[[ typedef struct { long s, ns; } stress_ts;\n"
             "           int clock_gettime(int clock, stress_ts *ts); ]]\n"
             "local ts = ffi.new(\"stress_ts\")\n"
             "local function now()\n"
             "    ffi.C.clock_gettime(1, ts)\n"
             "    return ts.s * 1000000000ULL + ts.ns\n"
             "end\n"
             "local function slow(_, args, out) -- until the deadline in *args (at most 1 s)\n"
             "    local at, limit = pg.ptr(args, \"volatile uint64_t *\"), now() + 1000000000ULL\n"
             "    repeat local t = now() until (at[0] ~= 0 and t >= at[0]) or t >= limit\n"
             "    pg.ptr(out, \"uint64_t *\")[0] = 1\n"
             "end\n"
             "local function fast(_, args, out)\n"
             "    pg.ptr(out, \"uint64_t *\")[0] = 7000 + pg.ptr(args, \"const uint32_t *\")[0]\n"
             "end\n"
             "function polyplug_init()\n"
             "    return { [\"%s\"] = { factory = function() return {} end,\n"
             "        functions = { [0] = slow, fast } } }, { code = 0 }\n"
             "end\n",
             bd->contract);
    snprintf(path, sizeof path, "%.1024s/bundle.lua", bd->dir);
    if (!write_text(path, lua)) {
        fprintf(stderr, "cannot write %s\n", path);
        return 2;
    }
    return 0;
}

static int queued_unload_scenario(int rounds) {
    if (write_slow_entry() != 0) return 2;
    for (int r = 0; r < rounds; r++) {
        int rc = queued_unload_round(r);
        if (rc) return rc;
    }
    return 0;
}

/* ── scenario: hand-offs to sleeping waiters ───────────────────────────────── */

/* Three threads call the same bundle, each call holding its VM for 3 ms: longer than a
 * waiter spins (2 ms), so waiters go to sleep and every hand-off is a wake-up through
 * the lock's sleeping protocol.  A lost wake-up shows as a call that never returns. */

enum { HANDOFF_THREADS = 3 };
static _Atomic unsigned g_handoffs;

static void *handoff_caller(void *arg) {
    const GuestContractHandle *h = arg;
    int calls = (int)g_handoff_calls;
    for (int i = 0; i < calls; i++) {
        uint64_t at = now_ns() + 3000000u, out = 0;
        AbiError err;
        memset(&err, 0, sizeof err);
        uint32_t code = pp_call_handle(g_rt, h->index, h->generation, NULL, 0, 0, &at, &out,
                                       NULL, &err);
        if (code != AbiErrorCode_Ok || out != 1)
            problem("hand-off call %d ended with code %u, out %llu", i, code,
                    (unsigned long long)out);
        atomic_fetch_add(&g_handoffs, 1);
    }
    return NULL;
}

static int handoff_scenario(void) {
    bundle *bd = &g_bundles[0];
    pp_error e;
    pp_error_clear(&e);
    GuestContractHandle h;
    if (write_slow_entry() != 0 || load(0, &e) != PP_OK ||
        pp_registry_find(g_rt, bd->contract_id, 1, &h, &e) != PP_OK) {
        fprintf(stderr, "scenario setup failed: %s\n", e.message);
        return 2;
    }
    pthread_t threads[HANDOFF_THREADS];
    for (int t = 0; t < HANDOFF_THREADS; t++) pthread_create(&threads[t], NULL, handoff_caller, &h);
    unsigned total = HANDOFF_THREADS * (unsigned)g_handoff_calls;
    uint64_t give_up = now_ns() + 120000000000ull;
    while (atomic_load(&g_handoffs) < total && now_ns() < give_up) sleep_us(10000);
    if (atomic_load(&g_handoffs) < total) {
        printf("problem: %u of %u hand-off calls returned in 120 s (a lost wake-up)\n",
               atomic_load(&g_handoffs), total);
        fflush(stdout);
        _Exit(3);
    }
    for (int t = 0; t < HANDOFF_THREADS; t++) pthread_join(threads[t], NULL);
    return 0;
}

/* ── main ──────────────────────────────────────────────────────────────────── */

static _Noreturn void usage(void) {
    fprintf(stderr, "usage: stress_driver --work <dir> [--seconds S] [--threads N] "
                    "[--bundles B] [--gate 0|1] [--limits 0|1] [--scenario queued-unload|handoff]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *work = NULL;
    double seconds = 3.0;
    int nthreads = 4;
    const char *scenario = NULL;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--work") == 0)
            work = argv[++i];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0)
            nthreads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--bundles") == 0)
            g_nbundles = atoi(argv[++i]);
        else if (strcmp(argv[i], "--gate") == 0)
            g_gate = atoi(argv[++i]) != 0;
        else if (strcmp(argv[i], "--limits") == 0)
            g_limits = atoi(argv[++i]) != 0;
        else if (strcmp(argv[i], "--scenario") == 0 &&
                 (strcmp(argv[i + 1], "queued-unload") == 0 || strcmp(argv[i + 1], "handoff") == 0))
            scenario = argv[++i];
        else
            usage();
    }
    if (!work || strlen(work) > 900 || nthreads < 1 || nthreads > MAX_THREADS || g_nbundles < 1 ||
        g_nbundles > MAX_BUNDLES || !(seconds > 0))
        usage();

    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.compatibility = Compatibility_Strict;
    cfg.hot_reload_enabled = true;
    cfg.log = quiet_log;
    cfg.log_max_level = LogLevel_Error;
    pp_error e;
    pp_error_clear(&e);
    g_rt = pp_runtime_new(&cfg, &e);
    if (!g_rt) {
        fprintf(stderr, "pp_runtime_new: %s\n", e.message);
        return 2;
    }
    pp_loader *loader = pp_lua_loader_new(NULL);
    if (!loader || pp_runtime_add_loader(g_rt, loader, &e) != PP_OK) {
        fprintf(stderr, "adding the Lua loader failed: %s\n", e.message);
        return 2;
    }
    mkdir(work, 0755);
    for (int b = 0; b < g_nbundles; b++) {
        bundle *bd = &g_bundles[b];
        snprintf(bd->name, sizeof bd->name, "cstress%d", b);
        snprintf(bd->contract, sizeof bd->contract, "cstress.b%d", b);
        snprintf(bd->dir, sizeof bd->dir, "%.900s/cstress%d", work, b);
        char canon[128];
        snprintf(canon, sizeof canon, "guest_contract:%s@1", bd->contract);
        bd->id = fnv1a64(bd->name);
        bd->contract_id = fnv1a64(canon);
        atomic_init(&bd->written, 1);
        atomic_init(&bd->committed, 1);
        atomic_init(&bd->ready, true);
        atomic_init(&bd->epoch, 1);
        mkdir(bd->dir, 0755);
        if (scenario) break; /* it writes its own entry file */
        if (!write_entry(b, 1) || load(b, &e) != PP_OK) {
            fprintf(stderr, "initial load of %s failed: %s\n", bd->name, e.message);
            return 2;
        }
    }

    if (scenario && strcmp(scenario, "handoff") == 0) {
        g_handoff_calls = (long)(seconds * 100);
        int rc = handoff_scenario();
        pp_runtime_free(g_rt);
        pp_loader_release(loader);
        printf("scenario handoff calls=%u problems=%u\n", atomic_load(&g_handoffs),
               atomic_load(&g_problems));
        return rc ? rc : atomic_load(&g_problems) ? 1 : 0;
    }
    if (scenario) {
        int rc = queued_unload_scenario((int)(seconds * 100));
        pp_runtime_free(g_rt);
        pp_loader_release(loader);
        printf("scenario queued-unload served=%llu refused=%llu problems=%u\n", g_served,
               g_refused, atomic_load(&g_problems));
        return rc ? rc : atomic_load(&g_problems) ? 1 : 0;
    }
    pthread_t threads[MAX_THREADS], reload_thread;
    caller_stats stats[MAX_THREADS];
    memset(stats, 0, sizeof stats);
    atomic_init(&g_stop, false);
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&threads[t], NULL, caller, &stats[t]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    if (pthread_create(&reload_thread, NULL, reloader, (void *)(uintptr_t)12345) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 2;
    }
    sleep_us((unsigned)(seconds * 1e6));
    atomic_store(&g_stop, true);
    pthread_join(reload_thread, NULL);
    caller_stats total = {0, 0, 0, 0, 0};
    for (int t = 0; t < nthreads; t++) {
        pthread_join(threads[t], NULL);
        total.ok += stats[t].ok;
        total.stale += stats[t].stale;
        total.not_found += stats[t].not_found;
        total.unexpected += stats[t].unexpected;
        total.stopped += stats[t].stopped;
        if (stats[t].ok == 0) problem("caller %d made no successful call", t);
    }
    size_t left = pp_runtime_bundle_ids(g_rt, NULL, 0);
    if (left != (size_t)g_nbundles)
        problem("%zu bundles loaded at the end, expected %d", left, g_nbundles);
    pp_runtime_free(g_rt);
    pp_loader_release(loader);
    printf("stats ok=%llu stale=%llu not_found=%llu unexpected=%llu stopped=%llu reloads=%llu "
           "unloads=%llu loads=%llu failures=%llu problems=%u\n",
           total.ok, total.stale, total.not_found, total.unexpected, total.stopped, g_reloads,
           g_unloads, g_loads, g_failures, atomic_load(&g_problems));
    return atomic_load(&g_problems) ? 1 : 0;
}
