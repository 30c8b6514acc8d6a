/*
 * pp_registry.c — guest-contract slots with generations (abi-runtime.md §6).
 *
 * A slot names a registration: {index, generation} is a handle, and every time a
 * slot is vacated its generation is bumped so old handles go stale.  Slots live in
 * fixed chunks that never move, and each registration gets its own interface block
 * (ppi_iface) that is never freed before the registry: resolve hands out a pointer
 * into it, and that pointer keeps calling the same loader record whatever later
 * happens to the slot.  A reused slot gets a new block, so an old interface pointer
 * never reaches the new occupant.
 *
 * Locking: `reg->lock` (a leaf rwlock) guards everything except what
 * ppi_registry_lookup reads without it: a slot's `published` block pointer and its
 * generation, which writers update with release stores (publish: block pointer;
 * vacate: clear the pointer, then bump the generation).  Nothing is called out while
 * the lock is held.
 *
 * Load and reload windows: while a bundle's window is open, its registrations are
 * PENDING — recorded but invisible.  Commit publishes them together (a contract the
 * bundle already published keeps its slot and generation, so old handles resolve
 * to the new version); abort vacates them.  A failed load therefore never showed
 * anything to anybody.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

static const GuestContractHandle NULL_HANDLE = {UINT32_MAX, 0};

int ppi_registry_init(ppi_registry *reg) {
    memset(reg, 0, sizeof *reg);
    atomic_init(&reg->revision, 0);
    atomic_init(&reg->slots_len, 0);
    return pthread_rwlock_init(&reg->lock, NULL);
}

static inline ppi_slot *slot_at(ppi_registry *reg, uint32_t i) {
    return &reg->chunks[i >> PPI_SLOT_CHUNK_BITS][i & (PPI_SLOT_CHUNK - 1)];
}

static uint32_t slots_len(ppi_registry *reg) {
    return atomic_load_explicit(&reg->slots_len, memory_order_acquire);
}

void ppi_registry_destroy(ppi_registry *reg) {
    uint32_t n = slots_len(reg);
    for (uint32_t i = 0; i < n; i++) {
        ppi_slot *s = slot_at(reg, i);
        free(s->contract_name);
        free(s->plugin_name);
        if (s->state == PPI_SLOT_PENDING) free(s->block); /* never published */
    }
    for (size_t c = 0; c < PPI_SLOT_CHUNKS && reg->chunks[c]; c++) free(reg->chunks[c]);
    ppi_iface *b = reg->blocks;
    while (b) {
        ppi_iface *next = b->next_all;
        free(b);
        b = next;
    }
    free(reg->index);
    free(reg->deps);
    free(reg->windows);
    free(reg->counts);
    pthread_rwlock_destroy(&reg->lock);
}

static void bump_revision(ppi_registry *reg) {
    atomic_fetch_add_explicit(&reg->revision, 1, memory_order_release);
}

static bool in_window(const ppi_registry *reg, uint64_t bundle_id) {
    for (size_t i = 0; i < reg->windows_len; i++)
        if (reg->windows[i] == bundle_id) return true;
    return false;
}

/* ── slots ─────────────────────────────────────────────────────────────────── */

/* The lowest empty slot, else a new one; UINT32_MAX when out of memory or slots. */
static uint32_t slot_acquire(ppi_registry *reg) {
    uint32_t n = slots_len(reg);
    for (uint32_t i = reg->free_hint; i < n; i++) {
        if (slot_at(reg, i)->state == PPI_SLOT_EMPTY) {
            reg->free_hint = i + 1;
            return i;
        }
    }
    reg->free_hint = n + 1;
    if (n >= (uint32_t)PPI_SLOT_CHUNKS * PPI_SLOT_CHUNK) return UINT32_MAX;
    uint32_t chunk = n >> PPI_SLOT_CHUNK_BITS;
    if (!reg->chunks[chunk]) {
        reg->chunks[chunk] = calloc(PPI_SLOT_CHUNK, sizeof(ppi_slot));
        if (!reg->chunks[chunk]) return UINT32_MAX;
        for (uint32_t k = 0; k < PPI_SLOT_CHUNK; k++) {
            atomic_init(&reg->chunks[chunk][k].published, NULL);
            atomic_init(&reg->chunks[chunk][k].generation, 0);
        }
    }
    atomic_store_explicit(&reg->slots_len, n + 1, memory_order_release);
    return n;
}

static void index_remove_slot(ppi_registry *reg, uint32_t slot) {
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->index[i] == slot) {
            memmove(&reg->index[i], &reg->index[i + 1],
                    (reg->index_len - i - 1) * sizeof reg->index[0]);
            reg->index_len--;
            return;
        }
    }
}

/* Make a pending slot's block visible (the caller has reserved an index entry). */
static void publish(ppi_registry *reg, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    s->state = PPI_SLOT_PUBLISHED;
    s->block->next_all = reg->blocks;
    reg->blocks = s->block;
    reg->index[reg->index_len++] = i;
    atomic_store_explicit(&s->published, s->block, memory_order_release);
}

/* Empty slot `i`; its generation moves on, so every handle to it goes stale.  A
 * block that was published stays (in reg->blocks); a pending one is freed. */
static void vacate(ppi_registry *reg, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    if (s->state == PPI_SLOT_PUBLISHED || s->state == PPI_SLOT_SURVIVING) {
        index_remove_slot(reg, i);
    } else if (s->state == PPI_SLOT_PENDING) {
        free(s->block);
    }
    atomic_store_explicit(&s->published, NULL, memory_order_relaxed);
    atomic_store_explicit(&s->generation, atomic_load_explicit(&s->generation,
                                                               memory_order_relaxed) + 1,
                          memory_order_release);
    free(s->contract_name);
    free(s->plugin_name);
    s->contract_name = s->plugin_name = NULL;
    s->block = NULL;
    s->state = PPI_SLOT_EMPTY;
    s->bundle_id = s->contract_id = 0;
    if (i < reg->free_hint) reg->free_hint = i;
}

/* ── registration ──────────────────────────────────────────────────────────── */

static uint32_t duplicate(pp_error *err, const char *contract, const char *plugin) {
    ppi_fail(err, PP_ERR_DUPLICATE_PROVIDER, contract, NULL, plugin,
             "duplicate provider for contract `%s`: `%s` already registered", contract, plugin);
    if (err) err->abi_code = AbiErrorCode_DuplicateProvider;
    return AbiErrorCode_DuplicateProvider;
}

uint32_t ppi_registry_register(ppi_registry *reg, uint64_t bundle_id,
                               const PluginDescriptor *desc, const GuestContractInterface *iface,
                               pp_error *err) {
    char *contract = ppi_strndup_view(desc->contract_name);
    char *plugin = ppi_strndup_view(desc->name);
    ppi_iface *block = malloc(sizeof *block);
    if (!contract || !plugin || !block) {
        free(contract);
        free(plugin);
        free(block);
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory registering a contract");
        return AbiErrorCode_Generic;
    }
    block->iface = *iface;
    block->next_all = NULL;
    uint32_t code = AbiErrorCode_Ok;
    ppi_wrlock(&reg->lock);
    bool windowed = in_window(reg, bundle_id);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->contract_id != iface->contract_id) continue;
        if (strcmp(s->contract_name, contract) != 0) {
            ppi_fail(err, PP_ERR_ID_COLLISION, s->contract_name, NULL, contract,
                     "contract ID collision: hash=0x%016llX claimed by both `%s` and `%s`",
                     (unsigned long long)iface->contract_id, s->contract_name, contract);
            code = AbiErrorCode_Generic;
            goto out;
        }
        if (s->bundle_id == bundle_id && !windowed) {
            code = duplicate(err, contract, s->plugin_name);
            goto out;
        }
    }
    /* the same contract twice inside one window */
    uint32_t n = windowed ? slots_len(reg) : 0;
    for (uint32_t i = 0; i < n; i++) {
        const ppi_slot *s = slot_at(reg, i);
        if (s->state == PPI_SLOT_PENDING && s->bundle_id == bundle_id &&
            s->contract_id == iface->contract_id) {
            code = duplicate(err, contract, s->plugin_name);
            goto out;
        }
    }
    uint32_t idx = slot_acquire(reg);
    if (idx == UINT32_MAX ||
        (!windowed && !ppi_grow((void **)&reg->index, &reg->index_cap, reg->index_len + 1,
                                sizeof reg->index[0]))) {
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory registering a contract");
        code = AbiErrorCode_Generic;
        goto out;
    }
    ppi_slot *s = slot_at(reg, idx);
    s->block = block;
    s->bundle_id = bundle_id;
    s->contract_id = iface->contract_id;
    s->contract_name = contract;
    s->plugin_name = plugin;
    s->version = desc->version;
    s->state = PPI_SLOT_PENDING;
    contract = plugin = NULL;
    block = NULL;
    if (!windowed) publish(reg, idx);
    bump_revision(reg);
out:
    ppi_rwunlock(&reg->lock);
    free(contract);
    free(plugin);
    free(block);
    return code;
}

/* ── lookups ───────────────────────────────────────────────────────────────── */

GuestContractHandle ppi_registry_find(ppi_registry *reg, uint64_t contract_id,
                                      uint32_t min_major, bool by_bundle, uint64_t bundle_id) {
    GuestContractHandle h = NULL_HANDLE;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->contract_id != contract_id) continue;
        if (s->block->iface.contract_version.major < min_major) continue;
        if (by_bundle && s->bundle_id != bundle_id) continue;
        h.index = reg->index[i];
        h.generation = atomic_load_explicit(&s->generation, memory_order_relaxed);
        break;
    }
    ppi_rwunlock(&reg->lock);
    return h;
}

size_t ppi_registry_find_all(ppi_registry *reg, uint64_t contract_id, uint32_t min_major,
                             GuestContractHandle *out, size_t cap) {
    size_t n = 0;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->contract_id != contract_id) continue;
        if (s->block->iface.contract_version.major < min_major) continue;
        if (n < cap) {
            out[n].index = reg->index[i];
            out[n].generation = atomic_load_explicit(&s->generation, memory_order_relaxed);
        }
        n++;
    }
    ppi_rwunlock(&reg->lock);
    return n;
}

/*
 * Lock-free: read the generation, the published block, and the generation again.  A
 * vacate clears the block and then bumps the generation; a reuse publishes the new
 * block after that bump.  So a block read between two equal generation reads that
 * match the handle belongs to the handle's registration (or to its reload).
 */
const GuestContractInterface *ppi_registry_lookup(ppi_registry *reg, GuestContractHandle h,
                                                  bool *invalid) {
    *invalid = h.index >= slots_len(reg);
    if (*invalid) return NULL;
    ppi_slot *s = slot_at(reg, h.index);
    uint32_t g1 = atomic_load_explicit(&s->generation, memory_order_acquire);
    ppi_iface *b = atomic_load_explicit(&s->published, memory_order_acquire);
    uint32_t g2 = atomic_load_explicit(&s->generation, memory_order_relaxed);
    if (!b || g1 != h.generation || g2 != g1) return NULL;
    return &b->iface;
}

int32_t ppi_registry_resolve(ppi_registry *reg, GuestContractHandle h,
                             const GuestContractInterface **out, pp_error *err) {
    bool invalid;
    *out = ppi_registry_lookup(reg, h, &invalid);
    if (*out) return PP_OK;
    int32_t st;
    if (invalid) {
        st = ppi_fail(err, PP_ERR_INVALID_HANDLE, NULL, NULL, NULL,
                      "invalid plugin handle: index=%u is out of bounds", h.index);
    } else {
        st = ppi_fail(err, PP_ERR_STALE_HANDLE, NULL, NULL, NULL,
                      "stale plugin handle: index=%u refers to a vacated or recycled slot "
                      "(its bundle was unloaded or the contract removed)",
                      h.index);
        if (err) err->abi_code = AbiErrorCode_StaleHandle;
    }
    if (err) snprintf(err->detail, sizeof err->detail, "%u", h.index);
    return st;
}

static void fill_info(const ppi_slot *s, pp_slot_info *out) {
    out->bundle_id = s->bundle_id;
    out->contract_id = s->contract_id;
    out->version = s->block->iface.contract_version;
    ppi_strlcpy(out->contract_name, sizeof out->contract_name, s->contract_name);
    ppi_strlcpy(out->plugin_name, sizeof out->plugin_name, s->plugin_name);
}

int32_t ppi_registry_handle_info(ppi_registry *reg, GuestContractHandle h, pp_slot_info *out,
                                 pp_error *err) {
    const GuestContractInterface *iface;
    ppi_rdlock(&reg->lock);
    int32_t st = ppi_registry_resolve(reg, h, &iface, err);
    if (st == PP_OK) fill_info(slot_at(reg, h.index), out);
    ppi_rwunlock(&reg->lock);
    return st;
}

size_t ppi_registry_bundle_slots(ppi_registry *reg, uint64_t bundle_id, pp_slot_info *out,
                                 size_t cap) {
    size_t n = 0;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->bundle_id != bundle_id) continue;
        if (n < cap) fill_info(s, &out[n]);
        n++;
    }
    ppi_rwunlock(&reg->lock);
    return n;
}

/* ── retirement ────────────────────────────────────────────────────────────── */

size_t ppi_registry_invalidate(ppi_registry *reg, uint64_t bundle_id) {
    size_t n = 0;
    ppi_wrlock(&reg->lock);
    uint32_t len = slots_len(reg);
    for (uint32_t i = 0; i < len; i++) {
        ppi_slot *s = slot_at(reg, i);
        if (s->state == PPI_SLOT_EMPTY || s->bundle_id != bundle_id) continue;
        vacate(reg, i);
        n++;
    }
    if (n) bump_revision(reg);
    ppi_rwunlock(&reg->lock);
    return n;
}

/* ── dependencies ──────────────────────────────────────────────────────────── */

void ppi_registry_declare_deps(ppi_registry *reg, uint64_t bundle_id, const pp_manifest *m) {
    ppi_wrlock(&reg->lock);
    bool changed = false;
    for (size_t i = 0; i < m->dependencies_len; i++) {
        uint64_t cid = m->dependencies[i].contract_id;
        bool have = false;
        for (size_t k = 0; k < reg->deps_len && !have; k++)
            have = reg->deps[k].bundle_id == bundle_id && reg->deps[k].contract_id == cid;
        if (have || !ppi_grow((void **)&reg->deps, &reg->deps_cap, reg->deps_len + 1,
                              sizeof reg->deps[0]))
            continue;
        reg->deps[reg->deps_len].bundle_id = bundle_id;
        reg->deps[reg->deps_len].contract_id = cid;
        reg->deps_len++;
        changed = true;
    }
    if (changed) bump_revision(reg);
    ppi_rwunlock(&reg->lock);
}

void ppi_registry_drop_deps(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    size_t w = 0;
    for (size_t i = 0; i < reg->deps_len; i++)
        if (reg->deps[i].bundle_id != bundle_id) reg->deps[w++] = reg->deps[i];
    reg->deps_len = w;
    ppi_rwunlock(&reg->lock);
}

bool ppi_registry_declares(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id) {
    bool found = false;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->deps_len && !found; i++)
        found = reg->deps[i].bundle_id == bundle_id && reg->deps[i].contract_id == contract_id;
    ppi_rwunlock(&reg->lock);
    return found;
}

bool ppi_registry_depends_on(ppi_registry *reg, uint64_t dependent, uint64_t provider) {
    bool found = false;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len && !found; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->bundle_id != provider) continue;
        for (size_t k = 0; k < reg->deps_len && !found; k++)
            found = reg->deps[k].bundle_id == dependent &&
                    reg->deps[k].contract_id == s->contract_id;
    }
    ppi_rwunlock(&reg->lock);
    return found;
}

/* ── load and reload windows ───────────────────────────────────────────────── */

void ppi_registry_begin_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    if (!in_window(reg, bundle_id) &&
        ppi_grow((void **)&reg->windows, &reg->windows_cap, reg->windows_len + 1,
                 sizeof reg->windows[0]))
        reg->windows[reg->windows_len++] = bundle_id;
    ppi_rwunlock(&reg->lock);
}

static void end_window_locked(ppi_registry *reg, uint64_t bundle_id) {
    size_t w = 0;
    for (size_t i = 0; i < reg->windows_len; i++)
        if (reg->windows[i] != bundle_id) reg->windows[w++] = reg->windows[i];
    reg->windows_len = w;
}

void ppi_registry_abort_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    uint32_t n = slots_len(reg);
    for (uint32_t i = 0; i < n; i++) {
        ppi_slot *s = slot_at(reg, i);
        if (s->state == PPI_SLOT_PENDING && s->bundle_id == bundle_id) vacate(reg, i);
    }
    end_window_locked(reg, bundle_id);
    ppi_rwunlock(&reg->lock);
}

/* The published slot of `bundle_id` for `contract_id`, or UINT32_MAX. */
static uint32_t published_slot(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id) {
    for (size_t k = 0; k < reg->index_len; k++) {
        const ppi_slot *s = slot_at(reg, reg->index[k]);
        if (s->bundle_id == bundle_id && s->contract_id == contract_id) return reg->index[k];
    }
    return UINT32_MAX;
}

/*
 * Publish a window's registrations: a contract the bundle already published keeps
 * its slot and generation (old handles resolve to the new version; an interface
 * with identical bytes, like a Lua contract's stable record, keeps its block too);
 * a new contract is published from its pending slot; a contract the new version
 * dropped is retired.
 */
void ppi_registry_commit_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    uint32_t n = slots_len(reg);
    for (uint32_t i = 0; i < n; i++) {
        ppi_slot *p = slot_at(reg, i);
        if (p->state != PPI_SLOT_PENDING || p->bundle_id != bundle_id) continue;
        uint32_t o = published_slot(reg, bundle_id, p->contract_id);
        if (o != UINT32_MAX) {
            ppi_slot *old = slot_at(reg, o);
            if (memcmp(&old->block->iface, &p->block->iface, sizeof p->block->iface) != 0) {
                /* a new interface: the slot now hands out the new block; the old one
                 * stays valid for whoever holds it */
                p->block->next_all = reg->blocks;
                reg->blocks = p->block;
                old->block = p->block;
                atomic_store_explicit(&old->published, p->block, memory_order_release);
                p->state = PPI_SLOT_EMPTY; /* the block moved: vacate must not free it */
            }
            old->version = p->version;
            free(old->plugin_name);
            old->plugin_name = p->plugin_name;
            p->plugin_name = NULL;
            old->state = PPI_SLOT_SURVIVING;
            vacate(reg, i);
        } else if (ppi_grow((void **)&reg->index, &reg->index_cap, reg->index_len + 1,
                            sizeof reg->index[0])) {
            publish(reg, i);
            p->state = PPI_SLOT_SURVIVING;
        } else {
            vacate(reg, i); /* out of memory: the new contract is dropped */
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        ppi_slot *s = slot_at(reg, i);
        if (s->bundle_id != bundle_id) continue;
        if (s->state == PPI_SLOT_SURVIVING)
            s->state = PPI_SLOT_PUBLISHED;
        else if (s->state == PPI_SLOT_PUBLISHED)
            vacate(reg, i);
    }
    end_window_locked(reg, bundle_id);
    bump_revision(reg);
    ppi_rwunlock(&reg->lock);
}

/* ── live instance counts ──────────────────────────────────────────────────── */

void ppi_registry_count_instance(ppi_registry *reg, uint64_t contract_id, int64_t delta) {
    ppi_wrlock(&reg->lock);
    size_t i = 0;
    while (i < reg->counts_len && reg->counts[i].contract_id != contract_id) i++;
    if (i == reg->counts_len) {
        if (delta < 0 || !ppi_grow((void **)&reg->counts, &reg->counts_cap, i + 1,
                                   sizeof reg->counts[0])) {
            ppi_rwunlock(&reg->lock);
            return;
        }
        reg->counts[i].contract_id = contract_id;
        reg->counts[i].live = 0;
        reg->counts_len++;
    }
    reg->counts[i].live += delta;
    if (reg->counts[i].live < 0) reg->counts[i].live = 0;
    ppi_rwunlock(&reg->lock);
}

static int64_t *count_for(ppi_registry *reg, uint64_t contract_id) {
    for (size_t i = 0; i < reg->counts_len; i++)
        if (reg->counts[i].contract_id == contract_id) return &reg->counts[i].live;
    return NULL;
}

int64_t ppi_registry_live_instances(ppi_registry *reg, uint64_t bundle_id) {
    int64_t total = 0;
    ppi_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->bundle_id != bundle_id) continue;
        int64_t *c = count_for(reg, s->contract_id);
        if (c) total += *c;
    }
    ppi_rwunlock(&reg->lock);
    return total;
}

void ppi_registry_reset_counts(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = slot_at(reg, reg->index[i]);
        if (s->bundle_id != bundle_id) continue;
        int64_t *c = count_for(reg, s->contract_id);
        if (c) *c = 0;
    }
    ppi_rwunlock(&reg->lock);
}
