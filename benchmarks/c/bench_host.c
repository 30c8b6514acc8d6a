/* bench_host.c — see bench_host.h. */
#include "bench_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bench_die(const char *what, const pp_error *err) {
    fprintf(stderr, "bench: %s failed%s%s\n", what, err ? ": " : "", err ? err->message : "");
    exit(2);
}

static StringView sv(const char *s) { return (StringView){(const uint8_t *)s, strlen(s)}; }

static pp_runtime *runtime_with(bool hot_reload, const pp_lua_config *lua_cfg) {
    RuntimeConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.compatibility = Compatibility_Strict;
    cfg.hot_reload_enabled = hot_reload;
    cfg.log_max_level = LogLevel_Warn;
    pp_error err;
    pp_error_clear(&err);
    pp_runtime *rt = pp_runtime_new(&cfg, &err);
    if (!rt) bench_die("pp_runtime_new", &err);
    pp_loader *lua = pp_lua_loader_new(lua_cfg);
    if (!lua) bench_die("pp_lua_loader_new", NULL);
    if (pp_runtime_add_loader(rt, lua, &err) != PP_OK) bench_die("pp_runtime_add_loader", &err);
    pp_loader_release(lua); /* the runtime holds its own reference */
    return rt;
}

pp_runtime *bench_runtime_new(bool hot_reload) { return runtime_with(hot_reload, NULL); }

pp_runtime *bench_runtime_limited(uint64_t call_timeout_ns) {
    pp_lua_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.call_timeout_ns = call_timeout_ns;
    return runtime_with(false, &cfg);
}

/* The manifest of benchmarks/bundles/bench/manifest.toml, under another name. */
static void bench_manifest(pp_manifest *m, StringView *provides, const char *dir,
                           const char *name) {
    memset(m, 0, sizeof *m);
    *provides = sv("bench@1");
    m->name = sv(name);
    m->id = pp_fnv1a64((const uint8_t *)name, strlen(name));
    m->loader = sv("lua");
    m->file = sv("bench.lua");
    m->path = sv(dir);
    m->version_text = sv("1.0.0");
    m->version = (Version){1, 0, 0};
    m->provides = provides;
    m->provides_len = 1;
}

uint64_t bench_load(pp_runtime *rt, const char *dir, const char *name) {
    pp_manifest m;
    StringView provides;
    bench_manifest(&m, &provides, dir, name);
    pp_source src = {PP_SOURCE_PATH, sv(dir)};
    pp_error err;
    pp_error_clear(&err);
    if (pp_runtime_load(rt, &m, &src, &err) != PP_OK) bench_die("pp_runtime_load", &err);
    return m.id;
}

void bench_reload(pp_runtime *rt, const char *dir, const char *name) {
    pp_manifest m;
    StringView provides;
    bench_manifest(&m, &provides, dir, name);
    pp_error err;
    pp_error_clear(&err);
    if (pp_runtime_reload(rt, &m, &err) != PP_OK) bench_die("pp_runtime_reload", &err);
}

const GuestContractInterface *bench_iface(pp_runtime *rt, uint64_t bundle_id) {
    static const char key[] = "guest_contract:bench@1";
    uint64_t cid = pp_fnv1a64((const uint8_t *)key, sizeof key - 1);
    GuestContractHandle h;
    pp_error err;
    pp_error_clear(&err);
    if (pp_registry_find_by_bundle(rt, bundle_id, cid, 1, &h, &err) != PP_OK)
        bench_die("pp_registry_find_by_bundle", &err);
    /* through the HostApi table, as a plain C host would */
    const HostApi *host = pp_runtime_host(rt);
    const GuestContractInterface *iface = host->resolve_guest_contract(host, h);
    if (!iface || iface->dispatch_type != DispatchType_VirtualMachine)
        bench_die("resolve_guest_contract", NULL);
    return iface;
}

bench_target bench_target_of(pp_runtime *rt, const GuestContractInterface *iface,
                             bool real_instance) {
    bench_target t;
    t.call = iface->dispatch.vm.call;
    t.loader_data = iface->dispatch.vm.loader_data;
    t.instance = (GuestContractInstance){NULL, 0};
    if (real_instance) {
        const HostApi *host = pp_runtime_host(rt);
        host->create_guest_instance(host, iface, NULL, &t.instance);
        if (!t.instance.data) bench_die("create_guest_instance", NULL);
    }
    return t;
}

long bench_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

void bench_emit(const char *key, double value, uint64_t bad) {
    printf("{\"key\": \"%s\", \"value\": %.6g, \"bad\": %llu}\n", key, value,
           (unsigned long long)bad);
    fflush(stdout);
}
