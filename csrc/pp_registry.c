/*
 * pp_registry.c — guest-contract slots with generations (abi-runtime.md §6).
 *
 * A slot names a registration: {index, generation} is a handle, and every time a
 * slot is vacated its generation is bumped so old handles go stale.  Slots live in
 * fixed chunks that never move, and each registration gets its own interface block
 * (ppi_iface) that is never freed before the registry: resolve hands out a pointer
 * into it, and that pointer keeps calling the same loader record whatever later
 * happens to the slot.  A reused slot gets a new block, so an old interface pointer
 * never reaches the new occupant.  A new registration takes the lowest empty slot
 * (a min-heap of empty slots), else a new one.
 *
 * Indexes, so that nothing walks all slots: a contract's published slots form its
 * provider list, in publication order (find answers the first whose major is high
 * enough, find_all all of them in that order); a bundle's slots form its published
 * list and, while a window is open, its pending list; (bundle, contract) pairs map
 * to their published and pending slot (find_by_bundle, duplicate checks, reload
 * commits); declared dependencies map both ways, bundle → contracts and contract →
 * declaring bundles.  The lists are linked through the slots themselves, so
 * publishing and vacating a slot are O(1); the maps are ppi_map hash tables.  A new
 * registration is checked against the contract name of the first provider only:
 * all providers share it, unless an id collision got published through a window,
 * which marks the contract `mixed` until its providers agree again.
 *
 * Locking: `reg->lock` (a leaf rwlock) guards everything except what
 * ppi_registry_lookup reads without it: a slot's `published` block pointer and its
 * generation, which writers update with release stores (publish: block pointer;
 * vacate: clear the pointer, then bump the generation).  Nothing is called out while
 * the lock is held.  Out of memory, an operation either fails before it changes
 * anything (registration) or skips what it could not record, as documented per
 * function.
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
static const ppi_slot_list EMPTY_LIST = {PPI_NO_SLOT, PPI_NO_SLOT};

int ppi_registry_init(ppi_registry *reg) {
    memset(reg, 0, sizeof *reg);
    atomic_init(&reg->revision, 0);
    atomic_init(&reg->slots_len, 0);
    return ppi_leaf_rwlock_init(&reg->lock);
}

static inline ppi_slot *slot_at(ppi_registry *reg, uint32_t i) {
    return &reg->chunks[i >> PPI_SLOT_CHUNK_BITS][i & (PPI_SLOT_CHUNK - 1)];
}

static uint32_t slots_len(ppi_registry *reg) {
    return atomic_load_explicit(&reg->slots_len, memory_order_acquire);
}

static void bump_revision(ppi_registry *reg) {
    atomic_fetch_add_explicit(&reg->revision, 1, memory_order_release);
}

/* ── the maps' values ──────────────────────────────────────────────────────── */

static uint64_t pack(uint32_t hi, uint32_t lo) { return (uint64_t)hi << 32 | lo; }
static uint32_t high(uint64_t v) { return (uint32_t)(v >> 32); }
static uint32_t low(uint64_t v) { return (uint32_t)v; }

static ppi_slot_list providers_of(const ppi_registry *reg, uint64_t contract_id) {
    uint64_t *v = ppi_map_get(&reg->providers, contract_id, 0);
    return v ? (ppi_slot_list){high(*v), low(*v)} : EMPTY_LIST;
}

/* The published (`published`) or pending slot of a bundle for a contract. */
static uint32_t pair_slot(const ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id,
                          bool published) {
    uint64_t *v = ppi_map_get(&reg->pairs, bundle_id, contract_id);
    if (!v) return PPI_NO_SLOT;
    return published ? high(*v) : low(*v);
}

/* Record the published or pending slot of a pair; the entry goes when both are
 * PPI_NO_SLOT.  Never allocates when the pair exists or room was reserved. */
static void pair_set(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id,
                     bool published, uint32_t slot) {
    uint64_t *v = ppi_map_get(&reg->pairs, bundle_id, contract_id);
    uint64_t old = v ? *v : pack(PPI_NO_SLOT, PPI_NO_SLOT);
    uint64_t now = published ? pack(slot, low(old)) : pack(high(old), slot);
    if (now == pack(PPI_NO_SLOT, PPI_NO_SLOT))
        ppi_map_remove(&reg->pairs, bundle_id, contract_id);
    else
        ppi_map_put(&reg->pairs, bundle_id, contract_id, now);
}

static ppi_reg_bundle *bundle_rec(const ppi_registry *reg, uint64_t bundle_id) {
    return ppi_map_get_ptr(&reg->bundles, bundle_id, 0);
}

/* The bundle's record, made if needed; NULL when out of memory. */
static ppi_reg_bundle *bundle_rec_make(ppi_registry *reg, uint64_t bundle_id) {
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    if (rb) return rb;
    rb = calloc(1, sizeof *rb);
    if (!rb) return NULL;
    rb->published = rb->pending = EMPTY_LIST;
    if (!ppi_map_put_ptr(&reg->bundles, bundle_id, 0, rb)) {
        free(rb);
        return NULL;
    }
    return rb;
}

/* Drop the bundle's record once nothing is left in it. */
static void bundle_rec_tidy(ppi_registry *reg, uint64_t bundle_id, ppi_reg_bundle *rb) {
    if (!rb || rb->published.head != PPI_NO_SLOT || rb->pending.head != PPI_NO_SLOT ||
        rb->deps_len || rb->window)
        return;
    ppi_map_remove(&reg->bundles, bundle_id, 0);
    free(rb->deps);
    free(rb);
}

/* The first published slot of a bundle (walk on with bundle_next). */
static uint32_t published_head(const ppi_registry *reg, uint64_t bundle_id) {
    const ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    return rb ? rb->published.head : PPI_NO_SLOT;
}

/* Walk a contract's published slots, or a bundle's, in publication order (`i` is
 * the slot index; the loop body must not vacate `i`). */
#define EACH_PROVIDER(reg, contract_id, i)                                              \
    for (uint32_t i = providers_of(reg, contract_id).head; i != PPI_NO_SLOT;           \
         i = slot_at(reg, i)->provider_next)
#define EACH_PUBLISHED(reg, bundle_id, i)                                               \
    for (uint32_t i = published_head(reg, bundle_id); i != PPI_NO_SLOT;                \
         i = slot_at(reg, i)->bundle_next)

/* ── slot lists ────────────────────────────────────────────────────────────── */

static void bundle_list_append(ppi_registry *reg, ppi_slot_list *list, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    s->bundle_prev = list->tail;
    s->bundle_next = PPI_NO_SLOT;
    if (list->tail != PPI_NO_SLOT)
        slot_at(reg, list->tail)->bundle_next = i;
    else
        list->head = i;
    list->tail = i;
}

static void bundle_list_unlink(ppi_registry *reg, ppi_slot_list *list, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    if (s->bundle_prev != PPI_NO_SLOT)
        slot_at(reg, s->bundle_prev)->bundle_next = s->bundle_next;
    else
        list->head = s->bundle_next;
    if (s->bundle_next != PPI_NO_SLOT)
        slot_at(reg, s->bundle_next)->bundle_prev = s->bundle_prev;
    else
        list->tail = s->bundle_prev;
    s->bundle_prev = s->bundle_next = PPI_NO_SLOT;
}

/* The first slot from `i` on along a provider list whose contract name is not
 * `name`, or PPI_NO_SLOT. */
static uint32_t name_clash(ppi_registry *reg, uint32_t i, const char *name) {
    for (; i != PPI_NO_SLOT; i = slot_at(reg, i)->provider_next)
        if (strcmp(slot_at(reg, i)->contract_name, name) != 0) return i;
    return PPI_NO_SLOT;
}

/* Append to the contract's provider list (room in reg->providers was reserved). */
static void provider_append(ppi_registry *reg, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    ppi_slot_list list = providers_of(reg, s->contract_id);
    if (list.head != PPI_NO_SLOT &&
        strcmp(slot_at(reg, list.head)->contract_name, s->contract_name) != 0)
        ppi_map_put(&reg->mixed, s->contract_id, 0, 1);
    s->provider_prev = list.tail;
    s->provider_next = PPI_NO_SLOT;
    if (list.tail != PPI_NO_SLOT)
        slot_at(reg, list.tail)->provider_next = i;
    else
        list.head = i;
    list.tail = i;
    ppi_map_put(&reg->providers, s->contract_id, 0, pack(list.head, list.tail));
}

static void provider_unlink(ppi_registry *reg, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    ppi_slot_list list = providers_of(reg, s->contract_id);
    if (s->provider_prev != PPI_NO_SLOT)
        slot_at(reg, s->provider_prev)->provider_next = s->provider_next;
    else
        list.head = s->provider_next;
    if (s->provider_next != PPI_NO_SLOT)
        slot_at(reg, s->provider_next)->provider_prev = s->provider_prev;
    else
        list.tail = s->provider_prev;
    s->provider_prev = s->provider_next = PPI_NO_SLOT;
    if (list.head == PPI_NO_SLOT)
        ppi_map_remove(&reg->providers, s->contract_id, 0);
    else
        ppi_map_put(&reg->providers, s->contract_id, 0, pack(list.head, list.tail));
    if (ppi_map_get(&reg->mixed, s->contract_id, 0) &&
        (list.head == PPI_NO_SLOT ||
         name_clash(reg, list.head, slot_at(reg, list.head)->contract_name) == PPI_NO_SLOT))
        ppi_map_remove(&reg->mixed, s->contract_id, 0);
}

/* ── empty slots: a min-heap, so the lowest empty slot is reused first ─────── */

static void free_push(ppi_registry *reg, uint32_t i) {
    /* room was made when the slot was created (slot_acquire) */
    size_t k = reg->free_len++;
    while (k > 0 && reg->free_slots[(k - 1) / 2] > i) {
        reg->free_slots[k] = reg->free_slots[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    reg->free_slots[k] = i;
}

static uint32_t free_pop(ppi_registry *reg) {
    uint32_t top = reg->free_slots[0];
    uint32_t last = reg->free_slots[--reg->free_len];
    size_t n = reg->free_len, k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= n) break;
        if (c + 1 < n && reg->free_slots[c + 1] < reg->free_slots[c]) c++;
        if (reg->free_slots[c] >= last) break;
        reg->free_slots[k] = reg->free_slots[c];
        k = c;
    }
    if (n) reg->free_slots[k] = last;
    return top;
}

/* The lowest empty slot, else a new one; PPI_NO_SLOT when out of memory or slots. */
static uint32_t slot_acquire(ppi_registry *reg) {
    if (reg->free_len) return free_pop(reg);
    uint32_t n = slots_len(reg);
    if (n >= (uint32_t)PPI_SLOT_CHUNKS * PPI_SLOT_CHUNK) return PPI_NO_SLOT;
    /* room for this slot in the heap, so vacating it never allocates */
    if (!ppi_grow((void **)&reg->free_slots, &reg->free_cap, (size_t)n + 1,
                  sizeof reg->free_slots[0]))
        return PPI_NO_SLOT;
    uint32_t chunk = n >> PPI_SLOT_CHUNK_BITS;
    if (!reg->chunks[chunk]) {
        reg->chunks[chunk] = calloc(PPI_SLOT_CHUNK, sizeof(ppi_slot));
        if (!reg->chunks[chunk]) return PPI_NO_SLOT;
        for (uint32_t k = 0; k < PPI_SLOT_CHUNK; k++) {
            atomic_init(&reg->chunks[chunk][k].published, NULL);
            atomic_init(&reg->chunks[chunk][k].generation, 0);
        }
    }
    atomic_store_explicit(&reg->slots_len, n + 1, memory_order_release);
    return n;
}

/* ── publishing and vacating ───────────────────────────────────────────────── */

/* Make slot `i` (new, or just taken off its bundle's pending list) visible.  Room in
 * reg->providers and reg->pairs was reserved. */
static void publish(ppi_registry *reg, ppi_reg_bundle *rb, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    s->state = PPI_SLOT_PUBLISHED;
    s->block->next_all = reg->blocks;
    reg->blocks = s->block;
    bundle_list_append(reg, &rb->published, i);
    provider_append(reg, i);
    pair_set(reg, s->bundle_id, s->contract_id, true, i);
    atomic_store_explicit(&s->published, s->block, memory_order_release);
}

/* Empty slot `i`; its generation moves on, so every handle to it goes stale.  A
 * block that was published stays (in reg->blocks); a pending one is freed.  The
 * caller tidies the bundle's record afterwards (bundle_rec_tidy). */
static void vacate(ppi_registry *reg, ppi_reg_bundle *rb, uint32_t i) {
    ppi_slot *s = slot_at(reg, i);
    if (s->state == PPI_SLOT_PUBLISHED || s->state == PPI_SLOT_SURVIVING) {
        bundle_list_unlink(reg, &rb->published, i);
        provider_unlink(reg, i);
        pair_set(reg, s->bundle_id, s->contract_id, true, PPI_NO_SLOT);
    } else if (s->state == PPI_SLOT_PENDING) {
        bundle_list_unlink(reg, &rb->pending, i);
        pair_set(reg, s->bundle_id, s->contract_id, false, PPI_NO_SLOT);
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
    free_push(reg, i);
}

static void free_id_array(void *p) {
    ppi_id_array *a = p;
    free(a->ids);
    free(a);
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
    size_t pos = 0;
    for (ppi_map_entry *e; (e = ppi_map_next(&reg->bundles, &pos));) {
        ppi_reg_bundle *rb = (ppi_reg_bundle *)(uintptr_t)e->value;
        free(rb->deps);
        free(rb);
    }
    pos = 0;
    for (ppi_map_entry *e; (e = ppi_map_next(&reg->declarers, &pos));)
        free_id_array((void *)(uintptr_t)e->value);
    ppi_map_free(&reg->providers);
    ppi_map_free(&reg->mixed);
    ppi_map_free(&reg->pairs);
    ppi_map_free(&reg->bundles);
    ppi_map_free(&reg->deps);
    ppi_map_free(&reg->declarers);
    ppi_map_free(&reg->counts);
    free(reg->free_slots);
    ppi_leaf_rwlock_destroy(&reg->lock);
}

/* ── registration ──────────────────────────────────────────────────────────── */

static uint32_t duplicate(pp_error *err, const char *contract, const char *plugin) {
    ppi_fail(err, PP_ERR_DUPLICATE_PROVIDER, contract, NULL, plugin,
             "duplicate provider for contract `%s`: `%s` already registered", contract, plugin);
    if (err) err->abi_code = AbiErrorCode_DuplicateProvider;
    return AbiErrorCode_DuplicateProvider;
}

static uint32_t no_memory(pp_error *err) {
    ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory registering a contract");
    return AbiErrorCode_Generic;
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
        return no_memory(err);
    }
    block->iface = *iface;
    block->next_all = NULL;
    uint64_t cid = iface->contract_id;
    uint32_t code = AbiErrorCode_Ok;
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    bool windowed = rb && rb->window;
    /* the providers of a contract share its name, so the first one answers; only
     * after an id collision published through a window do they differ (`mixed`) */
    uint32_t head = providers_of(reg, cid).head, clash = PPI_NO_SLOT;
    if (head != PPI_NO_SLOT && ppi_map_get(&reg->mixed, cid, 0))
        clash = name_clash(reg, head, contract);
    else if (head != PPI_NO_SLOT && strcmp(slot_at(reg, head)->contract_name, contract) != 0)
        clash = head;
    if (clash != PPI_NO_SLOT) {
        const char *other = slot_at(reg, clash)->contract_name;
        ppi_fail(err, PP_ERR_ID_COLLISION, other, NULL, contract,
                 "contract ID collision: hash=0x%016llX claimed by both `%s` and `%s`",
                 (unsigned long long)cid, other, contract);
        code = AbiErrorCode_Generic;
        goto out;
    }
    /* outside a window the bundle may publish a contract once; inside one, register
     * it once (its published slot is what a reload replaces) */
    uint32_t same = pair_slot(reg, bundle_id, cid, !windowed);
    if (same != PPI_NO_SLOT) {
        code = duplicate(err, contract, slot_at(reg, same)->plugin_name);
        goto out;
    }
    /* everything that may run out of memory, before anything changes */
    uint32_t idx = PPI_NO_SLOT;
    if (!rb) rb = bundle_rec_make(reg, bundle_id);
    if (!rb || !ppi_map_reserve(&reg->pairs, 1) ||
        (!windowed && !ppi_map_reserve(&reg->providers, 1)) ||
        (idx = slot_acquire(reg)) == PPI_NO_SLOT) {
        bundle_rec_tidy(reg, bundle_id, rb);
        code = no_memory(err);
        goto out;
    }
    ppi_slot *s = slot_at(reg, idx);
    s->block = block;
    s->bundle_id = bundle_id;
    s->contract_id = cid;
    s->contract_name = contract;
    s->plugin_name = plugin;
    s->version = desc->version;
    s->provider_prev = s->provider_next = PPI_NO_SLOT;
    contract = plugin = NULL;
    block = NULL;
    if (windowed) {
        s->state = PPI_SLOT_PENDING;
        bundle_list_append(reg, &rb->pending, idx);
        pair_set(reg, bundle_id, cid, false, idx);
    } else {
        publish(reg, rb, idx);
    }
    bump_revision(reg);
out:
    ppi_rwunlock(&reg->lock);
    free(contract);
    free(plugin);
    free(block);
    return code;
}

/* ── lookups ───────────────────────────────────────────────────────────────── */

static GuestContractHandle handle_of(ppi_registry *reg, uint32_t i) {
    GuestContractHandle h = {i, atomic_load_explicit(&slot_at(reg, i)->generation,
                                                     memory_order_relaxed)};
    return h;
}

static bool major_ok(ppi_registry *reg, uint32_t i, uint32_t min_major) {
    return slot_at(reg, i)->block->iface.contract_version.major >= min_major;
}

GuestContractHandle ppi_registry_find(ppi_registry *reg, uint64_t contract_id,
                                      uint32_t min_major, bool by_bundle, uint64_t bundle_id) {
    GuestContractHandle h = NULL_HANDLE;
    ppi_rdlock(&reg->lock);
    if (by_bundle) {
        uint32_t i = pair_slot(reg, bundle_id, contract_id, true);
        if (i != PPI_NO_SLOT && major_ok(reg, i, min_major)) h = handle_of(reg, i);
    } else {
        EACH_PROVIDER(reg, contract_id, i) {
            if (!major_ok(reg, i, min_major)) continue;
            h = handle_of(reg, i);
            break;
        }
    }
    ppi_rwunlock(&reg->lock);
    return h;
}

size_t ppi_registry_find_all(ppi_registry *reg, uint64_t contract_id, uint32_t min_major,
                             GuestContractHandle *out, size_t cap) {
    size_t n = 0;
    ppi_rdlock(&reg->lock);
    EACH_PROVIDER(reg, contract_id, i) {
        if (!major_ok(reg, i, min_major)) continue;
        if (n < cap) out[n] = handle_of(reg, i);
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
    EACH_PUBLISHED(reg, bundle_id, i) {
        if (n < cap) fill_info(slot_at(reg, i), &out[n]);
        n++;
    }
    ppi_rwunlock(&reg->lock);
    return n;
}

/* ── retirement ────────────────────────────────────────────────────────────── */

/* Vacate every slot on a list of the bundle's; returns how many. */
static size_t vacate_list(ppi_registry *reg, ppi_reg_bundle *rb, const ppi_slot_list *list) {
    size_t n = 0;
    for (uint32_t i = list->head, next; i != PPI_NO_SLOT; i = next, n++) {
        next = slot_at(reg, i)->bundle_next;
        vacate(reg, rb, i);
    }
    return n;
}

size_t ppi_registry_invalidate(ppi_registry *reg, uint64_t bundle_id) {
    size_t n = 0;
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    if (rb) {
        n = vacate_list(reg, rb, &rb->published) + vacate_list(reg, rb, &rb->pending);
        bundle_rec_tidy(reg, bundle_id, rb);
    }
    if (n) bump_revision(reg);
    ppi_rwunlock(&reg->lock);
    return n;
}

/* ── dependencies ──────────────────────────────────────────────────────────── */

/* Record that `bundle_id` declares `cid` (not yet recorded); false when out of memory,
 * with nothing changed but possibly an empty record or array left for the caller's
 * tidy-up. */
static bool declare_one(ppi_registry *reg, ppi_reg_bundle *rb, uint64_t bundle_id,
                        uint64_t cid) {
    ppi_id_array *who = ppi_map_get_ptr(&reg->declarers, cid, 0);
    if (!who) {
        who = calloc(1, sizeof *who);
        if (!who) return false;
        if (!ppi_map_put_ptr(&reg->declarers, cid, 0, who)) {
            free(who);
            return false;
        }
    }
    if (!ppi_grow((void **)&who->ids, &who->cap, who->len + 1, sizeof who->ids[0]) ||
        !ppi_grow((void **)&rb->deps, &rb->deps_cap, rb->deps_len + 1, sizeof rb->deps[0]) ||
        !ppi_map_put(&reg->deps, bundle_id, cid, who->len)) {
        if (who->len == 0) {
            ppi_map_remove(&reg->declarers, cid, 0);
            free_id_array(who);
        }
        return false;
    }
    who->ids[who->len++] = bundle_id;
    rb->deps[rb->deps_len++] = cid;
    return true;
}

/* Out of memory, a dependency that could not be recorded is skipped: it then grants
 * nothing, as if the manifest had not declared it. */
void ppi_registry_declare_deps(ppi_registry *reg, uint64_t bundle_id, const pp_manifest *m) {
    ppi_wrlock(&reg->lock);
    bool changed = false;
    ppi_reg_bundle *rb = NULL;
    for (size_t i = 0; i < m->dependencies_len; i++) {
        uint64_t cid = m->dependencies[i].contract_id;
        if (ppi_map_get(&reg->deps, bundle_id, cid)) continue;
        if (!rb) rb = bundle_rec_make(reg, bundle_id);
        if (rb && declare_one(reg, rb, bundle_id, cid)) changed = true;
    }
    bundle_rec_tidy(reg, bundle_id, rb);
    if (changed) bump_revision(reg);
    ppi_rwunlock(&reg->lock);
}

void ppi_registry_drop_deps(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    for (size_t k = 0; rb && k < rb->deps_len; k++) {
        uint64_t cid = rb->deps[k];
        uint64_t at = *ppi_map_get(&reg->deps, bundle_id, cid);
        ppi_map_remove(&reg->deps, bundle_id, cid);
        ppi_id_array *who = ppi_map_get_ptr(&reg->declarers, cid, 0);
        /* the last declarer takes the leaving one's place */
        uint64_t moved = who->ids[--who->len];
        if (at != who->len) {
            who->ids[at] = moved;
            ppi_map_put(&reg->deps, moved, cid, at);
        }
        if (who->len == 0) {
            ppi_map_remove(&reg->declarers, cid, 0);
            free_id_array(who);
        }
    }
    if (rb) {
        rb->deps_len = 0;
        bundle_rec_tidy(reg, bundle_id, rb);
    }
    ppi_rwunlock(&reg->lock);
}

bool ppi_registry_declares(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id) {
    ppi_rdlock(&reg->lock);
    bool found = ppi_map_get(&reg->deps, bundle_id, contract_id) != NULL;
    ppi_rwunlock(&reg->lock);
    return found;
}

bool ppi_registry_depends_on(ppi_registry *reg, uint64_t dependent, uint64_t provider) {
    bool found = false;
    ppi_rdlock(&reg->lock);
    EACH_PUBLISHED(reg, provider, i) {
        found = ppi_map_get(&reg->deps, dependent, slot_at(reg, i)->contract_id) != NULL;
        if (found) break;
    }
    ppi_rwunlock(&reg->lock);
    return found;
}

size_t ppi_registry_dependents(ppi_registry *reg, uint64_t provider, uint64_t *out,
                               size_t cap) {
    size_t n = 0;
    ppi_rdlock(&reg->lock);
    EACH_PUBLISHED(reg, provider, i) {
        const ppi_id_array *who = ppi_map_get_ptr(&reg->declarers,
                                                  slot_at(reg, i)->contract_id, 0);
        for (size_t k = 0; who && k < who->len; k++, n++)
            if (n < cap) out[n] = who->ids[k];
    }
    ppi_rwunlock(&reg->lock);
    return n;
}

/* ── load and reload windows ───────────────────────────────────────────────── */

bool ppi_registry_begin_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec_make(reg, bundle_id);
    if (rb) rb->window = true;
    ppi_rwunlock(&reg->lock);
    return rb != NULL;
}

static void end_window_locked(ppi_registry *reg, uint64_t bundle_id, ppi_reg_bundle *rb) {
    rb->window = false;
    bundle_rec_tidy(reg, bundle_id, rb);
}

void ppi_registry_abort_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    if (rb) {
        vacate_list(reg, rb, &rb->pending);
        end_window_locked(reg, bundle_id, rb);
    }
    ppi_rwunlock(&reg->lock);
}

/*
 * Publish a window's registrations, in the order they were made: a contract the
 * bundle already published keeps its slot, its generation and its place among the
 * contract's providers (old handles resolve to the new version; an interface with
 * identical bytes, like a Lua contract's stable record, keeps its block too); a new
 * contract is published from its pending slot; a contract the new version dropped
 * is retired.  Out of memory, a new contract is dropped.
 */
void ppi_registry_commit_window(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    ppi_reg_bundle *rb = bundle_rec(reg, bundle_id);
    if (!rb) {
        bump_revision(reg);
        ppi_rwunlock(&reg->lock);
        return;
    }
    for (uint32_t i = rb->pending.head, next; i != PPI_NO_SLOT; i = next) {
        ppi_slot *p = slot_at(reg, i);
        next = p->bundle_next;
        uint32_t o = pair_slot(reg, bundle_id, p->contract_id, true);
        if (o != PPI_NO_SLOT) {
            ppi_slot *old = slot_at(reg, o);
            if (memcmp(&old->block->iface, &p->block->iface, sizeof p->block->iface) != 0) {
                /* a new interface: the slot now hands out the new block; the old one
                 * stays valid for whoever holds it */
                p->block->next_all = reg->blocks;
                reg->blocks = p->block;
                old->block = p->block;
                atomic_store_explicit(&old->published, p->block, memory_order_release);
                p->block = NULL; /* it moved: vacate must not free it */
            }
            old->version = p->version;
            free(old->plugin_name);
            old->plugin_name = p->plugin_name;
            p->plugin_name = NULL;
            old->state = PPI_SLOT_SURVIVING;
            vacate(reg, rb, i);
        } else if (ppi_map_reserve(&reg->providers, 1)) {
            bundle_list_unlink(reg, &rb->pending, i);
            publish(reg, rb, i); /* the pair exists (pending): no allocation */
            pair_set(reg, bundle_id, p->contract_id, false, PPI_NO_SLOT);
            p->state = PPI_SLOT_SURVIVING;
        } else {
            vacate(reg, rb, i); /* out of memory: the new contract is dropped */
        }
    }
    for (uint32_t i = rb->published.head, next; i != PPI_NO_SLOT; i = next) {
        ppi_slot *s = slot_at(reg, i);
        next = s->bundle_next;
        if (s->state == PPI_SLOT_SURVIVING)
            s->state = PPI_SLOT_PUBLISHED;
        else
            vacate(reg, rb, i);
    }
    end_window_locked(reg, bundle_id, rb);
    bump_revision(reg);
    ppi_rwunlock(&reg->lock);
}

/* ── live instance counts ──────────────────────────────────────────────────── */

/* Out of memory, an instance that could not be counted is not counted. */
void ppi_registry_count_instance(ppi_registry *reg, uint64_t contract_id, int64_t delta) {
    ppi_registry_count_instance_unless(reg, contract_id, delta, NULL);
}

void ppi_registry_count_instance_unless(ppi_registry *reg, uint64_t contract_id, int64_t delta,
                                        const _Atomic bool *retired) {
    ppi_wrlock(&reg->lock);
    if (retired && atomic_load(retired)) { /* its unload resets (or reset) the counts */
        ppi_rwunlock(&reg->lock);
        return;
    }
    uint64_t *live = ppi_map_get(&reg->counts, contract_id, 0);
    int64_t now = (live ? (int64_t)*live : 0) + delta;
    if (now > 0)
        ppi_map_put(&reg->counts, contract_id, 0, (uint64_t)now);
    else if (live)
        ppi_map_remove(&reg->counts, contract_id, 0);
    ppi_rwunlock(&reg->lock);
}

int64_t ppi_registry_live_instances(ppi_registry *reg, uint64_t bundle_id) {
    int64_t total = 0;
    ppi_rdlock(&reg->lock);
    EACH_PUBLISHED(reg, bundle_id, i) {
        uint64_t *live = ppi_map_get(&reg->counts, slot_at(reg, i)->contract_id, 0);
        if (live) total += (int64_t)*live;
    }
    ppi_rwunlock(&reg->lock);
    return total;
}

void ppi_registry_reset_counts(ppi_registry *reg, uint64_t bundle_id) {
    ppi_wrlock(&reg->lock);
    EACH_PUBLISHED(reg, bundle_id, i)
        ppi_map_remove(&reg->counts, slot_at(reg, i)->contract_id, 0);
    ppi_rwunlock(&reg->lock);
}
