/*
 * pp_lua_init.c — loading a bundle's code: the entry file (Path sources, read once
 * and checked for UTF-8), a fresh VM, the entry chunk, and the polyplug_init
 * protocol (lua-loader.md §2): two returned tables, a status table, registrations
 * keyed by bare contract name with 0-based function tables and a factory.
 *
 * Rules: guest code runs only inside lua_pcall/lua_cpcall with the traceback handler;
 * the init result is read raw (no metamethods) inside a protected call, so a hostile
 * table or an allocation failure is an error, not a LuaJIT panic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "pp_lua_internal.h"

enum { STACK_TRACEBACK = PPI_STACK_TRACEBACK, STACK_BASE = PPI_STACK_BASE };

/* Function ids a contract may use: the registry takes any uint32, a Lua table indexes
 * with int; this bound keeps the per-contract reference array reasonable. */
#define MAX_FUNCTIONS (1u << 20)

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
    char *buf = NULL;
    size_t len = 0;
    const char *why = NULL;
    bool ok;
    if (m->files) {
        /* the verified bytes of a signed bundle: the directory may have changed since */
        StringView data;
        ok = pp_fileset_get(m->files, m->file, &data) && (buf = malloc(data.len + 1)) != NULL;
        if (ok) {
            memcpy(buf, data.ptr, data.len);
            len = data.len;
        } else {
            why = "the file is not among the bundle's verified files";
        }
    } else {
        ok = ppi_read_regular_file(full, &buf, &len, &why);
    }
    free(file);
    if (ok && !ppi_utf8_valid((const uint8_t *)buf, len)) {
        free(buf);
        ok = false;
        why = "stream did not contain valid UTF-8";
    }
    if (!ok) {
        char detail[4200];
        snprintf(detail, sizeof detail, "Lua script load failed at %s: %s", full, why);
        return ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, detail,
                        "init failed for bundle `%s`: %s", bundle, detail);
    }
    out->owned = buf;
    out->text = buf;
    out->len = len;
    return PP_OK;
}

/* ── running polyplug_init and reading its registrations ───────────────────── */



void ppi_lua_init_result_free(lua_init_result *r, bool close_vm) {
    for (size_t i = 0; i < r->len; i++) {
        free(r->items[i].name);
        free(r->items[i].plugin_name);
        free(r->items[i].fn_refs);
    }
    free(r->items);
    if (close_vm && r->L) ppi_lua_vm_close(r->rt, r->L);
    memset(r, 0, sizeof *r);
}

/* InitFailed with `detail` as the inner error text. */
int32_t ppi_lua_init_failed(pp_error *err, const char *bundle, const char *detail) {
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
    return strcmp(((const lua_pending *)a)->name, ((const lua_pending *)b)->name);
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
static bool read_registration(lua_State *L, const char *bundle, const HostApi *host,
                              lua_pending *p, int handler, char *why, size_t why_len) {
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
        if (count == MAX_FUNCTIONS) {
            snprintf(why, why_len,
                     "contract '%s' has more than %u functions (ids 0..%u); split it into "
                     "several contracts",
                     name, MAX_FUNCTIONS, MAX_FUNCTIONS - 1);
            return false;
        }
        lua_rawgeti(L, fns, (int)count);
        bool stop = lua_isnil(L, -1);
        lua_pop(L, 1);
        if (stop) break;
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
    lua_init_result *res;
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
    lua_init_result *res = cx->res;
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
        if (!ppi_grow((void **)&res->items, &cap, res->len + 1, sizeof(lua_pending)))
            return collect_fail(cx, "out of memory%s%s", "", "");
        memset(&res->items[res->len], 0, sizeof(lua_pending));
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
    qsort(res->items, res->len, sizeof(lua_pending), compare_pending);
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
                         const source_text *s, const char *bundle, lua_init_result *res,
                         pp_error *err) {
    char detail[2048];
    if (luaL_loadbuffer(L, s->text, s->len, s->chunk) != 0 ||
        lua_pcall(L, 0, 0, STACK_TRACEBACK) != 0) {
        snprintf(detail, sizeof detail, "Lua script load failed for %s: %s", s->chunk + 1,
                 ppi_lua_error_text(L));
        return ppi_lua_init_failed(err, bundle, detail);
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
        return ppi_lua_init_failed(err, bundle, detail);
    }
    lua_settop(L, STACK_BASE);
    if (cx.failed) return ppi_lua_init_failed(err, bundle, cx.detail);
    return PP_OK;
}

/*
 * Build a VM, run the entry chunk and polyplug_init, and read the registrations
 * (sorted by name).  Must run inside the bundle's init window.  The loader's call
 * timeout also bounds initialisation, so a bundle that never finishes loading fails.
 */
int32_t ppi_lua_run_init(pp_runtime *rt, const pp_lua_config *config, const pp_manifest *m,
                         const pp_source *src, const char *bundle, lua_init_result *res,
                         pp_error *err) {
    memset(res, 0, sizeof *res);
    res->rt = rt;
    /* loads nest (a guest, an init or a finalizer loading or reloading a bundle): each
     * level runs a whole init on this thread's C stack */
    size_t left = ppi_cstack_left();
    if (left < 4 * PPI_CSTACK_RESERVE)
        return ppi_fail(err, PP_ERR_INIT_FAILED, bundle, NULL, "C stack overflow",
                        "init failed for bundle `%s`: C stack overflow: %zu KiB of this "
                        "thread's stack left (loads nested too deeply)",
                        bundle, left / 1024);
    source_text s;
    int32_t st = read_source(m, src, bundle, &s, err);
    if (st == PP_OK) {
        lua_State *L = ppi_lua_vm_new(rt, s.dir, m->files, bundle, config, err);
        if (!L) {
            st = err ? err->status : PP_ERR_INIT_FAILED;
        } else {
            res->L = L;
            /* init counts as a call: it has the loader's time limit (or what is left
             * of an enclosing call's) */
            ppi_call call;
            ppi_lua_call_push(&call, rt, NULL, config->call_timeout_ns, NULL);
            ppi_lua_limits_begin(L, &call);
            st = run_entry(rt, L, m, &s, bundle, res, err);
            ppi_lua_limits_end(L, &call);
            ppi_lua_call_pop(&call);
        }
    }
    source_free(&s); /* read_source may have allocated even when it failed */
    return st;
}
