/*
 * registry_driver.c — the registry (csrc/pp_registry.c) driven one operation per
 * line, for the model-based tests in tests/test_registry_model.py.
 *
 * It links the host core and calls the registry's internal functions directly
 * (pp_internal.h), so a test can open, commit and abort windows, register as any
 * bundle and read back everything: slots, generations, provider order.  Every
 * command answers exactly one line on stdout.
 *
 *   reset                          a fresh registry
 *   reg B CID NAME MAJOR PLUGIN TAG  register; the interface's loader_data is TAG
 *                                  -> "<status name> <abi code>"
 *   begin B | commit B | abort B   windows -> "ok"
 *   inval B                        -> retired count
 *   find CID MIN                   -> "<index> <generation>" (the null handle when none)
 *   findb B CID MIN                -> the same, by bundle
 *   all CID MIN                    -> "<n> <index> <generation> ..."
 *   look INDEX GEN                 -> "invalid", "stale", or "<TAG> <major>"
 *   info INDEX GEN                 -> "<status name>" or "<bundle> <cid> <contract> <plugin> <major>"
 *   slots B                        -> "<n> <cid>:<contract>:<plugin>:<major> ..."
 *   deps B CID...                  declare -> "ok"
 *   drop B                         -> "ok"
 *   declares B CID                 -> 0 or 1
 *   dependson D P                  -> 0 or 1
 *   dependents P                   -> "<n> <id> ...", sorted, each id once
 *   count CID DELTA                -> "ok"
 *   live B                         -> live instances of B's published contracts
 *   resetc B                       -> "ok"
 *   rev                            -> the revision counter
 *   maptest SEED OPS KEYS          the registry's hash map (pp_map.c) against a plain
 *                                  array: OPS random puts, overwrites, gets, removes and
 *                                  iterations over KEYS distinct key pairs
 *                                  -> "ok <final size> <final capacity>" or the first
 *                                  disagreement
 *
 * Numbers are decimal uint64 (contract and bundle ids use the full range).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

static ppi_registry reg;

static void fake_create(VmLoaderData ld, const HostApi *host, const void *args,
                        GuestContractInstance *out) {
    (void)ld;
    (void)host;
    (void)args;
    out->data = NULL;
    out->contract_id = 0;
}

static void fake_destroy(VmLoaderData ld, const HostApi *host, GuestContractInstance inst) {
    (void)ld;
    (void)host;
    (void)inst;
}

static void fake_call(VmLoaderData ld, GuestContractInstance inst, uint32_t fn_id,
                      const void *args, void *out, CallArena *arena, AbiError *err) {
    (void)ld;
    (void)inst;
    (void)fn_id;
    (void)args;
    (void)out;
    (void)arena;
    err->code = 0;
}

static uint64_t num(const char *s) { return strtoull(s, NULL, 10); }

static void print_handle(GuestContractHandle h) { printf("%u %u\n", h.index, h.generation); }

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void do_reg(char **arg) {
    PluginDescriptor desc;
    memset(&desc, 0, sizeof desc);
    desc.contract_name = ppi_view(arg[2]);
    desc.name = ppi_view(arg[4]);
    desc.version.major = (uint32_t)num(arg[3]);
    GuestContractInterface iface;
    memset(&iface, 0, sizeof iface);
    iface.contract_id = num(arg[1]);
    iface.contract_version = desc.version;
    iface.dispatch_type = DispatchType_VirtualMachine;
    iface.create_instance = fake_create;
    iface.destroy_instance = fake_destroy;
    iface.dispatch.vm.call = fake_call;
    iface.dispatch.vm.loader_data.data = (void *)(uintptr_t)num(arg[5]);
    pp_error err;
    pp_error_clear(&err);
    uint32_t code = ppi_registry_register(&reg, num(arg[0]), &desc, &iface, &err);
    printf("%s %u\n", pp_status_name(err.status), code);
}

static void do_slots(uint64_t bundle) {
    size_t n = ppi_registry_bundle_slots(&reg, bundle, NULL, 0);
    pp_slot_info *infos = calloc(n + 1, sizeof *infos);
    size_t got = infos ? ppi_registry_bundle_slots(&reg, bundle, infos, n) : 0;
    printf("%zu", got);
    for (size_t i = 0; i < got && i < n; i++)
        printf(" %" PRIu64 ":%s:%s:%u", infos[i].contract_id, infos[i].contract_name,
               infos[i].plugin_name, infos[i].version.major);
    printf("\n");
    free(infos);
}

static void do_all(uint64_t cid, uint32_t min) {
    size_t n = ppi_registry_find_all(&reg, cid, min, NULL, 0);
    GuestContractHandle *hs = calloc(n + 1, sizeof *hs);
    size_t got = hs ? ppi_registry_find_all(&reg, cid, min, hs, n) : 0;
    printf("%zu", got);
    for (size_t i = 0; i < got && i < n; i++) printf(" %u %u", hs[i].index, hs[i].generation);
    printf("\n");
    free(hs);
}

static void do_dependents(uint64_t provider) {
    size_t n = ppi_registry_dependents(&reg, provider, NULL, 0);
    uint64_t *ids = calloc(n + 1, sizeof *ids);
    size_t got = ids ? ppi_registry_dependents(&reg, provider, ids, n) : 0;
    if (got > n) got = n;
    qsort(ids, got, sizeof *ids, cmp_u64);
    size_t len = 0;
    for (size_t i = 0; i < got; i++)
        if (len == 0 || ids[len - 1] != ids[i]) ids[len++] = ids[i];
    printf("%zu", len);
    for (size_t i = 0; i < len; i++) printf(" %" PRIu64, ids[i]);
    printf("\n");
    free(ids);
}

static void do_deps(uint64_t bundle, char **cids, int n) {
    pp_dependency deps[64];
    memset(deps, 0, sizeof deps);
    if (n > 64) n = 64;
    for (int i = 0; i < n; i++) {
        deps[i].contract = ppi_view("dep");
        deps[i].contract_id = num(cids[i]);
    }
    pp_manifest m;
    memset(&m, 0, sizeof m);
    m.id = bundle;
    m.dependencies = deps;
    m.dependencies_len = (size_t)n;
    ppi_registry_declare_deps(&reg, bundle, &m);
    printf("ok\n");
}

static void do_look(GuestContractHandle h) {
    bool invalid;
    const GuestContractInterface *iface = ppi_registry_lookup(&reg, h, &invalid);
    if (iface)
        printf("%" PRIu64 " %u\n", (uint64_t)(uintptr_t)iface->dispatch.vm.loader_data.data,
               iface->contract_version.major);
    else
        printf("%s\n", invalid ? "invalid" : "stale");
}

static void do_info(GuestContractHandle h) {
    pp_slot_info info;
    pp_error err;
    pp_error_clear(&err);
    if (ppi_registry_handle_info(&reg, h, &info, &err) != PP_OK)
        printf("%s\n", pp_status_name(err.status));
    else
        printf("%" PRIu64 " %" PRIu64 " %s %s %u\n", info.bundle_id, info.contract_id,
               info.contract_name, info.plugin_name, info.version.major);
}

/* xorshift64*: the map test's random numbers, from a seed. */
static uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void do_maptest(uint64_t seed, uint64_t ops, size_t nkeys) {
    /* key pairs: half share k1 or k2 with a neighbour, some are all zero or all ones */
    uint64_t (*keys)[2] = calloc(nkeys, sizeof *keys);
    uint64_t *want = calloc(nkeys, sizeof *want);
    bool *have = calloc(nkeys, sizeof *have);
    size_t *seen = calloc(nkeys, sizeof *seen);
    if (!keys || !want || !have || !seen) {
        printf("oom\n");
        return;
    }
    uint64_t rnd = seed | 1;
    for (size_t i = 0; i < nkeys; i++) {
        keys[i][0] = i % 3 == 0 ? i / 3 : next_random(&rnd);
        keys[i][1] = i % 5 == 0 ? 0 : i % 5 == 1 ? UINT64_MAX : next_random(&rnd);
    }
    ppi_map m = {NULL, 0, 0};
    size_t len = 0;
    const char *bad = NULL;
    uint64_t op = 0;
    for (; op < ops && !bad; op++) {
        size_t k = (size_t)(next_random(&rnd) % nkeys);
        uint64_t roll = next_random(&rnd) % 100;
        /* grow to about two thirds of the keys, then shrink to a few, then grow again */
        bool shrinking = (op / (ops / 4 + 1)) % 2 == 1;
        if (roll < (shrinking ? 15u : 45u)) {
            uint64_t v = next_random(&rnd);
            if (!ppi_map_put(&m, keys[k][0], keys[k][1], v)) bad = "put failed";
            len += !have[k];
            have[k] = true;
            want[k] = v;
        } else if (roll < 70) {
            bool gone = ppi_map_remove(&m, keys[k][0], keys[k][1]);
            if (gone != have[k]) bad = "remove disagrees";
            len -= have[k];
            have[k] = false;
        } else if (roll < 99) {
            uint64_t *v = ppi_map_get(&m, keys[k][0], keys[k][1]);
            if ((v != NULL) != have[k] || (v && *v != want[k])) bad = "get disagrees";
        } else { /* every entry once, each with its value */
            memset(seen, 0, nkeys * sizeof *seen);
            size_t pos = 0, n = 0;
            for (ppi_map_entry *e; (e = ppi_map_next(&m, &pos)); n++) {
                uint64_t *v = ppi_map_get(&m, e->k1, e->k2);
                if (!v || *v != e->value) bad = "iteration disagrees with get";
            }
            if (n != len) bad = "iteration count";
        }
        if (!bad && m.len != len) bad = "size";
        if (!bad && m.cap && (m.cap & (m.cap - 1))) bad = "capacity not a power of two";
        if (!bad && m.len * 4 > m.cap * 3) bad = "fuller than 3/4";
    }
    for (size_t k = 0; k < nkeys && !bad; k++) {
        uint64_t *v = ppi_map_get(&m, keys[k][0], keys[k][1]);
        if ((v != NULL) != have[k] || (v && *v != want[k])) bad = "final contents";
    }
    if (bad)
        printf("%s at op %" PRIu64 "\n", bad, op);
    else
        printf("ok %zu %zu\n", m.len, m.cap);
    ppi_map_free(&m);
    free(keys);
    free(want);
    free(have);
    free(seen);
}

/* One command (already split into words); false for an unknown one. */
static bool run(char **w, int n) {
    const char *c = w[0];
    if (!strcmp(c, "reset")) {
        ppi_registry_destroy(&reg);
        ppi_registry_init(&reg);
        printf("ok\n");
    } else if (!strcmp(c, "reg") && n == 7) {
        do_reg(w + 1);
    } else if (!strcmp(c, "begin") && n == 2) {
        printf("%s\n", ppi_registry_begin_window(&reg, num(w[1])) ? "ok" : "oom");
    } else if (!strcmp(c, "commit") && n == 2) {
        ppi_registry_commit_window(&reg, num(w[1]));
        printf("ok\n");
    } else if (!strcmp(c, "abort") && n == 2) {
        ppi_registry_abort_window(&reg, num(w[1]));
        printf("ok\n");
    } else if (!strcmp(c, "inval") && n == 2) {
        printf("%zu\n", ppi_registry_invalidate(&reg, num(w[1])));
    } else if (!strcmp(c, "find") && n == 3) {
        print_handle(ppi_registry_find(&reg, num(w[1]), (uint32_t)num(w[2]), false, 0));
    } else if (!strcmp(c, "findb") && n == 4) {
        print_handle(ppi_registry_find(&reg, num(w[2]), (uint32_t)num(w[3]), true, num(w[1])));
    } else if (!strcmp(c, "all") && n == 3) {
        do_all(num(w[1]), (uint32_t)num(w[2]));
    } else if (!strcmp(c, "look") && n == 3) {
        do_look((GuestContractHandle){(uint32_t)num(w[1]), (uint32_t)num(w[2])});
    } else if (!strcmp(c, "info") && n == 3) {
        do_info((GuestContractHandle){(uint32_t)num(w[1]), (uint32_t)num(w[2])});
    } else if (!strcmp(c, "slots") && n == 2) {
        do_slots(num(w[1]));
    } else if (!strcmp(c, "deps") && n >= 2) {
        do_deps(num(w[1]), w + 2, n - 2);
    } else if (!strcmp(c, "drop") && n == 2) {
        ppi_registry_drop_deps(&reg, num(w[1]));
        printf("ok\n");
    } else if (!strcmp(c, "declares") && n == 3) {
        printf("%d\n", ppi_registry_declares(&reg, num(w[1]), num(w[2])));
    } else if (!strcmp(c, "dependson") && n == 3) {
        printf("%d\n", ppi_registry_depends_on(&reg, num(w[1]), num(w[2])));
    } else if (!strcmp(c, "dependents") && n == 2) {
        do_dependents(num(w[1]));
    } else if (!strcmp(c, "count") && n == 3) {
        ppi_registry_count_instance(&reg, num(w[1]), strtoll(w[2], NULL, 10));
        printf("ok\n");
    } else if (!strcmp(c, "live") && n == 2) {
        printf("%lld\n", (long long)ppi_registry_live_instances(&reg, num(w[1])));
    } else if (!strcmp(c, "resetc") && n == 2) {
        ppi_registry_reset_counts(&reg, num(w[1]));
        printf("ok\n");
    } else if (!strcmp(c, "maptest") && n == 4) {
        do_maptest(num(w[1]), num(w[2]), (size_t)num(w[3]));
    } else if (!strcmp(c, "rev") && n == 1) {
        printf("%" PRIu64 "\n", (uint64_t)atomic_load(&reg.revision));
    } else {
        return false;
    }
    return true;
}

int main(void) {
    if (ppi_registry_init(&reg) != 0) return 2;
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        char *w[80];
        int n = 0;
        for (char *tok = strtok(line, " \t\r\n"); tok && n < 80; tok = strtok(NULL, " \t\r\n"))
            w[n++] = tok;
        if (n == 0) continue;
        if (!run(w, n)) {
            printf("error: bad command %s (%d words)\n", w[0], n);
            fflush(stdout);
            return 2;
        }
        fflush(stdout);
    }
    ppi_registry_destroy(&reg);
    return 0;
}
