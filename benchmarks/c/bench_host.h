/*
 * bench_host.h — setting up our runtime from C with only the public API
 * (csrc/include/polyplug.h): runtime + Lua loader, manifests built in C, and the
 * find / resolve / create_guest_instance steps that give a bench_target.
 */
#ifndef BENCH_HOST_H
#define BENCH_HOST_H

#include <stdbool.h>

#include "bench_loops.h"
#include "polyplug.h"

/* A runtime with the Lua loader registered; exits the process on failure. */
pp_runtime *bench_runtime_new(bool hot_reload);
/* The same, with the loader's call_timeout set (0: none). */
pp_runtime *bench_runtime_limited(uint64_t call_timeout_ns);

/* Load the bundle in `dir` (entry bench.lua, contract bench@1) under the bundle name
 * `name` (its id is FNV-1a-64(name)); returns the bundle id, exits on failure. */
uint64_t bench_load(pp_runtime *rt, const char *dir, const char *name);

/* Reload bundle `name` from `dir`; exits on failure. */
void bench_reload(pp_runtime *rt, const char *dir, const char *name);

/* The bench@1 interface registered by bundle `bundle_id`; exits on failure. */
const GuestContractInterface *bench_iface(pp_runtime *rt, uint64_t bundle_id);

/* A target calling `iface` with the null instance, or with a created instance. */
bench_target bench_target_of(pp_runtime *rt, const GuestContractInterface *iface,
                             bool real_instance);

/* VmRSS of this process in KiB (from /proc/self/status). */
long bench_rss_kib(void);

/* Print one result line: {"key": ..., "value": ..., "bad": ...}. */
void bench_emit(const char *key, double value, uint64_t bad);

void bench_die(const char *what, const pp_error *err);

#endif /* BENCH_HOST_H */
