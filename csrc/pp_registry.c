/*
 * pp_registry.c — guest-contract slots with generations (abi-runtime.md §6).
 *
 * Slots are allocated one by one and never move or get freed before the runtime, so
 * the GuestContractInterface inside a slot has a stable address: resolve hands it out,
 * and a reload swaps the new interface into the same slot.  Vacant slots are reused
 * (first empty one), each vacating bumps the generation so old handles go stale.
 *
 * Locking: `reg->lock` (rwlock) guards everything; no function here calls out of the
 * registry (no logging, no loader calls) while holding it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

static const GuestContractHandle NULL_HANDLE = {UINT32_MAX, 0};

int ppi_registry_init(ppi_registry *reg) {
    memset(reg, 0, sizeof *reg);
    atomic_init(&reg->revision, 0);
    return pthread_rwlock_init(&reg->lock, NULL);
}

/* A vacated slot holds this interface, so a stale interface pointer kept by a host
 * answers StaleHandle instead of calling into a freed loader record. */
static void dead_call(VmLoaderData loader_data, GuestContractInstance instance, uint32_t fn_id,
                      const void *args, void *out, CallArena *arena, AbiError *out_err) {
    (void)loader_data, (void)instance, (void)fn_id, (void)args, (void)out, (void)arena;
    if (!out_err) return;
    out_err->code = AbiErrorCode_StaleHandle;
    out_err->message = ppi_view("this contract was unloaded or removed by a reload; resolve its "
                                "handle again (the interface pointer is stale)");
}

static void dead_create(VmLoaderData loader_data, const HostApi *host, const void *args,
                        GuestContractInstance *out_instance) {
    (void)loader_data, (void)host, (void)args;
    if (out_instance) out_instance->data = NULL, out_instance->contract_id = 0;
}

static void dead_destroy(VmLoaderData loader_data, const HostApi *host,
                         GuestContractInstance instance) {
    (void)loader_data, (void)host, (void)instance;
}

static void slot_clear(ppi_slot *s) {
    memset(&s->iface, 0, sizeof s->iface);
    s->iface.dispatch_type = DispatchType_VirtualMachine;
    s->iface.create_instance = dead_create;
    s->iface.destroy_instance = dead_destroy;
    s->iface.dispatch.vm.call = dead_call;
    free(s->contract_name);
    free(s->plugin_name);
    s->contract_name = s->plugin_name = NULL;
    s->state = PPI_SLOT_EMPTY;
    s->bundle_id = 0;
    s->generation++;
}

void ppi_registry_destroy(ppi_registry *reg) {
    for (size_t i = 0; i < reg->slots_len; i++) {
        slot_clear(reg->slots[i]);
        free(reg->slots[i]);
    }
    free(reg->slots);
    free(reg->index);
    free(reg->deps);
    free(reg->reloading);
    free(reg->counts);
    pthread_rwlock_destroy(&reg->lock);
}

static void bump_revision(ppi_registry *reg) {
    atomic_fetch_add_explicit(&reg->revision, 1, memory_order_release);
}

static bool is_reloading(const ppi_registry *reg, uint64_t bundle_id) {
    for (size_t i = 0; i < reg->reloading_len; i++)
        if (reg->reloading[i] == bundle_id) return true;
    return false;
}

static void index_remove_slot(ppi_registry *reg, uint32_t slot) {
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->index[i].slot == slot) {
            memmove(&reg->index[i], &reg->index[i + 1],
                    (reg->index_len - i - 1) * sizeof reg->index[0]);
            reg->index_len--;
            return;
        }
    }
}

/* First empty slot, else a new one; UINT32_MAX on OOM. */
static uint32_t slot_acquire(ppi_registry *reg) {
    for (size_t i = 0; i < reg->slots_len; i++)
        if (reg->slots[i]->state == PPI_SLOT_EMPTY) return (uint32_t)i;
    if (reg->slots_len >= UINT32_MAX - 1) return UINT32_MAX;
    if (!ppi_grow((void **)&reg->slots, &reg->slots_cap, reg->slots_len + 1, sizeof(ppi_slot *)))
        return UINT32_MAX;
    ppi_slot *s = calloc(1, sizeof *s);
    if (!s) return UINT32_MAX;
    reg->slots[reg->slots_len] = s;
    return (uint32_t)reg->slots_len++;
}

uint32_t ppi_registry_register(ppi_registry *reg, uint64_t bundle_id,
                               const PluginDescriptor *desc, const GuestContractInterface *iface,
                               pp_error *err) {
    char *contract = ppi_strndup_view(desc->contract_name);
    char *plugin = ppi_strndup_view(desc->name);
    if (!contract || !plugin) {
        free(contract);
        free(plugin);
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory registering a contract");
        return AbiErrorCode_Generic;
    }
    uint32_t code = AbiErrorCode_Ok;
    pthread_rwlock_wrlock(&reg->lock);
    bool reloading = is_reloading(reg, bundle_id);
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->index[i].contract_id != iface->contract_id) continue;
        const ppi_slot *s = reg->slots[reg->index[i].slot];
        if (strcmp(s->contract_name, contract) != 0) {
            ppi_fail(err, PP_ERR_ID_COLLISION, s->contract_name, NULL, contract,
                     "contract ID collision: hash=0x%016llX claimed by both `%s` and `%s`",
                     (unsigned long long)iface->contract_id, s->contract_name, contract);
            code = AbiErrorCode_Generic;
            goto out;
        }
        if (s->bundle_id == bundle_id && !reloading) {
            ppi_fail(err, PP_ERR_DUPLICATE_PROVIDER, contract, NULL, s->plugin_name,
                     "duplicate provider for contract `%s`: `%s` already registered", contract,
                     s->plugin_name);
            err->abi_code = AbiErrorCode_DuplicateProvider;
            code = AbiErrorCode_DuplicateProvider;
            goto out;
        }
    }
    /* a pending registration of the same contract twice in one reload */
    if (reloading) {
        for (size_t i = 0; i < reg->slots_len; i++) {
            const ppi_slot *s = reg->slots[i];
            if (s->state == PPI_SLOT_PENDING && s->bundle_id == bundle_id &&
                s->iface.contract_id == iface->contract_id) {
                ppi_fail(err, PP_ERR_DUPLICATE_PROVIDER, contract, NULL, s->plugin_name,
                         "duplicate provider for contract `%s`: `%s` already registered",
                         contract, s->plugin_name);
                err->abi_code = AbiErrorCode_DuplicateProvider;
                code = AbiErrorCode_DuplicateProvider;
                goto out;
            }
        }
    }
    uint32_t idx = slot_acquire(reg);
    if (idx == UINT32_MAX ||
        (!reloading && !ppi_grow((void **)&reg->index, &reg->index_cap, reg->index_len + 1,
                                 sizeof reg->index[0]))) {
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory registering a contract");
        code = AbiErrorCode_Generic;
        goto out;
    }
    ppi_slot *s = reg->slots[idx];
    s->iface = *iface;
    s->bundle_id = bundle_id;
    s->contract_name = contract;
    s->plugin_name = plugin;
    s->version = desc->version;
    contract = plugin = NULL;
    if (reloading) {
        s->state = PPI_SLOT_PENDING;
    } else {
        s->state = PPI_SLOT_PUBLISHED;
        reg->index[reg->index_len].contract_id = iface->contract_id;
        reg->index[reg->index_len].slot = idx;
        reg->index_len++;
    }
    bump_revision(reg);
out:
    pthread_rwlock_unlock(&reg->lock);
    free(contract);
    free(plugin);
    return code;
}

GuestContractHandle ppi_registry_find(ppi_registry *reg, uint64_t contract_id,
                                      uint32_t min_major, bool by_bundle, uint64_t bundle_id) {
    GuestContractHandle h = NULL_HANDLE;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->index[i].contract_id != contract_id) continue;
        const ppi_slot *s = reg->slots[reg->index[i].slot];
        if (s->iface.contract_version.major < min_major) continue;
        if (by_bundle && s->bundle_id != bundle_id) continue;
        h.index = reg->index[i].slot;
        h.generation = s->generation;
        break;
    }
    pthread_rwlock_unlock(&reg->lock);
    return h;
}

size_t ppi_registry_find_all(ppi_registry *reg, uint64_t contract_id, uint32_t min_major,
                             GuestContractHandle *out, size_t cap) {
    size_t n = 0;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->index[i].contract_id != contract_id) continue;
        const ppi_slot *s = reg->slots[reg->index[i].slot];
        if (s->iface.contract_version.major < min_major) continue;
        if (n < cap) {
            out[n].index = reg->index[i].slot;
            out[n].generation = s->generation;
        }
        n++;
    }
    pthread_rwlock_unlock(&reg->lock);
    return n;
}

int32_t ppi_registry_resolve_locked(ppi_registry *reg, GuestContractHandle h,
                                    const GuestContractInterface **out, pp_error *err) {
    *out = NULL;
    int32_t st = PP_OK;
    if (h.index >= reg->slots_len) {
        st = ppi_fail(err, PP_ERR_INVALID_HANDLE, NULL, NULL, NULL,
                      "invalid plugin handle: index=%u is out of bounds", h.index);
    } else {
        const ppi_slot *s = reg->slots[h.index];
        if (s->generation != h.generation || s->state != PPI_SLOT_PUBLISHED) {
            st = ppi_fail(err, PP_ERR_STALE_HANDLE, NULL, NULL, NULL,
                          "stale plugin handle: index=%u refers to a vacated or recycled slot "
                          "(its bundle was unloaded or the contract removed)",
                          h.index);
            if (err) err->abi_code = AbiErrorCode_StaleHandle;
        } else {
            *out = &s->iface;
        }
    }
    if (err && st != PP_OK) snprintf(err->detail, sizeof err->detail, "%u", h.index);
    return st;
}

int32_t ppi_registry_resolve_copy(ppi_registry *reg, GuestContractHandle h,
                                  GuestContractInterface *out) {
    const GuestContractInterface *iface;
    pthread_rwlock_rdlock(&reg->lock);
    int32_t st = ppi_registry_resolve_locked(reg, h, &iface, NULL);
    if (st == PP_OK) *out = *iface;
    pthread_rwlock_unlock(&reg->lock);
    return st;
}

int32_t ppi_registry_resolve(ppi_registry *reg, GuestContractHandle h,
                             const GuestContractInterface **out, pp_error *err) {
    pthread_rwlock_rdlock(&reg->lock);
    int32_t st = ppi_registry_resolve_locked(reg, h, out, err);
    pthread_rwlock_unlock(&reg->lock);
    return st;
}

static size_t invalidate_locked(ppi_registry *reg, uint64_t bundle_id) {
    size_t n = 0;
    for (size_t i = 0; i < reg->slots_len; i++) {
        ppi_slot *s = reg->slots[i];
        if (s->state == PPI_SLOT_EMPTY || s->bundle_id != bundle_id) continue;
        if (s->state == PPI_SLOT_PUBLISHED) index_remove_slot(reg, (uint32_t)i);
        slot_clear(s);
        n++;
    }
    return n;
}

size_t ppi_registry_invalidate(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    size_t n = invalidate_locked(reg, bundle_id);
    if (n) bump_revision(reg);
    pthread_rwlock_unlock(&reg->lock);
    return n;
}

void ppi_registry_declare_deps(ppi_registry *reg, uint64_t bundle_id, const pp_manifest *m) {
    pthread_rwlock_wrlock(&reg->lock);
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
    pthread_rwlock_unlock(&reg->lock);
}

void ppi_registry_drop_deps(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    size_t w = 0;
    for (size_t i = 0; i < reg->deps_len; i++)
        if (reg->deps[i].bundle_id != bundle_id) reg->deps[w++] = reg->deps[i];
    reg->deps_len = w;
    pthread_rwlock_unlock(&reg->lock);
}

bool ppi_registry_declares(ppi_registry *reg, uint64_t bundle_id, uint64_t contract_id) {
    bool found = false;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->deps_len && !found; i++)
        found = reg->deps[i].bundle_id == bundle_id && reg->deps[i].contract_id == contract_id;
    pthread_rwlock_unlock(&reg->lock);
    return found;
}

bool ppi_registry_depends_on(ppi_registry *reg, uint64_t dependent, uint64_t provider) {
    bool found = false;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len && !found; i++) {
        const ppi_slot *s = reg->slots[reg->index[i].slot];
        if (s->bundle_id != provider) continue;
        for (size_t k = 0; k < reg->deps_len && !found; k++)
            found = reg->deps[k].bundle_id == dependent &&
                    reg->deps[k].contract_id == reg->index[i].contract_id;
    }
    pthread_rwlock_unlock(&reg->lock);
    return found;
}

void ppi_registry_begin_reload(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    if (!is_reloading(reg, bundle_id) &&
        ppi_grow((void **)&reg->reloading, &reg->reloading_cap, reg->reloading_len + 1,
                 sizeof reg->reloading[0])) {
        reg->reloading[reg->reloading_len++] = bundle_id;
        bump_revision(reg);
    }
    pthread_rwlock_unlock(&reg->lock);
}

static void end_reload_locked(ppi_registry *reg, uint64_t bundle_id) {
    size_t w = 0;
    for (size_t i = 0; i < reg->reloading_len; i++)
        if (reg->reloading[i] != bundle_id) reg->reloading[w++] = reg->reloading[i];
    reg->reloading_len = w;
}

void ppi_registry_abort_reload(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    for (size_t i = 0; i < reg->slots_len; i++) {
        ppi_slot *s = reg->slots[i];
        if (s->state == PPI_SLOT_PENDING && s->bundle_id == bundle_id) slot_clear(s);
    }
    end_reload_locked(reg, bundle_id);
    pthread_rwlock_unlock(&reg->lock);
}

/*
 * Swap pending registrations in: a contract the bundle already published keeps its
 * slot and generation (old handles resolve to the new interface); a new contract is
 * published from its pending slot; a contract the new version dropped is retired.
 */
void ppi_registry_commit_reload(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    /* mark which published slots survive */
    for (size_t i = 0; i < reg->slots_len; i++) {
        ppi_slot *p = reg->slots[i];
        if (p->state != PPI_SLOT_PENDING || p->bundle_id != bundle_id) continue;
        ppi_slot *old = NULL;
        for (size_t k = 0; k < reg->index_len && !old; k++) {
            ppi_slot *s = reg->slots[reg->index[k].slot];
            if (s->bundle_id == bundle_id && reg->index[k].contract_id == p->iface.contract_id)
                old = s;
        }
        if (old) {
            /* Same record and same functions for a Lua contract: skip identical
             * bytes so concurrent readers of a live interface never see a write. */
            if (memcmp(&old->iface, &p->iface, sizeof old->iface) != 0) old->iface = p->iface;
            old->version = p->version;
            free(old->plugin_name);
            old->plugin_name = p->plugin_name;
            p->plugin_name = NULL;
            old->state = PPI_SLOT_SURVIVING;
            slot_clear(p);
        } else if (ppi_grow((void **)&reg->index, &reg->index_cap, reg->index_len + 1,
                            sizeof reg->index[0])) {
            p->state = PPI_SLOT_SURVIVING;
            reg->index[reg->index_len].contract_id = p->iface.contract_id;
            reg->index[reg->index_len].slot = (uint32_t)i;
            reg->index_len++;
        } else {
            slot_clear(p); /* OOM: the new contract is dropped */
        }
    }
    for (size_t i = 0; i < reg->slots_len; i++) {
        ppi_slot *s = reg->slots[i];
        if (s->bundle_id != bundle_id) continue;
        if (s->state == PPI_SLOT_SURVIVING) {
            s->state = PPI_SLOT_PUBLISHED;
        } else if (s->state == PPI_SLOT_PUBLISHED) {
            index_remove_slot(reg, (uint32_t)i);
            slot_clear(s);
        }
    }
    end_reload_locked(reg, bundle_id);
    bump_revision(reg);
    pthread_rwlock_unlock(&reg->lock);
}

void ppi_registry_count_instance(ppi_registry *reg, uint64_t contract_id, int64_t delta) {
    pthread_rwlock_wrlock(&reg->lock);
    size_t i = 0;
    while (i < reg->counts_len && reg->counts[i].contract_id != contract_id) i++;
    if (i == reg->counts_len) {
        if (delta < 0 || !ppi_grow((void **)&reg->counts, &reg->counts_cap, i + 1,
                                   sizeof reg->counts[0])) {
            pthread_rwlock_unlock(&reg->lock);
            return;
        }
        reg->counts[i].contract_id = contract_id;
        reg->counts[i].live = 0;
        reg->counts_len++;
    }
    reg->counts[i].live += delta;
    if (reg->counts[i].live < 0) reg->counts[i].live = 0;
    pthread_rwlock_unlock(&reg->lock);
}

static int64_t *count_for(ppi_registry *reg, uint64_t contract_id) {
    for (size_t i = 0; i < reg->counts_len; i++)
        if (reg->counts[i].contract_id == contract_id) return &reg->counts[i].live;
    return NULL;
}

int64_t ppi_registry_live_instances(ppi_registry *reg, uint64_t bundle_id) {
    int64_t total = 0;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->slots[reg->index[i].slot]->bundle_id != bundle_id) continue;
        int64_t *c = count_for(reg, reg->index[i].contract_id);
        if (c) total += *c;
    }
    pthread_rwlock_unlock(&reg->lock);
    return total;
}

void ppi_registry_reset_counts(ppi_registry *reg, uint64_t bundle_id) {
    pthread_rwlock_wrlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        if (reg->slots[reg->index[i].slot]->bundle_id != bundle_id) continue;
        int64_t *c = count_for(reg, reg->index[i].contract_id);
        if (c) *c = 0;
    }
    pthread_rwlock_unlock(&reg->lock);
}

static void fill_info(const ppi_slot *s, pp_slot_info *out) {
    out->bundle_id = s->bundle_id;
    out->contract_id = s->iface.contract_id;
    out->version = s->iface.contract_version;
    ppi_strlcpy(out->contract_name, sizeof out->contract_name, s->contract_name);
    ppi_strlcpy(out->plugin_name, sizeof out->plugin_name, s->plugin_name);
}

int32_t ppi_registry_handle_info(ppi_registry *reg, GuestContractHandle h, pp_slot_info *out,
                                 pp_error *err) {
    const GuestContractInterface *iface;
    pthread_rwlock_rdlock(&reg->lock);
    int32_t st = ppi_registry_resolve_locked(reg, h, &iface, err);
    if (st == PP_OK) fill_info(reg->slots[h.index], out);
    pthread_rwlock_unlock(&reg->lock);
    return st;
}

size_t ppi_registry_bundle_slots(ppi_registry *reg, uint64_t bundle_id, pp_slot_info *out,
                                 size_t cap) {
    size_t n = 0;
    pthread_rwlock_rdlock(&reg->lock);
    for (size_t i = 0; i < reg->index_len; i++) {
        const ppi_slot *s = reg->slots[reg->index[i].slot];
        if (s->bundle_id != bundle_id) continue;
        if (n < cap) fill_info(s, &out[n]);
        n++;
    }
    pthread_rwlock_unlock(&reg->lock);
    return n;
}
