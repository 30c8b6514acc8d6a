/*
 * bench_scale.c — contract lookups as bundles are added (issue 19), from C with the
 * public API only.
 *
 *   bench_scale lookup SIZES CALLS ROT
 *
 * SIZES is a comma-separated list (10,1000,10000), at most 8 sizes.  For each size a
 * runtime is filled with that many bundles, scale_00000, scale_00001, ..., each loaded
 * from a Lua source that registers its own contract scale.c<i>@1.  Then CALLS
 * HostApi.find_guest_contract lookups of the first contract registered and CALLS of
 * the last one are timed in every runtime, in CHUNKS rounds that each time a slice
 * of every figure (in an order rotated by ROT), so that whatever else the machine
 * does falls on all sizes alike.  Keys: c.find.first.<size>, c.find.last.<size>: ns
 * per lookup, the fastest slice (other processes only ever add time; the figures are
 * compared as ratios).  A lookup that does not return the contract's handle counts
 * as bad.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_host.h"

enum { CHUNKS = 20, MAX_SIZES = 8 };

static StringView sv(const char *s) { return (StringView){(const uint8_t *)s, strlen(s)}; }

static uint64_t fnv(const char *s) { return pp_fnv1a64((const uint8_t *)s, strlen(s)); }

static void load_one(pp_runtime *rt, int i) {
    char name[32], code[512];
    snprintf(name, sizeof name, "scale_%05d", i);
    snprintf(code, sizeof code,
             "function polyplug_init()\n"
             "    return { [\"scale.c%05d\"] = { contract_version = 1, plugin_name = \"scale\",\n"
             "        factory = function() return {} end, functions = { [0] = function() end } } },\n"
             "        { code = 0 }\n"
             "end\n",
             i);
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.name = sv(name);
    m.id = fnv(name);
    m.loader = sv("lua");
    m.file = sv("scale.lua");
    m.path = sv(".");
    m.version_text = sv("1.0.0");
    m.version = (Version){1, 0, 0};
    pp_source src = {PP_SOURCE_CODE, sv(code)};
    pp_error err;
    pp_error_clear(&err);
    if (pp_runtime_load(rt, &m, &src, &err) != PP_OK) bench_die("pp_runtime_load", &err);
}

/* One figure: lookups of contract scale.c<index>@1 in `rt`. */
typedef struct figure {
    pp_runtime *rt;
    char key[48];
    uint64_t cid;
    GuestContractHandle want;
    double best; /* ns per lookup, the fastest slice so far */
    uint64_t bad;
} figure;

static void figure_init(figure *f, pp_runtime *rt, int size, bool last) {
    char text[64];
    snprintf(text, sizeof text, "guest_contract:scale.c%05d@1", last ? size - 1 : 0);
    f->rt = rt;
    f->cid = fnv(text);
    f->best = -1;
    f->bad = 0;
    snprintf(f->key, sizeof f->key, "c.find.%s.%d", last ? "last" : "first", size);
    pp_error err;
    pp_error_clear(&err);
    if (pp_registry_find(rt, f->cid, 1, &f->want, &err) != PP_OK)
        bench_die("pp_registry_find", &err);
}

/* Time one slice of `n` lookups. */
static void figure_slice(figure *f, uint64_t n) {
    const HostApi *host = pp_runtime_host(f->rt);
    uint64_t t0 = bench_now_ns();
    for (uint64_t k = 0; k < n; k++) {
        GuestContractHandle h = host->find_guest_contract(host, f->cid, 1);
        f->bad += h.index != f->want.index || h.generation != f->want.generation;
    }
    double ns = (double)(bench_now_ns() - t0) / (double)n;
    if (f->best < 0 || ns < f->best) f->best = ns;
}

static int mode_lookup(const char *sizes, uint64_t calls, int rot) {
    pp_runtime *rts[MAX_SIZES];
    figure figs[2 * MAX_SIZES];
    int nsizes = 0;
    for (const char *p = sizes; *p && nsizes < MAX_SIZES; nsizes++) {
        int size = atoi(p);
        if (size < 1) bench_die("bench_scale: a size below 1", NULL);
        rts[nsizes] = bench_runtime_new(false);
        for (int i = 0; i < size; i++) load_one(rts[nsizes], i);
        figure_init(&figs[2 * nsizes], rts[nsizes], size, false);
        figure_init(&figs[2 * nsizes + 1], rts[nsizes], size, true);
        p = strchr(p, ',');
        p = p ? p + 1 : "";
    }
    int nfigs = 2 * nsizes;
    uint64_t per = calls / CHUNKS ? calls / CHUNKS : 1;
    for (int f = 0; f < nfigs; f++) figure_slice(&figs[f], per); /* warm-up */
    for (int f = 0; f < nfigs; f++) figs[f].best = -1;
    for (int c = 0; c < CHUNKS; c++)
        for (int k = 0; k < nfigs; k++) figure_slice(&figs[(k + rot + c) % nfigs], per);
    for (int f = 0; f < nfigs; f++) bench_emit(figs[f].key, figs[f].best, figs[f].bad);
    for (int r = 0; r < nsizes; r++) pp_runtime_free(rts[r]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[1], "lookup") != 0) {
        fprintf(stderr, "usage: %s lookup SIZES CALLS ROT\n", argv[0]);
        return 2;
    }
    return mode_lookup(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]));
}
