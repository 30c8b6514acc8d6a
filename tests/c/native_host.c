/*
 * native_host.c — the smallest C host of a native bundle, public headers only: load the
 * bundle at a path (the native loader beside the Lua one), call fn 0 of <contract>@1
 * with a string, hot-reload it from disk, call again, unload, free.
 *
 *   native_host <bundle dir> <contract> <name>
 *
 * Prints "<greeting>" after the load and "reloaded: <greeting>" after the reload; exit
 * status 1 with the error on failure.
 */
#include <stdio.h>
#include <string.h>

#include "polyplug.h"

static StringView sv(const char *s) {
    StringView v = {(const uint8_t *)s, strlen(s)};
    return v;
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "native_host: %s: %s\n", what, why);
    return 1;
}

/* fn 0 of the contract through its registry handle: a string in, a string out. */
static int greet(pp_runtime *rt, uint64_t cid, const char *name, const char *prefix) {
    GuestContractHandle h;
    pp_error err;
    pp_error_clear(&err);
    if (pp_registry_find(rt, cid, 1, &h, &err)) return fail("find", err.message);
    StringView arg = sv(name), out = {NULL, 0};
    AbiError e;
    if (pp_call_handle(rt, h.index, h.generation, NULL, 0, 0, &arg, &out, NULL, &e))
        return fail("call", e.message.len ? (const char *)e.message.ptr : "failed");
    printf("%s%.*s\n", prefix, (int)out.len, (const char *)out.ptr);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) return fail("usage", "native_host <bundle dir> <contract> <name>");
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.hot_reload_enabled = true;
    cfg.log_max_level = LogLevel_Warn;
    pp_error err;
    pp_error_clear(&err);
    pp_runtime *rt = pp_runtime_new(&cfg, &err);
    if (!rt) return fail("runtime", err.message);
    pp_loader *native = pp_native_loader_new(NULL), *lua = pp_lua_loader_new(NULL);
    int rc = pp_runtime_add_loader(rt, native, &err) || pp_runtime_add_loader(rt, lua, &err);
    pp_loader_release(native);
    pp_loader_release(lua);
    char canon[512];
    snprintf(canon, sizeof canon, "guest_contract:%s@1", argv[2]);
    uint64_t cid = pp_fnv1a64((const uint8_t *)canon, strlen(canon));
    if (rc || pp_runtime_load_path(rt, sv(argv[1]), &err))
        rc = fail("load", err.message);
    else if (greet(rt, cid, argv[3], "") != 0)
        rc = 1;
    else if (pp_runtime_reload_path(rt, sv(argv[1]), &err))
        rc = fail("reload", err.message);
    else
        rc = greet(rt, cid, argv[3], "reloaded: ");
    pp_runtime_free(rt);
    return rc;
}
