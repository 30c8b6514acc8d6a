/*
 * pp_lua.c — the LuaJIT loader: one lua_State per bundle load, the polyplug_init
 * protocol (lua-loader.md §2), the vm.call trampoline (§3) and hot reload.
 *
 * The rules:
 *   1. Lua is entered from C only through lua_pcall with the traceback handler that
 *      sits at stack index 1 of every VM; a lua_error never unwinds a C frame that
 *      owns anything.  Stack index 2 holds the per-VM `arena_alloc` closure.
 *   2. A bundle's lock serialises every use of its lua_State.  `owner` names the
 *      thread inside the VM; a same-thread nested call (a guest calling vm.call on
 *      its own bundle through the FFI) is refused with ReentrantCall, never run:
 *      re-entering a lua_State from an FFI call is undefined in LuaJIT.
 *   3. Nothing is logged, and no runtime lock is taken, while a bundle lock is held;
 *      errors are formatted into buffers and reported after unlocking.
 *   4. The success path of a call allocates nothing on the heap.
 *
 * Object model: a `lua_bundle` lives from load to unload and survives reloads; its
 * `lua_contract` records are what the interfaces' loader_data point at, so old
 * interface pointers and handles stay valid across a reload.  A reload builds a new
 * VM, then swaps the records' references and the VM pointer under the bundle lock
 * and closes the old VM right away: no call can be running in it at that point.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "pp_lua_internal.h"

enum {
    STACK_TRACEBACK = PPI_STACK_TRACEBACK,
    STACK_ARENA_ALLOC = PPI_STACK_ARENA_ALLOC,
    STACK_MAKE_INSTANCE = PPI_STACK_MAKE_INSTANCE,
    STACK_BASE = PPI_STACK_BASE
};

typedef struct lua_contract {
    struct lua_bundle *bundle;
    char *name; /* bare contract name, the registrations key */
    uint64_t contract_id;
    uint32_t major;
    uint32_t fn_count;
    int *fn_refs;      /* registry refs of functions[0..fn_count) */
    int factory_ref;   /* registry ref of the factory */
    int default_ref;   /* registry ref of the default impl */
    int instances_ref; /* registry ref of the id -> impl table */
    uint64_t next_instance;
    bool retired; /* dropped by a reload: every call is FunctionNotAvailable */
    struct lua_contract *next;
} lua_contract;

typedef struct lua_bundle {
    struct lua_loader *loader;
    pp_runtime *rt;
    uint64_t id;
    char *name;
    ppi_lock lock;
    _Atomic uintptr_t owner; /* thread inside the VM, 0 when idle */
    int64_t memory_snapshot; /* GC heap bytes at the last idle query (loader lock) */
    lua_State *L;
    lua_contract *contracts; /* live and retired records */
    struct lua_bundle *next;
} lua_bundle;

typedef struct lua_loader {
    pthread_mutex_t lock; /* guards `bundles` and `orphans` */
    lua_bundle *bundles;
    lua_bundle *orphans; /* unloaded while running on the unloading thread */
    pp_lua_config config;
} lua_loader;

/* The message of the last failed call on this thread: AbiError.message points here,
 * valid until the next call on the same thread. */
static _Thread_local char call_error_text[1024];

/* ── source acquisition ────────────────────────────────────────────────────── */

typedef struct source_text {
    char *owned;
    const char *text;
    size_t len;
    char chunk[512];
    char *dir; /* bundle directory for Path sources, else NULL */
} source_text;

static void source_free(source_text *s) {
    free(s->owned);
    free(s->dir);
}

static int32_t read_source(const pp_manifest *m, const pp_source *src, const char *bundle,
                           source_text *out, pp_error *err) {
    memset(out, 0, sizeof *out);
    if (src->kind == PP_SOURCE_CODE || src->kind == PP_SOURCE_BYTES) {
        if (src->data.len && !src->data.ptr)
            return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, bundle, NULL, NULL,
                            "source data pointer is null");
        if (src->kind == PP_SOURCE_BYTES && !ppi_utf8_valid(src->data.ptr, src->data.len))
            return ppi_fail(err, PP_ERR_INVALID_SOURCE_ENCODING, bundle, "lua", "bytes",
                            "loader `lua` received non-UTF-8 source bytes for bundle `%s`: "
                            "bytes sources must be valid UTF-8 text",
                            bundle);
        out->text = (const char *)src->data.ptr;
        out->len = src->data.len;
        snprintf(out->chunk, sizeof out->chunk, "@%s", bundle);
        return PP_OK;
    }
    if (src->kind != PP_SOURCE_PATH)
        return ppi_fail(err, PP_ERR_UNSUPPORTED_SOURCE, bundle, "lua", "unknown",
                        "loader `lua` does not support bundle source kind %u (bundle `%s`)",
                        src->kind, bundle);
    if (m->file.len == 0)
        return ppi_fail(err, PP_ERR_MANIFEST_MISSING_FILE, bundle, NULL, NULL,
                        "bundle \"%s\" manifest.toml has an empty or missing `file` field",
                        bundle);
    /* manifest.path is the bundle directory (the source's own path is informational) */
    out->dir = ppi_strndup_view(m->path.len ? m->path : src->data);
    char *file = ppi_strndup_view(m->file);
    if (!out->dir || !file) {
        free(file);
        return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
    }
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", out->dir, file);
    snprintf(out->chunk, sizeof out->chunk, "@%s/%s", bundle, file);
    free(file);
    FILE *f = fopen(full, "rb");
    if (!f) {
        int e = errno;
        const char *why = e == ENOENT ? "file does not exist" : strerror(e);
        char detail[4200];
        snprintf(detail, sizeof detail, "Lua script load failed at %s: %s", full, why);
        return ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, detail,
                        "init failed for bundle `%s`: %s", bundle, detail);
    }
    size_t cap = 0, len = 0;
    char *buf = NULL;
    /* room for the whole file at once: growing a 64 KiB buffer cost a 64 KiB copy */
    struct stat fst;
    size_t chunk = fstat(fileno(f), &fst) == 0 && fst.st_size > 0 && fst.st_size < (1 << 30)
                       ? (size_t)fst.st_size + 1
                       : 65536;
    for (;;) {
        if (len == cap && !ppi_grow((void **)&buf, &cap, len + chunk, 1)) {
            fclose(f);
            free(buf);
            return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || !ppi_utf8_valid((const uint8_t *)buf, len)) {
        free(buf);
        char detail[4200];
        snprintf(detail, sizeof detail, "Lua script load failed at %s: %s", full,
                 failed ? "read error" : "stream did not contain valid UTF-8");
        return ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, detail,
                        "init failed for bundle `%s`: %s", bundle, detail);
    }
    out->owned = buf;
    out->text = buf;
    out->len = len;
    return PP_OK;
}

/* ── running polyplug_init and reading its registrations ───────────────────── */

/* A registration read from the guest's table, references held in the new VM. */
typedef struct pending {
    char *name;
    char *plugin_name;
    uint32_t major;
    uint32_t fn_count;
    int *fn_refs;
    int factory_ref, default_ref, instances_ref;
} pending;

typedef struct init_result {
    lua_State *L;
    pending *items;
    size_t len;
} init_result;

static void init_result_free(init_result *r, bool close_vm) {
    for (size_t i = 0; i < r->len; i++) {
        free(r->items[i].name);
        free(r->items[i].plugin_name);
        free(r->items[i].fn_refs);
    }
    free(r->items);
    if (close_vm) ppi_lua_vm_close(r->L);
    memset(r, 0, sizeof *r);
}

/* InitFailed with `detail` as the inner error text. */
static int32_t init_failed(pp_error *err, const char *bundle, const char *detail) {
    /* The error line names file and line; the stack traceback (with addresses of C
     * frames) would make messages differ between runs, so it is left out. */
    char text[2048];
    ppi_strlcpy(text, sizeof text, detail);
    char *tb = strstr(text, "\nstack traceback:");
    if (tb) *tb = '\0';
    return ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, text,
                    "init failed for bundle `%s`: %s", bundle, text);
}

static int compare_pending(const void *a, const void *b) {
    return strcmp(((const pending *)a)->name, ((const pending *)b)->name);
}

/* Push t[key] without metamethods (a guest's __index must not run unprotected, and
 * registrations are plain data). */
static void raw_field(lua_State *L, int idx, const char *key) {
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    lua_pushstring(L, key);
    lua_rawget(L, idx);
}

/* Read registrations[key] (value on top of the stack) into `p`; pops nothing.
 * Runs inside collect_registrations (protected); `handler` is the traceback handler's
 * index in that frame. */
static bool read_registration(lua_State *L, const char *bundle, const HostApi *host, pending *p,
                              int handler, char *why, size_t why_len) {
    int t = lua_gettop(L);
    const char *name = p->name;
    /* contract_version: the major; missing -> 1 */
    raw_field(L, t, "contract_version");
    if (lua_isnil(L, -1)) {
        p->major = 1;
    } else if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING) {
        lua_Number v = lua_tonumber(L, -1);
        if (!(v >= 0 && v <= (lua_Number)UINT32_MAX) || v != (lua_Number)(uint32_t)v ||
            (v == 0 && !lua_isnumber(L, -1))) {
            snprintf(why, why_len,
                     "contract '%s': contract_version must be a whole number in 0..4294967295 "
                     "(the contract's major version), got %s",
                     name, lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            return false;
        }
        p->major = (uint32_t)v;
    } else {
        snprintf(why, why_len,
                 "contract '%s': contract_version must be a number (the major version), got a "
                 "%s",
                 name, luaL_typename(L, -1));
        return false;
    }
    lua_pop(L, 1);
    /* plugin_name: default = the bundle's name */
    raw_field(L, t, "plugin_name");
    size_t pl = 0;
    const char *pn = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &pl) : NULL;
    if (pn && ppi_utf8_valid((const uint8_t *)pn, pl) && pl > 0)
        p->plugin_name = ppi_strndup_view((StringView){(const uint8_t *)pn, pl});
    else
        p->plugin_name = ppi_strdup(bundle);
    lua_pop(L, 1);
    if (!p->plugin_name) {
        snprintf(why, why_len, "out of memory");
        return false;
    }
    /* functions: 0-based, counted up to the first nil */
    raw_field(L, t, "functions");
    if (!lua_istable(L, -1)) {
        snprintf(why, why_len,
                 "Lua handlers error: missing functions table for contract '%s': expected a "
                 "table { [0] = f0, f1, ... }, got %s",
                 name, luaL_typename(L, -1));
        return false;
    }
    int fns = lua_gettop(L);
    uint32_t count = 0;
    for (;; count++) {
        lua_rawgeti(L, fns, (int)count);
        bool stop = lua_isnil(L, -1);
        lua_pop(L, 1);
        if (stop || count == 65535) break;
    }
    if (count == 0) {
        lua_rawgeti(L, fns, 1);
        bool one_based = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (one_based) {
            snprintf(why, why_len,
                     "functions table for contract '%s' starts at index 1, but function ids "
                     "are 0-based: write functions = { [0] = first, second, ... }",
                     name);
            return false;
        }
    }
    p->fn_count = count;
    p->fn_refs = calloc(count ? count : 1, sizeof(int));
    if (!p->fn_refs) {
        snprintf(why, why_len, "out of memory");
        return false;
    }
    for (uint32_t i = 0; i < count; i++) {
        lua_rawgeti(L, fns, (int)i);
        if (!lua_isfunction(L, -1)) {
            snprintf(why, why_len,
                     "Lua function slot %u error for contract '%s': expected a function, got "
                     "a %s",
                     i, name, luaL_typename(L, -1));
            return false;
        }
        p->fn_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);
    /* factory: required; build the default impl now */
    raw_field(L, t, "factory");
    if (!lua_isfunction(L, -1)) {
        snprintf(why, why_len,
                 "Lua handlers error: contract '%s' needs a `factory` function "
                 "(factory = function(host) return {} end), got %s",
                 name, luaL_typename(L, -1));
        return false;
    }
    lua_pushvalue(L, -1);
    p->factory_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ppi_lua_push_pointer(L, host);
    if (lua_pcall(L, 1, 1, handler) != 0) {
        snprintf(why, why_len,
                 "factory for contract '%s' failed building the default instance: %s", name,
                 ppi_lua_error_text(L));
        return false;
    }
    p->default_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    p->instances_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, t);
    return true;
}

/* What collect_registrations reads into, and how it failed. */
typedef struct collect_ctx {
    const char *bundle;
    const HostApi *host;
    const BundleInitContext *init_ctx;
    init_result *res;
    bool failed;
    char detail[2048];
} collect_ctx;

enum { MAX_CONTRACT_NAME = 256 }; /* bytes; keeps every derived name in fixed buffers */

static int collect_fail(collect_ctx *cx, const char *fmt, const char *a, const char *b) {
    snprintf(cx->detail, sizeof cx->detail, fmt, a, b);
    cx->failed = true;
    return 0;
}

/* lua_CFunction(ctx, registrations, status, traceback): validate the status table and
 * read every registration (sorted by name) into ctx->res.  Plain failures are
 * reported through ctx; Lua errors (a hostile metamethod in a factory, memory) are
 * caught by the caller's lua_pcall. */
static int collect_registrations(lua_State *L) {
    collect_ctx *cx = lua_touserdata(L, 1);
    enum { REGS = 2, STATUS = 3, HANDLER = 4 };
    init_result *res = cx->res;
    raw_field(L, STATUS, "code");
    lua_Number code = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    if (code != 0) {
        raw_field(L, STATUS, "message");
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (msg && *msg) return collect_fail(cx, "%s%s", msg, "");
        snprintf(cx->detail, sizeof cx->detail, "Lua polyplug_init returned error code %.0f",
                 code);
        cx->failed = true;
        return 0;
    }
    /* collect the entries, then read them in name order (deterministic slots) */
    size_t cap = 0;
    lua_pushnil(L);
    while (lua_next(L, REGS) != 0) {
        /* key at -2, value at -1 */
        if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1))
            return collect_fail(cx,
                                "Lua handlers iteration error: every registrations entry must "
                                "be [\"<contract name>\"] = { ... }, found a %s key with a %s "
                                "value",
                                luaL_typename(L, -2), luaL_typename(L, -1));
        size_t kl;
        const char *key = lua_tolstring(L, -2, &kl);
        if (kl == 0 || !ppi_utf8_valid((const uint8_t *)key, kl) || memchr(key, '@', kl) ||
            strlen(key) != kl)
            return collect_fail(cx,
                                "registration key '%s' must be the bare contract name "
                                "(non-empty UTF-8, no '@'); put the major version in "
                                "contract_version%s",
                                key, "");
        if (kl > MAX_CONTRACT_NAME) {
            snprintf(cx->detail, sizeof cx->detail,
                     "registration key '%.40s...' is too long (%zu bytes; contract names have "
                     "at most %d)",
                     key, kl, MAX_CONTRACT_NAME);
            cx->failed = true;
            return 0;
        }
        if (!ppi_grow((void **)&res->items, &cap, res->len + 1, sizeof(pending)))
            return collect_fail(cx, "out of memory%s%s", "", "");
        memset(&res->items[res->len], 0, sizeof(pending));
        res->items[res->len].name = ppi_strdup(key);
        if (!res->items[res->len].name) return collect_fail(cx, "out of memory%s%s", "", "");
        res->len++;
        lua_pop(L, 1);
    }
    if (res->len == 0)
        return collect_fail(cx,
                            "Lua plugin registered no contracts: polyplug_init returned an "
                            "empty registrations table%s%s",
                            "", "");
    qsort(res->items, res->len, sizeof(pending), compare_pending);
    for (size_t i = 0; i < res->len; i++) {
        raw_field(L, REGS, res->items[i].name);
        if (!read_registration(L, cx->bundle, cx->host, &res->items[i], HANDLER, cx->detail,
                               sizeof cx->detail)) {
            cx->failed = true;
            return 0;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Run the entry chunk and polyplug_init in `L` and read the registrations. */
/* lua_CFunction(ctx): call polyplug_init and read its result.  Runs under
 * lua_cpcall, so every allocation and every guest error is protected. */
static int init_protected(lua_State *L) {
    collect_ctx *cx = lua_touserdata(L, 1);
    lua_pushcfunction(L, ppi_lua_traceback); /* 2: handler for the calls below */
    lua_pushliteral(L, "polyplug_init");
    lua_rawget(L, LUA_GLOBALSINDEX);
    if (!lua_isfunction(L, -1)) {
        snprintf(cx->detail, sizeof cx->detail,
                 "Lua plugin missing polyplug_init function: bundle=%s (the entry file must "
                 "define a global function polyplug_init(host, ctx))",
                 cx->bundle);
        cx->failed = true;
        return 0;
    }
    ppi_lua_push_pointer(L, cx->host);
    ppi_lua_push_pointer(L, cx->init_ctx);
    if (lua_pcall(L, 2, 2, 2) != 0) {
        snprintf(cx->detail, sizeof cx->detail, "Lua polyplug_init failed: %s",
                 ppi_lua_error_text(L));
        cx->failed = true;
        return 0;
    }
    int regs = lua_gettop(L) - 1, status = lua_gettop(L);
    if (!lua_istable(L, regs) || !lua_istable(L, status)) {
        snprintf(cx->detail, sizeof cx->detail,
                 "Lua polyplug_init failed: it must return two tables, (registrations, "
                 "{ code = 0 }), but returned (%s, %s)",
                 luaL_typename(L, regs), luaL_typename(L, status));
        cx->failed = true;
        return 0;
    }
    lua_pushcfunction(L, collect_registrations);
    lua_pushlightuserdata(L, cx);
    lua_pushvalue(L, regs);
    lua_pushvalue(L, status);
    lua_pushvalue(L, 2);
    lua_call(L, 4, 0);
    return 0;
}

/* Run the entry chunk and polyplug_init in `L` and read the registrations. */
static int32_t run_entry(pp_runtime *rt, lua_State *L, const pp_manifest *m,
                         const source_text *s, const char *bundle, init_result *res,
                         pp_error *err) {
    char detail[2048];
    if (luaL_loadbuffer(L, s->text, s->len, s->chunk) != 0 ||
        lua_pcall(L, 0, 0, STACK_TRACEBACK) != 0) {
        snprintf(detail, sizeof detail, "Lua script load failed for %s: %s", s->chunk + 1,
                 ppi_lua_error_text(L));
        return init_failed(err, bundle, detail);
    }
    /* ctx lives on this C stack for the duration of the call */
    BundleInitContext ctx;
    ctx.bundle_id = m->id;
    ctx.bundle_path = m->path;
    collect_ctx cx;
    memset(&cx, 0, sizeof cx);
    cx.bundle = bundle;
    cx.host = &rt->api;
    cx.init_ctx = &ctx;
    cx.res = res;
    if (lua_cpcall(L, init_protected, &cx) != 0) {
        snprintf(detail, sizeof detail, "Lua polyplug_init failed: %s", ppi_lua_error_text(L));
        lua_settop(L, STACK_BASE);
        return init_failed(err, bundle, detail);
    }
    lua_settop(L, STACK_BASE);
    if (cx.failed) return init_failed(err, bundle, cx.detail);
    return PP_OK;
}

/*
 * Build a VM, run the entry chunk and polyplug_init, and read the registrations
 * (sorted by name).  Must run inside the bundle's init window.  The loader's call
 * timeout also bounds initialisation, so a bundle that never finishes loading fails.
 */
static int32_t run_init(pp_runtime *rt, const pp_lua_config *config, const pp_manifest *m,
                        const pp_source *src, const char *bundle, init_result *res,
                        pp_error *err) {
    memset(res, 0, sizeof *res);
    source_text s;
    int32_t st = read_source(m, src, bundle, &s, err);
    if (st == PP_OK) {
        lua_State *L = ppi_lua_vm_new(rt, s.dir, bundle, config, err);
        if (!L) {
            st = err ? err->status : PP_ERR_INIT_FAILED;
        } else {
            res->L = L;
            ppi_call_limits lim;
            bool limited = ppi_lua_limits_begin(L, &lim, config->call_timeout_ns, NULL);
            st = run_entry(rt, L, m, &s, bundle, res, err);
            if (limited) ppi_lua_limits_end(L, &lim);
        }
    }
    source_free(&s); /* read_source may have allocated even when it failed */
    return st;
}

/* ── dispatch ──────────────────────────────────────────────────────────────── */

static void set_call_error(AbiError *out_err, uint32_t code, const char *msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = msg ? ppi_view(msg) : (StringView){NULL, 0};
}

/* Bundle locks held by this thread: non-zero while a guest calls into another bundle
 * through the FFI (a nested call). */
static _Thread_local unsigned locks_held;

/* How long a nested call waits for a busy bundle when no call timeout applies. */
#define NESTED_WAIT_NS 5000000000ULL
/* How long reload and unload wait for a running call when no call timeout applies. */
#define BUSY_WAIT_NS 10000000000ULL

/*
 * Take a bundle's lock.  An outermost call waits as long as it takes; a nested call
 * waits at most its timeout (or NESTED_WAIT_NS): two threads whose guests call into
 * each other's bundles would otherwise wait for each other forever.
 */
static bool acquire_bundle(lua_bundle *b, uint64_t timeout_ns, char *msg, size_t cap) {
    if (PP_LIKELY(locks_held == 0)) {
        ppi_lock_acquire(&b->lock);
    } else {
        uint64_t wait = timeout_ns ? timeout_ns : NESTED_WAIT_NS;
        if (!ppi_lock_acquire_within(&b->lock, wait)) {
            snprintf(msg, cap,
                     "gave up after %.3f s waiting for bundle `%s`: this call is nested in a "
                     "call into another bundle, and waiting longer could deadlock (bundles "
                     "calling each other from several threads)",
                     (double)wait / 1e9, b->name);
            return false;
        }
    }
    locks_held++;
    return true;
}

static void release_bundle(lua_bundle *b) {
    atomic_store_explicit(&b->owner, 0, memory_order_relaxed);
    ppi_lock_release(&b->lock);
    locks_held--;
}

static void vm_dispatch(VmLoaderData loader_data, GuestContractInstance instance,
                        uint32_t fn_id, const void *args, void *out, CallArena *arena,
                        AbiError *out_err) {
    lua_contract *c = loader_data.data;
    if (PP_UNLIKELY(!c)) {
        set_call_error(out_err, AbiErrorCode_InvalidPointer, "vm.call: loader_data is null");
        return;
    }
    lua_bundle *b = c->bundle;
    uintptr_t me = ppi_thread_tag();
    if (PP_UNLIKELY(atomic_load_explicit(&b->owner, memory_order_relaxed) == me)) {
        snprintf(call_error_text, sizeof call_error_text,
                 "reentrant call refused: this thread is already running a call in bundle "
                 "`%s` (contract '%s')",
                 b->name, c->name);
        set_call_error(out_err, AbiErrorCode_ReentrantCall, call_error_text);
        return;
    }
    uint64_t timeout_ns;
    pp_cancel *cancel;
    ppi_thread_call_limits(&timeout_ns, &cancel);
    if (!timeout_ns) timeout_ns = b->loader->config.call_timeout_ns;
    if (PP_UNLIKELY(cancel && pp_cancel_requested(cancel))) {
        snprintf(call_error_text, sizeof call_error_text,
                 "Lua function call cancelled before it started (bundle `%s`, contract '%s', "
                 "fn %u)",
                 b->name, c->name, fn_id);
        set_call_error(out_err, PP_ABI_CALL_CANCELLED, call_error_text);
        return;
    }
    if (PP_UNLIKELY(!acquire_bundle(b, timeout_ns, call_error_text, sizeof call_error_text))) {
        set_call_error(out_err, PP_ABI_CALL_TIMEOUT, call_error_text);
        return;
    }
    if (PP_UNLIKELY(fn_id >= __atomic_load_n(&c->fn_count, __ATOMIC_RELAXED))) {
        release_bundle(b);
        set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
        return;
    }
    atomic_store_explicit(&b->owner, me, memory_order_relaxed);
    lua_State *L = b->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->fn_refs[fn_id]);
    if (instance.data == NULL) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->default_ref);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_rawgeti(L, -1, (int)(uintptr_t)instance.data);
        lua_remove(L, -2);
        if (PP_UNLIKELY(lua_isnil(L, -1) || (uintptr_t)instance.data > INT32_MAX)) {
            lua_settop(L, STACK_BASE);
            release_bundle(b);
            set_call_error(out_err, AbiErrorCode_FunctionNotAvailable, NULL);
            return;
        }
    }
    ppi_lua_push_pointer(L, args);
    ppi_lua_push_pointer(L, out);
    ppi_lua_push_pointer(L, arena);
    lua_pushvalue(L, STACK_ARENA_ALLOC);
    ppi_call_limits lim;
    bool limited = (timeout_ns || cancel) && ppi_lua_limits_begin(L, &lim, timeout_ns, cancel);
    int rc = lua_pcall(L, 5, 0, STACK_TRACEBACK);
    if (PP_UNLIKELY(limited)) ppi_lua_limits_end(L, &lim);
    if (PP_LIKELY(rc == 0)) {
        release_bundle(b);
        set_call_error(out_err, AbiErrorCode_Ok, NULL);
        return;
    }
    /* Error path: copy the text out of the VM, unlock, then report. */
    uint32_t code = AbiErrorCode_Generic;
    char full[4096];
    if (limited && lim.tripped == PP_ABI_CALL_TIMEOUT) {
        code = PP_ABI_CALL_TIMEOUT;
        snprintf(full, sizeof full,
                 "Lua function call timed out after %.3f s (bundle `%s`, contract '%s', fn %u)",
                 (double)timeout_ns / 1e9, b->name, c->name, fn_id);
    } else if (limited && lim.tripped == PP_ABI_CALL_CANCELLED) {
        code = PP_ABI_CALL_CANCELLED;
        snprintf(full, sizeof full, "Lua function call cancelled (bundle `%s`, contract '%s', fn %u)",
                 b->name, c->name, fn_id);
    } else if (rc == LUA_ERRMEM) {
        /* LuaJIT has no emergency collection: reclaim the failed call's garbage now so
         * the next call starts below the limit */
        lua_settop(L, STACK_BASE);
        ppi_lua_vm_collect(L);
        code = PP_ABI_OUT_OF_MEMORY;
        snprintf(full, sizeof full,
                 "Lua function call failed: not enough memory (bundle `%s` reached its memory "
                 "limit of %llu bytes)",
                 b->name, (unsigned long long)b->loader->config.memory_limit);
    } else {
        snprintf(full, sizeof full, "Lua function call failed: %s", ppi_lua_error_text(L));
    }
    lua_settop(L, STACK_BASE);
    pp_runtime *rt = b->rt;
    release_bundle(b);
    /* the caller's message: the error without the traceback */
    ppi_strlcpy(call_error_text, sizeof call_error_text, full);
    char *tb = strstr(call_error_text, "\nstack traceback:");
    if (tb) *tb = '\0';
    ppi_set_last_error(rt, full);
    ppi_log_emit(&rt->log, LogLevel_Error, ppi_view("loader.lua"), ppi_view(full));
    set_call_error(out_err, code, call_error_text);
}

static void vm_create_instance(VmLoaderData loader_data, const HostApi *host, const void *args,
                               GuestContractInstance *out_instance) {
    (void)args;
    if (!out_instance) return;
    out_instance->data = NULL;
    out_instance->contract_id = 0;
    lua_contract *c = loader_data.data;
    if (!c) return;
    lua_bundle *b = c->bundle;
    if (atomic_load_explicit(&b->owner, memory_order_relaxed) == ppi_thread_tag()) return;
    uint64_t timeout_ns;
    pp_cancel *cancel;
    ppi_thread_call_limits(&timeout_ns, &cancel);
    if (!timeout_ns) timeout_ns = b->loader->config.call_timeout_ns;
    char msg[2048];
    msg[0] = '\0';
    if (!acquire_bundle(b, timeout_ns, msg, sizeof msg)) goto report;
    if (!c->retired && c->next_instance < INT32_MAX) {
        atomic_store_explicit(&b->owner, ppi_thread_tag(), memory_order_relaxed);
        lua_State *L = b->L;
        uint64_t id = c->next_instance;
        lua_pushvalue(L, STACK_MAKE_INSTANCE);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
        lua_pushnumber(L, (lua_Number)id);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->factory_ref);
        ppi_lua_push_pointer(L, host);
        ppi_call_limits lim;
        bool limited = (timeout_ns || cancel) && ppi_lua_limits_begin(L, &lim, timeout_ns, cancel);
        int rc = lua_pcall(L, 4, 0, STACK_TRACEBACK);
        if (limited) ppi_lua_limits_end(L, &lim);
        if (rc == 0) {
            c->next_instance++;
            out_instance->data = (void *)(uintptr_t)id;
            out_instance->contract_id = c->contract_id;
        } else {
            snprintf(msg, sizeof msg, "Lua create_instance: factory call failed: %s",
                     limited && lim.tripped ? (lim.tripped == PP_ABI_CALL_TIMEOUT
                                                   ? "timed out"
                                                   : "cancelled")
                                            : ppi_lua_error_text(L));
        }
        lua_settop(L, STACK_BASE);
        atomic_store_explicit(&b->owner, 0, memory_order_relaxed);
    }
    release_bundle(b);
report:
    if (msg[0]) {
        ppi_set_last_error(b->rt, msg);
        ppi_log_emit(&b->rt->log, LogLevel_Error, ppi_view("loader.lua"), ppi_view(msg));
    }
}

static void vm_destroy_instance(VmLoaderData loader_data, const HostApi *host,
                                 GuestContractInstance instance) {
    (void)host;
    lua_contract *c = loader_data.data;
    if (!c || !instance.data || (uintptr_t)instance.data > INT32_MAX) return;
    lua_bundle *b = c->bundle;
    if (atomic_load_explicit(&b->owner, memory_order_relaxed) == ppi_thread_tag()) return;
    ppi_lock_acquire(&b->lock);
    if (c->retired) { /* its instance table died with the old VM */
        ppi_lock_release(&b->lock);
        return;
    }
    lua_State *L = b->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->instances_ref);
    lua_rawgeti(L, -1, (int)(uintptr_t)instance.data);
    bool present = !lua_isnil(L, -1);
    lua_pop(L, 1);
    /* clearing an existing key never allocates; an unknown id is left alone (setting
     * it to nil would insert a key, and an allocation here is unprotected) */
    if (present) {
        lua_pushnil(L);
        lua_rawseti(L, -2, (int)(uintptr_t)instance.data);
    }
    lua_settop(L, STACK_BASE);
    ppi_lock_release(&b->lock);
}

int64_t pp_function_count(const GuestContractInterface *iface) {
    if (!iface) return -1;
    if (iface->dispatch_type == DispatchType_Native) return iface->dispatch.native.function_count;
    if (iface->dispatch.vm.call != vm_dispatch || !iface->dispatch.vm.loader_data.data) return -1;
    const lua_contract *c = iface->dispatch.vm.loader_data.data;
    /* an atomic read, so no lock: callable from a callback inside a call */
    return __atomic_load_n(&c->fn_count, __ATOMIC_RELAXED);
}

/* ── bundles ───────────────────────────────────────────────────────────────── */

static void contract_free(lua_contract *c) {
    free(c->name);
    free(c->fn_refs);
    free(c);
}

static void bundle_free(lua_bundle *b) {
    if (!b) return;
    ppi_lua_vm_close(b->L);
    lua_contract *c = b->contracts;
    while (c) {
        lua_contract *next = c->next;
        contract_free(c);
        c = next;
    }
    free(b->name);
    free(b);
}

static lua_bundle *bundle_find(lua_loader *ld, pp_runtime *rt, uint64_t id) {
    for (lua_bundle *b = ld->bundles; b; b = b->next)
        if (b->rt == rt && b->id == id) return b;
    return NULL;
}

static lua_contract *contract_find(lua_bundle *b, const char *name) {
    for (lua_contract *c = b->contracts; c; c = c->next)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}

/* Point record `c` at the references of `p` (which live in the bundle's new VM). */
static void contract_adopt(lua_contract *c, pending *p) {
    free(c->fn_refs);
    c->fn_refs = p->fn_refs;
    p->fn_refs = NULL;
    __atomic_store_n(&c->fn_count, p->fn_count, __ATOMIC_RELAXED);
    c->factory_ref = p->factory_ref;
    c->default_ref = p->default_ref;
    c->instances_ref = p->instances_ref;
    c->major = p->major;
    c->retired = false;
}

static lua_contract *contract_new(lua_bundle *b, const pending *p) {
    lua_contract *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->name = ppi_strdup(p->name);
    if (!c->name) {
        free(c);
        return NULL;
    }
    char canon[512];
    int n = snprintf(canon, sizeof canon, "guest_contract:%s@%u", p->name, p->major);
    c->contract_id = pp_fnv1a64((const uint8_t *)canon, (size_t)n);
    c->bundle = b;
    c->major = p->major;
    c->next_instance = 1;
    return c;
}

/*
 * Register every pending contract.  Surviving records (reload) are reused so their
 * interface is byte-identical; new records are returned through `fresh` (a list).
 */
static int32_t register_all(lua_bundle *b, init_result *res, lua_contract **fresh,
                            const char *bundle, pp_error *err) {
    const HostApi *host = &b->rt->api;
    for (size_t i = 0; i < res->len; i++) {
        pending *p = &res->items[i];
        lua_contract *c = contract_find(b, p->name);
        if (!c || c->major != p->major) {
            c = contract_new(b, p);
            if (!c) return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
            c->next = *fresh;
            *fresh = c;
            __atomic_store_n(&c->fn_count, p->fn_count, __ATOMIC_RELAXED);
        }
        char canon[512];
        snprintf(canon, sizeof canon, "%s@%u", p->name, p->major);
        PluginDescriptor desc;
        desc.name = ppi_view(p->plugin_name);
        desc.contract_name = ppi_view(canon);
        desc.version.major = p->major;
        desc.version.minor = desc.version.patch = 0;
        GuestContractInterface iface;
        memset(&iface, 0, sizeof iface);
        iface.contract_id = c->contract_id;
        iface.contract_version = desc.version;
        iface.dispatch_type = DispatchType_VirtualMachine;
        iface.create_instance = vm_create_instance;
        iface.destroy_instance = vm_destroy_instance;
        iface.dispatch.vm.call = vm_dispatch;
        iface.dispatch.vm.loader_data.data = c;
        AbiError e = {0, {NULL, 0}};
        host->register_guest_contract(host, &desc, &iface, &e);
        if (e.code != AbiErrorCode_Ok) {
            char last[1024] = "";
            size_t n = host->get_last_error(host, (uint8_t *)last, sizeof last - 1);
            last[n] = '\0';
            if (!n && e.message.len)
                ppi_view_copy(last, sizeof last, e.message);
            char detail[2048];
            snprintf(detail, sizeof detail,
                     "register_guest_contract error for contract '%s': code=%u%s%s", p->name,
                     e.code, last[0] ? ": " : "", last);
            int32_t st = init_failed(err, bundle, detail);
            if (err) err->abi_code = e.code;
            return st;
        }
    }
    return PP_OK;
}

static void free_list(lua_contract *c) {
    while (c) {
        lua_contract *next = c->next;
        contract_free(c);
        c = next;
    }
}

/* First load: give `b` its VM and a complete record per registration before any of
 * them is published. */
static int32_t attach_first(lua_bundle *b, init_result *res, const char *bundle,
                            pp_error *err) {
    for (size_t i = 0; i < res->len; i++) {
        lua_contract *c = contract_new(b, &res->items[i]);
        if (!c) return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        contract_adopt(c, &res->items[i]);
        c->next = b->contracts;
        b->contracts = c;
    }
    b->L = res->L;
    res->L = NULL;
    b->memory_snapshot = ppi_lua_vm_memory(b->L);
    return PP_OK;
}

/* Load or reload `m` into `rt`; `existing` is the bundle being reloaded, or NULL. */
static int32_t load_common(lua_loader *ld, pp_runtime *rt, const pp_manifest *m,
                           const pp_source *src, lua_bundle *existing, pp_error *err) {
    char bundle[256];
    ppi_view_copy(bundle, sizeof bundle, m->name);
    lua_bundle *b = existing;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        ppi_lock_init(&b->lock);
        b->loader = ld;
        b->rt = rt;
        b->id = m->id;
        b->name = ppi_strdup(bundle);
        atomic_init(&b->owner, 0);
        if (!b->name) {
            bundle_free(b);
            return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        }
    }
    int32_t st = pp_runtime_begin_init(rt, m->id, err);
    if (st != PP_OK) {
        if (!existing) bundle_free(b);
        return st;
    }
    init_result res;
    lua_contract *fresh = NULL;
    st = run_init(rt, &ld->config, m, src, bundle, &res, err);
    /* A first load publishes each contract as it registers it, so its records must be
     * complete before: attach them first.  A reload registers into pending slots and
     * swaps only once everything succeeded. */
    if (st == PP_OK && !existing) st = attach_first(b, &res, bundle, err);
    if (st == PP_OK) st = register_all(b, &res, &fresh, bundle, err);
    pp_runtime_end_init(rt);
    if (st != PP_OK) {
        if (!existing) {
            /* nothing of a failed first load may stay registered, and calls that
             * found an early contract must finish before the VM goes */
            ppi_registry_invalidate(&rt->reg, m->id);
            ppi_calls_drain(rt);
            bundle_free(b);
        }
        free_list(fresh);
        init_result_free(&res, true);
        return st;
    }
    if (!existing) {
        init_result_free(&res, false);
        pthread_mutex_lock(&ld->lock);
        b->next = ld->bundles;
        ld->bundles = b;
        pthread_mutex_unlock(&ld->lock);
        return PP_OK;
    }
    /* Reload commit: swap the new VM in under the bundle lock, then close the old one.
     * The wait is bounded: this thread holds the runtime's flow lock, and a call in
     * the bundle may be waiting for it (a guest loading a bundle). */
    const char *busy = NULL;
    uint64_t wait = ld->config.call_timeout_ns ? ld->config.call_timeout_ns : BUSY_WAIT_NS;
    if (atomic_load_explicit(&b->owner, memory_order_relaxed) == ppi_thread_tag())
        busy = "it cannot be reloaded from inside a call into it";
    else if (!ppi_lock_acquire_within(&b->lock, wait))
        busy = "a call into it did not finish in time";
    if (busy) {
        free_list(fresh);
        init_result_free(&res, true);
        return ppi_fail(err, PP_ERR_GENERIC, bundle, NULL, busy,
                        "reload of bundle `%s` not applied: %s; the previous version keeps "
                        "serving",
                        bundle, busy);
    }
    lua_State *old = b->L;
    for (lua_contract *c = b->contracts; c; c = c->next) c->retired = true;
    for (size_t i = 0; i < res.len; i++) {
        lua_contract *c = contract_find(b, res.items[i].name);
        if (!c || c->major != res.items[i].major) {
            for (c = fresh; c && strcmp(c->name, res.items[i].name) != 0; c = c->next) {
            }
        }
        if (c) contract_adopt(c, &res.items[i]);
    }
    /* retired records keep answering FunctionNotAvailable until the bundle goes */
    for (lua_contract *c = b->contracts; c; c = c->next)
        if (c->retired) __atomic_store_n(&c->fn_count, 0, __ATOMIC_RELAXED);
    while (fresh) {
        lua_contract *next = fresh->next;
        fresh->next = b->contracts;
        b->contracts = fresh;
        fresh = next;
    }
    b->L = res.L;
    res.L = NULL;
    ppi_lock_release(&b->lock);
    ppi_lua_vm_close(old);
    init_result_free(&res, false);
    return PP_OK;
}

/* ── the pp_loader vtable ──────────────────────────────────────────────────── */

static int32_t loader_load(void *self, pp_runtime *rt, const pp_manifest *m, const pp_source *src,
                        pp_error *err) {
    lua_loader *ld = self;
    pthread_mutex_lock(&ld->lock);
    bool have = bundle_find(ld, rt, m->id) != NULL;
    pthread_mutex_unlock(&ld->lock);
    if (have) {
        char bundle[256];
        ppi_view_copy(bundle, sizeof bundle, m->name);
        return ppi_fail(err, PP_ERR_ALREADY_LOADED, bundle, NULL, NULL,
                        "bundle `%s` is already loaded in this runtime; unload it first, or "
                        "use reload_bundle to replace it",
                        bundle);
    }
    return load_common(ld, rt, m, src, NULL, err);
}

static int32_t loader_reload(void *self, pp_runtime *rt, const pp_manifest *m, pp_error *err) {
    lua_loader *ld = self;
    pthread_mutex_lock(&ld->lock);
    lua_bundle *b = bundle_find(ld, rt, m->id);
    pthread_mutex_unlock(&ld->lock);
    pp_source src = {PP_SOURCE_PATH, m->path};
    if (!b) {
        char bundle[256];
        ppi_view_copy(bundle, sizeof bundle, m->name);
        return ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, bundle, NULL, NULL,
                        "bundle `%s` was not loaded by this Lua loader", bundle);
    }
    return load_common(ld, rt, m, &src, b, err);
}

static void loader_unload(void *self, pp_runtime *rt, uint64_t bundle_id) {
    lua_loader *ld = self;
    pthread_mutex_lock(&ld->lock);
    lua_bundle **pp = &ld->bundles, *b = NULL;
    while (*pp) {
        if ((*pp)->rt == rt && (*pp)->id == bundle_id) {
            b = *pp;
            *pp = b->next;
            break;
        }
        pp = &(*pp)->next;
    }
    if (b && atomic_load_explicit(&b->owner, memory_order_relaxed) == ppi_thread_tag()) {
        /* A guest unloading its own bundle from inside a raw call: its VM is still on
         * this thread's stack, so keep it (unreachable) until the loader goes away. */
        b->next = ld->orphans;
        ld->orphans = b;
        b = NULL;
    }
    pthread_mutex_unlock(&ld->lock);
    if (!b) return;
    /* wait (bounded) for a call in flight, then free the VM and records; a call that
     * does not finish in time keeps its VM, parked until the loader goes away */
    uint64_t wait = ld->config.call_timeout_ns ? ld->config.call_timeout_ns : BUSY_WAIT_NS;
    if (!ppi_lock_acquire_within(&b->lock, wait)) {
        pthread_mutex_lock(&ld->lock);
        b->next = ld->orphans;
        ld->orphans = b;
        pthread_mutex_unlock(&ld->lock);
        return;
    }
    ppi_lock_release(&b->lock);
    bundle_free(b);
}

static int64_t loader_memory(void *self, pp_runtime *rt, uint64_t bundle_id) {
    lua_loader *ld = self;
    int64_t n = -1;
    pthread_mutex_lock(&ld->lock);
    lua_bundle *b = bundle_find(ld, rt, bundle_id);
    if (b) {
        /* never wait for a running call while holding the loader's lock: a busy
         * bundle reports its size as of its last idle query */
        if (atomic_load_explicit(&b->owner, memory_order_relaxed) != ppi_thread_tag() &&
            ppi_lock_try(&b->lock)) {
            b->memory_snapshot = ppi_lua_vm_memory(b->L);
            ppi_lock_release(&b->lock);
        }
        n = b->memory_snapshot;
    }
    pthread_mutex_unlock(&ld->lock);
    return n;
}

static void free_bundles(lua_bundle *b) {
    while (b) {
        lua_bundle *next = b->next;
        bundle_free(b);
        b = next;
    }
}

static void lua_loader_destroy(void *self) {
    lua_loader *ld = self;
    free_bundles(ld->bundles);
    free_bundles(ld->orphans);
    pthread_mutex_destroy(&ld->lock);
    free(ld);
}

static const pp_loader_vtable lua_vtable = {
    "lua", true, loader_load, loader_reload, loader_unload, loader_memory, lua_loader_destroy,
};

pp_loader *pp_lua_loader_new(const pp_lua_config *cfg) {
    if (cfg && cfg->sandbox > PP_LUA_SANDBOX_RESTRICTED) return NULL;
    lua_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return NULL;
    if (cfg) ld->config = *cfg;
    if (pthread_mutex_init(&ld->lock, NULL) != 0) {
        free(ld);
        return NULL;
    }
    pp_loader *l = pp_loader_new(&lua_vtable, ld);
    if (!l) lua_loader_destroy(ld);
    return l;
}
