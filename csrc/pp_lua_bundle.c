/*
 * pp_lua_bundle.c — the LuaJIT loader's records and lifecycle: load (a VM per bundle,
 * a record per contract), hot reload (a new VM swapped in under the VM lock), unload
 * (retire, never wait), and the pp_loader vtable.
 *
 * A bundle record and its contract records are never freed while their runtime
 * lives: unload retires them to the runtime's graveyard, where they keep answering
 * StaleHandle to anyone still holding an interface pointer.  Reload keeps a surviving
 * contract's record (so old handles and interface pointers run the new code) and
 * retires the ones the new version dropped.  The old VM is closed when nobody is
 * inside it, with no lock held (pp_lua_call.c: reap).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "pp_lua_internal.h"

/* ── records ───────────────────────────────────────────────────────────────── */

static void contract_free(lua_contract *c) {
    free(c->name);
    free(c->fn_refs);
    free(c);
}

static void free_list(lua_contract *c) {
    while (c) {
        lua_contract *next = c->next;
        contract_free(c);
        c = next;
    }
}

/* Free a bundle record whose VM is closed (the graveyard's free function). */
static void bundle_free(void *p) {
    lua_bundle *b = p;
    if (!b) return;
    free_list(b->contracts);
    free(b->name);
    free(b);
}

static lua_bundle *bundle_new(lua_loader *ld, pp_runtime *rt, uint64_t id, const char *name) {
    lua_bundle *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    ppi_lock_init(&b->lock);
    atomic_init(&b->retired, false);
    b->loader = ld;
    b->rt = rt;
    b->id = id;
    b->call_timeout_ns = ld->config.call_timeout_ns;
    b->memory_limit = ld->config.memory_limit;
    b->name = ppi_strdup(name);
    if (!b->name) {
        free(b);
        return NULL;
    }
    return b;
}

/* Loader lock held. */
static lua_bundle *bundle_find(lua_loader *ld, pp_runtime *rt, uint64_t id) {
    return ppi_map_get_ptr(&ld->bundles, (uint64_t)(uintptr_t)rt, id);
}

static lua_contract *contract_find(lua_contract *list, const char *name, uint32_t major) {
    for (lua_contract *c = list; c; c = c->next)
        if (c->major == major && strcmp(c->name, name) == 0) return c;
    return NULL;
}

/* Point record `c` at the references of `p` (which live in the bundle's new VM). */
static void contract_adopt(lua_contract *c, lua_pending *p) {
    free(c->fn_refs);
    c->fn_refs = p->fn_refs;
    p->fn_refs = NULL;
    atomic_store_explicit(&c->fn_count, p->fn_count, memory_order_relaxed);
    c->factory_ref = p->factory_ref;
    c->default_ref = p->default_ref;
    c->instances_ref = p->instances_ref;
    c->retired = false;
}

static lua_contract *contract_new(lua_bundle *b, const lua_pending *p) {
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
    atomic_init(&c->fn_count, p->fn_count);
    c->next_instance = 1;
    return c;
}

/* The record for each registration: the bundle's existing one (a reload keeps it),
 * else a new one on the `fresh` list. */
static int32_t records_for(lua_bundle *b, lua_init_result *res, lua_contract **fresh,
                           const char *bundle, pp_error *err) {
    for (size_t i = 0; i < res->len; i++) {
        lua_pending *p = &res->items[i];
        if (contract_find(b->contracts, p->name, p->major)) continue;
        lua_contract *c = contract_new(b, p);
        if (!c) return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        c->next = *fresh;
        *fresh = c;
    }
    return PP_OK;
}

/* Register every contract of `res` (the runtime's window keeps them pending). */
static int32_t register_all(lua_bundle *b, lua_init_result *res, lua_contract *fresh,
                            const char *bundle, pp_error *err) {
    for (size_t i = 0; i < res->len; i++) {
        lua_pending *p = &res->items[i];
        lua_contract *c = contract_find(b->contracts, p->name, p->major);
        if (!c) c = contract_find(fresh, p->name, p->major);
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
        iface.create_instance = ppi_lua_create_instance;
        iface.destroy_instance = ppi_lua_destroy_instance;
        iface.dispatch.vm.call = ppi_lua_vm_call;
        iface.dispatch.vm.loader_data.data = c;
        pp_error e;
        pp_error_clear(&e);
        if (ppi_register_guest(b->rt, &desc, &iface, &e) != PP_OK) {
            if (e.status == PP_ERR_RUNTIME_CLOSED) {
                ppi_fail(err, PP_ERR_RUNTIME_CLOSED, bundle, NULL, NULL,
                         "loading bundle `%s`: the runtime was closed", bundle);
                return PP_ERR_RUNTIME_CLOSED;
            }
            char detail[4200];
            snprintf(detail, sizeof detail,
                     "register_guest_contract error for contract '%.300s': code=%u: %s",
                     p->name, e.abi_code, e.message);
            int32_t st = ppi_lua_init_failed(err, bundle, detail);
            if (err) err->abi_code = e.abi_code;
            return st;
        }
    }
    return PP_OK;
}

/* Point every registration's record (existing or fresh) at its references in the
 * new VM; then move the fresh records onto the bundle's list. */
static void adopt_all(lua_bundle *b, lua_init_result *res, lua_contract *fresh) {
    for (size_t i = 0; i < res->len; i++) {
        lua_pending *p = &res->items[i];
        lua_contract *c = contract_find(b->contracts, p->name, p->major);
        if (!c) c = contract_find(fresh, p->name, p->major);
        contract_adopt(c, p);
    }
    while (fresh) {
        lua_contract *next = fresh->next;
        fresh->next = b->contracts;
        b->contracts = fresh;
        fresh = next;
    }
}

/* ── load and reload ───────────────────────────────────────────────────────── */

static int32_t load_first(lua_loader *ld, pp_runtime *rt, const pp_manifest *m,
                          const pp_source *src, pp_error *err) {
    char bundle[256];
    ppi_view_copy(bundle, sizeof bundle, m->name);
    lua_bundle *b = bundle_new(ld, rt, m->id, bundle);
    if (!b) return ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
    int32_t st = pp_runtime_begin_init(rt, m->id, err);
    if (st != PP_OK) {
        bundle_free(b);
        return st;
    }
    lua_init_result res;
    lua_contract *fresh = NULL;
    st = ppi_lua_run_init(rt, &ld->config, m, src, bundle, &res, err);
    if (st == PP_OK) st = records_for(b, &res, &fresh, bundle, err);
    if (st == PP_OK) st = register_all(b, &res, fresh, bundle, err);
    pp_runtime_end_init(rt);
    if (st == PP_OK) {
        ppi_mutex_lock(&ld->lock);
        if (!ppi_map_put_ptr(&ld->bundles, (uint64_t)(uintptr_t)rt, m->id, b))
            st = ppi_fail(err, PP_ERR_NO_MEMORY, bundle, NULL, NULL, "out of memory");
        ppi_mutex_unlock(&ld->lock);
    }
    if (st != PP_OK) {
        /* nothing was published (the runtime's load window), so nobody can reach the
         * records or the VM: free them now, close the VM once no lock is held */
        free_list(fresh);
        ppi_lua_init_result_free(&res, true);
        bundle_free(b);
        return st;
    }
    adopt_all(b, &res, fresh);
    b->L = res.L;
    res.L = NULL;
    b->memory_snapshot = ppi_lua_vm_memory(b->L);
    ppi_lua_init_result_free(&res, false);
    return PP_OK;
}

/* Until when a reload waits for the call running in b: the loader's call timeout (10 s
 * without one); from inside a call (a guest reloading a bundle) no longer than that
 * call's remaining time, and PPI_NESTED_WAIT_NS at most, as every wait of a thread that
 * holds a VM lock (pp_internal.h). */
static long long busy_wait_end(const lua_bundle *b) {
    long long now = ppi_now_ns();
    uint64_t wait = b->call_timeout_ns ? b->call_timeout_ns : PPI_LUA_BUSY_WAIT_NS;
    long long end = ppi_deadline_after(wait);
    ppi_thread *t = ppi_self();
    if (t->vm_locks == 0) return end;
    if (now + (long long)PPI_NESTED_WAIT_NS < end) end = now + (long long)PPI_NESTED_WAIT_NS;
    if (t->call && t->call->deadline_ns) {
        long long d = ppi_lua_deadline(t->call);
        if (d < end) end = d;
    }
    return end;
}

/*
 * Reload: a new VM runs the new code; then, under the VM lock, every record is
 * pointed at the new VM (records of dropped contracts are retired) and the VM is
 * swapped.  The wait for the VM lock is bounded: this thread holds the runtime's
 * flow lock, and a call inside the bundle may be waiting for it (a guest loading a
 * bundle).  The old VM is closed once the flow lock is released.
 */
static int32_t reload(lua_loader *ld, pp_runtime *rt, lua_bundle *b, const pp_manifest *m,
                      pp_error *err) {
    char bundle[256];
    ppi_view_copy(bundle, sizeof bundle, m->name);
    pp_source src = {PP_SOURCE_PATH, m->path};
    int32_t st = pp_runtime_begin_init(rt, m->id, err);
    if (st != PP_OK) return st;
    lua_init_result res;
    lua_contract *fresh = NULL;
    st = ppi_lua_run_init(rt, &ld->config, m, &src, bundle, &res, err);
    if (st == PP_OK) st = records_for(b, &res, &fresh, bundle, err);
    if (st == PP_OK) st = register_all(b, &res, fresh, bundle, err);
    pp_runtime_end_init(rt);
    const char *busy = NULL;
    uintptr_t me = ppi_thread_tag();
    if (st == PP_OK) {
        if (ppi_lock_mine(&b->lock, me))
            busy = "it cannot be reloaded from inside a call into it";
        else if (!ppi_lock_try(&b->lock, me) &&
                 !ppi_lock_acquire_until(&b->lock, busy_wait_end(b)))
            busy = "a call into it did not finish in time";
        if (busy)
            st = ppi_fail(err, PP_ERR_GENERIC, bundle, NULL, busy,
                          "reload of bundle `%s` not applied: %s; the previous version keeps "
                          "serving",
                          bundle, busy);
    }
    if (st != PP_OK) {
        free_list(fresh); /* never published: the runtime aborts the window */
        ppi_lua_init_result_free(&res, true);
        return st;
    }
    atomic_store_explicit(&b->lock.owner, me, memory_order_relaxed);
    if (atomic_load(&b->retired)) { /* unloaded while its new version initialised */
        ppi_lua_release(b);
        free_list(fresh);
        ppi_lua_init_result_free(&res, true);
        return ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, bundle, NULL, NULL,
                        "reload of bundle `%s` not applied: it was unloaded while its new "
                        "version was loading",
                        bundle);
    }
    lua_State *old = b->L;
    for (lua_contract *c = b->contracts; c; c = c->next) c->retired = true;
    adopt_all(b, &res, fresh);
    /* records the new version dropped answer StaleHandle until the runtime goes */
    for (lua_contract *c = b->contracts; c; c = c->next)
        if (c->retired) atomic_store_explicit(&c->fn_count, 0, memory_order_relaxed);
    b->L = res.L;
    res.L = NULL;
    ppi_lua_release(b);
    ppi_lua_vm_close(rt, old);
    ppi_lua_init_result_free(&res, false);
    return PP_OK;
}

/* ── the pp_loader vtable ──────────────────────────────────────────────────── */

static int32_t loader_load(void *self, pp_runtime *rt, const pp_manifest *m,
                           const pp_source *src, pp_error *err) {
    lua_loader *ld = self;
    ppi_mutex_lock(&ld->lock);
    bool have = bundle_find(ld, rt, m->id) != NULL;
    ppi_mutex_unlock(&ld->lock);
    if (have) {
        char bundle[256];
        ppi_view_copy(bundle, sizeof bundle, m->name);
        return ppi_fail(err, PP_ERR_ALREADY_LOADED, bundle, NULL, NULL,
                        "bundle `%s` is already loaded in this runtime; unload it first, or "
                        "use reload_bundle to replace it",
                        bundle);
    }
    return load_first(ld, rt, m, src, err);
}

static int32_t loader_reload(void *self, pp_runtime *rt, const pp_manifest *m, pp_error *err) {
    lua_loader *ld = self;
    ppi_mutex_lock(&ld->lock);
    lua_bundle *b = bundle_find(ld, rt, m->id);
    ppi_mutex_unlock(&ld->lock);
    if (!b) {
        char bundle[256];
        ppi_view_copy(bundle, sizeof bundle, m->name);
        return ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, bundle, NULL, NULL,
                        "bundle `%s` was not loaded by this Lua loader", bundle);
    }
    return reload(ld, rt, b, m, err);
}

/* Retire the bundle and keep its records until the runtime goes: interface pointers
 * handed out earlier keep answering (StaleHandle).  Never waits for a call in it. */
static void loader_unload(void *self, pp_runtime *rt, uint64_t bundle_id) {
    lua_loader *ld = self;
    ppi_mutex_lock(&ld->lock);
    lua_bundle *b = bundle_find(ld, rt, bundle_id);
    if (b) ppi_map_remove(&ld->bundles, (uint64_t)(uintptr_t)rt, bundle_id);
    ppi_mutex_unlock(&ld->lock);
    if (!b) return;
    ppi_lua_retire(b);
    ppi_runtime_bury(rt, b, bundle_free);
}

static int64_t loader_memory(void *self, pp_runtime *rt, uint64_t bundle_id) {
    lua_loader *ld = self;
    uintptr_t me = ppi_thread_tag();
    ppi_mutex_lock(&ld->lock);
    lua_bundle *b = bundle_find(ld, rt, bundle_id);
    ppi_mutex_unlock(&ld->lock);
    if (!b) return -1;
    /* never wait for a running call: a busy bundle reports its size as of its last idle
     * query (the record stays valid: unloaded bundles are kept until the runtime goes) */
    if (!ppi_lock_mine(&b->lock, me) && ppi_lock_try(&b->lock, me)) {
        if (b->L) b->memory_snapshot = ppi_lua_vm_memory(b->L);
        ppi_lua_release(b);
    }
    return b->memory_snapshot;
}

static void lua_loader_destroy(void *self) {
    lua_loader *ld = self;
    /* every runtime unloads its bundles before it lets go of its loaders, so the list
     * is empty here; anything left is a direct pp_loader_load into a runtime that was
     * never freed, and is freed with its VM */
    size_t pos = 0;
    for (ppi_map_entry *e; (e = ppi_map_next(&ld->bundles, &pos));) {
        lua_bundle *b = (lua_bundle *)(uintptr_t)e->value;
        if (b->L) ppi_lua_vm_close(b->rt, b->L);
        bundle_free(b);
    }
    ppi_map_free(&ld->bundles);
    ppi_leaf_mutex_destroy(&ld->lock);
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
    if (ppi_leaf_mutex_init(&ld->lock) != 0) {
        free(ld);
        return NULL;
    }
    pp_loader *l = pp_loader_new(&lua_vtable, ld);
    if (!l) lua_loader_destroy(ld);
    return l;
}
