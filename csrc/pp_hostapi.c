/*
 * pp_hostapi.c — the 21 HostApi entry points (abi-runtime.md §5), exactly: each one
 * recovers the runtime from `self`, tolerates NULL the way upstream does, and reports
 * through the AbiError out-param plus the runtime's last_error.  Calls and limits are
 * in pp_call.c, flows in pp_runtime.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

static pp_runtime *rt_of(const HostApi *self) { return self ? (pp_runtime *)self->runtime : NULL; }

static void set_err(AbiError *out_err, uint32_t code, const char *static_msg) {
    if (!out_err) return;
    out_err->code = code;
    out_err->message = static_msg ? ppi_view(static_msg) : (StringView){NULL, 0};
}

/* Report a pp_error: code from its abi_code, text into last_error. */
static void set_err_from(pp_runtime *rt, AbiError *out_err, const pp_error *e) {
    if (e->status == PP_OK) {
        set_err(out_err, AbiErrorCode_Ok, NULL);
        return;
    }
    if (rt) ppi_set_last_error(rt, e->message);
    set_err(out_err, e->abi_code ? e->abi_code : AbiErrorCode_Generic, NULL);
}

/* ── registration ──────────────────────────────────────────────────────────── */

/* The static texts of the function-pointer checks, per registering entry point. */
typedef struct fn_messages {
    const char *create, *destroy, *vm_call, *native_table, *native_entry;
} fn_messages;

static const fn_messages guest_messages = {
    "register_guest_contract: create_instance is null — the field is required; signal "
    "create failure by returning a null instance handle instead",
    "register_guest_contract: destroy_instance is null — the field is required; use a no-op "
    "function for stateless contracts",
    "register_guest_contract: dispatch.vm.call is null — required for VirtualMachine dispatch",
    "register_guest_contract: dispatch.native.functions is null while function_count > 0",
    "register_guest_contract: dispatch.native.functions contains a null entry within "
    "function_count",
};

static const fn_messages host_messages = {
    "register_host_contract: create_instance is null — the field is required; signal create "
    "failure by returning a null instance handle instead",
    "register_host_contract: destroy_instance is null — the field is required; use a no-op "
    "function for singleton/stateless contracts",
    "register_host_contract: dispatch.vm.call is null — required for VirtualMachine dispatch",
    "register_host_contract: dispatch.native.functions is null while function_count > 0",
    "register_host_contract: dispatch.native.functions contains a null entry within "
    "function_count",
};

/* The message for the first missing function pointer, or NULL when all are there. */
static const char *check_functions(const fn_messages *m, bool has_create, bool has_destroy,
                                   uint32_t dispatch_type, const DispatchMechanisms *d) {
    if (!has_create) return m->create;
    if (!has_destroy) return m->destroy;
    if (dispatch_type == DispatchType_VirtualMachine && !d->vm.call) return m->vm_call;
    if (dispatch_type == DispatchType_Native) {
        if (d->native.function_count > 0 && !d->native.functions) return m->native_table;
        for (uint32_t i = 0; i < d->native.function_count; i++)
            if (!d->native.functions[i]) return m->native_entry;
    }
    return NULL;
}

int32_t ppi_register_guest(pp_runtime *rt, const PluginDescriptor *desc,
                           const GuestContractInterface *iface, pp_error *e) {
    if (atomic_load_explicit(&rt->closed, memory_order_relaxed)) {
        ppi_closed_error(e, "register_guest_contract");
    } else if (!ppi_utf8_valid(desc->contract_name.ptr, desc->contract_name.len)) {
        ppi_fail(e, PP_ERR_INVALID_REGISTRATION, NULL, NULL, NULL,
                 "invalid UTF-8 in plugin-provided data: context=PluginDescriptor.contract_name");
    } else if (iface->dispatch_type > DispatchType_VirtualMachine) {
        ppi_fail(e, PP_ERR_INVALID_REGISTRATION, NULL, NULL, NULL,
                 "invalid dispatch_type %u in guest contract interface (untrusted plugin)",
                 iface->dispatch_type);
    } else if (desc->name.len && (!desc->name.ptr ||
                                  !ppi_utf8_valid(desc->name.ptr, desc->name.len))) {
        ppi_fail(e, PP_ERR_INVALID_REGISTRATION, NULL, NULL, NULL,
                 "invalid UTF-8 in plugin-provided data: context=PluginDescriptor.name");
    } else {
        uint64_t bundle = ppi_current_init_bundle(rt);
        ppi_registry_register(&rt->reg, bundle, desc, iface, e);
    }
    return e->status;
}

static void host_register_guest_contract(const HostApi *self, const PluginDescriptor *desc,
                                         const GuestContractInterface *iface,
                                         AbiError *out_err) {
    pp_runtime *rt = rt_of(self);
    if (!desc) {
        set_err(out_err, AbiErrorCode_InvalidPointer,
                "register_guest_contract: descriptor pointer is null");
        return;
    }
    if (!iface) {
        set_err(out_err, AbiErrorCode_InvalidPointer,
                "register_guest_contract: interface pointer is null");
        return;
    }
    const char *bad = check_functions(&guest_messages, iface->create_instance != NULL,
                                      iface->destroy_instance != NULL, iface->dispatch_type,
                                      &iface->dispatch);
    if (bad) {
        set_err(out_err, AbiErrorCode_InvalidPointer, bad);
        return;
    }
    if (!desc->contract_name.ptr || desc->contract_name.len == 0) {
        set_err(out_err, AbiErrorCode_Generic, "PluginDescriptor.contract_name is null or empty");
        return;
    }
    if (!rt) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "null HostApi in register_guest_contract");
        return;
    }
    pp_error e;
    pp_error_clear(&e);
    if (ppi_register_guest(rt, desc, iface, &e) != PP_OK)
        ppi_logf(rt, LogLevel_Error, "registry", "%s", e.message);
    set_err_from(rt, out_err, &e);
}

/* ── memory ────────────────────────────────────────────────────────────────── */

static bool valid_layout(size_t size, size_t align) {
    return size != 0 && align != 0 && (align & (align - 1)) == 0;
}

static uint8_t *host_alloc(const HostApi *self, size_t size, size_t align) {
    (void)self;
    if (!valid_layout(size, align)) return NULL;
    if (align <= _Alignof(max_align_t)) return malloc(size);
    void *p = NULL;
    if (align < sizeof(void *)) align = sizeof(void *);
    return posix_memalign(&p, align, size) == 0 ? p : NULL;
}

static void host_free(const HostApi *self, uint8_t *ptr, size_t size, size_t align) {
    (void)self;
    if (!ptr || !valid_layout(size, align)) return;
    free(ptr);
}

/* host_alloc for typed arrays: the memory is aligned as asked, so it converts to any
 * T * through void * without a cast that drops the alignment information. */
static void *host_alloc_array(const HostApi *self, size_t size, size_t align) {
    return host_alloc(self, size, align);
}

/* ── lookups ───────────────────────────────────────────────────────────────── */

/* During a bundle's init window only its declared dependencies are visible. */
static bool lookup_denied(pp_runtime *rt, uint64_t contract_id) {
    uint64_t bundle = ppi_current_init_bundle(rt);
    return bundle != 0 && !ppi_registry_declares(&rt->reg, bundle, contract_id);
}

static GuestContractHandle host_find_guest_contract(const HostApi *self, uint64_t contract_id,
                                                    uint32_t min_major) {
    GuestContractHandle none = {UINT32_MAX, 0};
    pp_runtime *rt = rt_of(self);
    if (!rt || lookup_denied(rt, contract_id)) return none;
    return ppi_registry_find(&rt->reg, contract_id, min_major, false, 0);
}

static ArrayGuestContractHandle host_find_all_guest_contracts(const HostApi *self,
                                                              uint64_t contract_id,
                                                              uint32_t min_major) {
    ArrayGuestContractHandle arr = {NULL, 0, _Alignof(GuestContractHandle)};
    pp_runtime *rt = rt_of(self);
    if (!rt || lookup_denied(rt, contract_id)) return arr;
    for (;;) {
        size_t n = ppi_registry_find_all(&rt->reg, contract_id, min_major, NULL, 0);
        if (n == 0) return arr;
        GuestContractHandle *items = host_alloc_array(
            self, n * sizeof *items, _Alignof(GuestContractHandle));
        if (!items) return arr;
        size_t got = ppi_registry_find_all(&rt->reg, contract_id, min_major, items, n);
        if (got <= n) {
            if (got == 0) {
                host_free(self, (uint8_t *)items, n * sizeof *items, arr.align);
                return arr;
            }
            /* shrink is not needed: the caller frees len*size, so report exact length
             * only when it matches the allocation */
            if (got == n) {
                arr.items = items;
                arr.len = n;
                return arr;
            }
        }
        host_free(self, (uint8_t *)items, n * sizeof *items, arr.align); /* raced; retry */
    }
}

static const GuestContractInterface *host_resolve_guest_contract(const HostApi *self,
                                                                 GuestContractHandle h) {
    pp_runtime *rt = rt_of(self);
    const GuestContractInterface *iface = NULL;
    if (rt) ppi_registry_resolve(&rt->reg, h, &iface, NULL);
    return iface;
}

/* ── host contracts ────────────────────────────────────────────────────────── */

static bool host_version_ok(const Version *v, uint32_t packed) {
    if (packed == 0) return true;
    return v->major == (packed >> 16) && v->minor >= (packed & 0xFFFF);
}

static HostContractInstance host_get_host_contract(const HostApi *self, uint64_t contract_id,
                                                   uint32_t packed) {
    HostContractInstance none = {NULL};
    pp_runtime *rt = rt_of(self);
    if (!rt) return none;
    const HostContractInterface *iface = NULL;
    HostContractInstance cached = none;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->host_contracts_len; i++) {
        ppi_host_contract *hc = &rt->host_contracts[i];
        if (hc->iface->contract_id == contract_id &&
            host_version_ok(&hc->iface->contract_version, packed)) {
            iface = hc->iface;
            cached = hc->cached;
            break;
        }
    }
    ppi_mutex_unlock(&rt->lock);
    if (!iface) {
        char msg[160];
        snprintf(msg, sizeof msg, "host contract not found: id=%llu, min_version=%u",
                 (unsigned long long)contract_id, packed);
        ppi_set_last_error(rt, msg);
        return none;
    }
    if (iface->singleton && cached.data) return cached;
    HostContractInstance inst = none;
    iface->create_instance(iface, NULL, &inst);
    if (iface->singleton && inst.data) {
        ppi_mutex_lock(&rt->lock);
        for (size_t i = 0; i < rt->host_contracts_len; i++) {
            ppi_host_contract *hc = &rt->host_contracts[i];
            if (hc->iface != iface) continue;
            if (hc->cached.data) {
                /* another thread won the race: keep its instance, drop ours */
                HostContractInstance mine = inst;
                inst = hc->cached;
                ppi_mutex_unlock(&rt->lock);
                iface->destroy_instance(iface, mine);
                return inst;
            }
            hc->cached = inst;
        }
        ppi_mutex_unlock(&rt->lock);
    }
    return inst;
}

static const HostContractInterface *host_resolve_host_contract_interface(const HostApi *self,
                                                                         uint64_t contract_id,
                                                                         uint32_t packed) {
    pp_runtime *rt = rt_of(self);
    if (!rt) return NULL;
    const HostContractInterface *iface = NULL;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->host_contracts_len && !iface; i++) {
        const HostContractInterface *c = rt->host_contracts[i].iface;
        if (c->contract_id == contract_id && host_version_ok(&c->contract_version, packed))
            iface = c;
    }
    ppi_mutex_unlock(&rt->lock);
    if (!iface) {
        char msg[160];
        snprintf(msg, sizeof msg, "host contract interface not found: id=%llu, min_version=%u",
                 (unsigned long long)contract_id, packed);
        ppi_set_last_error(rt, msg);
    }
    return iface;
}

/* ── the runtime's list of host contracts (also pp_hostfn.c's) ────────────── */

int32_t ppi_host_publish(pp_runtime *rt, const HostContractInterface *iface, bool replace,
                         const HostContractInterface **replaced, pp_error *err) {
    int32_t st = PP_OK;
    *replaced = NULL;
    ppi_mutex_lock(&rt->lock);
    ppi_host_contract *same = NULL;
    for (size_t i = 0; i < rt->host_contracts_len && !same; i++)
        if (rt->host_contracts[i].iface->contract_id == iface->contract_id)
            same = &rt->host_contracts[i];
    if (same && !replace) {
        st = ppi_fail(err, PP_ERR_HOST_CONTRACT_EXISTS, NULL, NULL, NULL,
                      "duplicate host contract registration: contract_id=0x%016llX is already "
                      "provided (withdraw it first, or replace it)",
                      (unsigned long long)iface->contract_id);
    } else if (same) {
        *replaced = same->iface;
        same->iface = iface;
        same->cached.data = NULL;
    } else if (ppi_grow((void **)&rt->host_contracts, &rt->host_contracts_cap,
                        rt->host_contracts_len + 1, sizeof rt->host_contracts[0])) {
        rt->host_contracts[rt->host_contracts_len].iface = iface;
        rt->host_contracts[rt->host_contracts_len].cached.data = NULL;
        rt->host_contracts_len++;
    } else {
        st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL,
                      "out of memory registering a host contract");
    }
    ppi_mutex_unlock(&rt->lock);
    if (st == PP_OK) atomic_fetch_add(&rt->reg.revision, 1);
    return st;
}

const HostContractInterface *ppi_host_unpublish(pp_runtime *rt, uint64_t contract_id,
                                                const HostContractInterface *only) {
    const HostContractInterface *gone = NULL;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->host_contracts_len; i++) {
        if (rt->host_contracts[i].iface->contract_id != contract_id) continue;
        if (only && rt->host_contracts[i].iface != only) break;
        gone = rt->host_contracts[i].iface;
        memmove(&rt->host_contracts[i], &rt->host_contracts[i + 1],
                (rt->host_contracts_len - i - 1) * sizeof rt->host_contracts[0]);
        rt->host_contracts_len--;
        break;
    }
    ppi_mutex_unlock(&rt->lock);
    if (gone) atomic_fetch_add(&rt->reg.revision, 1);
    return gone;
}

static void host_register_host_contract(const HostApi *self, const HostContractInterface *iface,
                                        AbiError *out_err) {
    pp_runtime *rt = rt_of(self);
    if (!rt || !iface) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "null pointer in register_host_contract");
        return;
    }
    const char *bad = check_functions(&host_messages, iface->create_instance != NULL,
                                      iface->destroy_instance != NULL, iface->dispatch_type,
                                      &iface->dispatch);
    if (bad) {
        set_err(out_err, AbiErrorCode_InvalidPointer, bad);
        return;
    }
    if (iface->dispatch_type > DispatchType_VirtualMachine) {
        set_err(out_err, AbiErrorCode_Generic,
                "register_host_contract: invalid dispatch_type (must be 0 Native or 1 "
                "VirtualMachine)");
        return;
    }
    /* upstream: a duplicate is Generic with a static message, last_error untouched */
    pp_error e;
    pp_error_clear(&e);
    const HostContractInterface *replaced;
    int32_t st = ppi_host_publish(rt, iface, false, &replaced, &e);
    set_err(out_err, st == PP_OK ? AbiErrorCode_Ok : AbiErrorCode_Generic,
            st == PP_OK                        ? NULL
            : st == PP_ERR_HOST_CONTRACT_EXISTS ? "duplicate host contract registration"
                                               : "out of memory registering a host contract");
}

const HostContractInterface *pp_runtime_find_host_contract(pp_runtime *rt,
                                                           uint64_t contract_id) {
    if (!rt) return NULL;
    const HostContractInterface *iface = NULL;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->host_contracts_len && !iface; i++)
        if (rt->host_contracts[i].iface->contract_id == contract_id)
            iface = rt->host_contracts[i].iface;
    ppi_mutex_unlock(&rt->lock);
    return iface;
}

/* ── bundles ───────────────────────────────────────────────────────────────── */

static ArrayU64 host_list_bundles(const HostApi *self) {
    ArrayU64 arr = {NULL, 0, _Alignof(uint64_t)};
    pp_runtime *rt = rt_of(self);
    if (!rt) return arr;
    for (;;) {
        size_t n = pp_runtime_bundle_ids(rt, NULL, 0);
        if (n == 0) return arr;
        uint64_t *items = host_alloc_array(self, n * sizeof *items, arr.align);
        if (!items) return arr;
        if (pp_runtime_bundle_ids(rt, items, n) == n) {
            arr.items = items;
            arr.len = n;
            return arr;
        }
        host_free(self, (uint8_t *)items, n * sizeof *items, arr.align);
    }
}

static ArrayDependencyInfo host_get_dependencies(const HostApi *self) {
    ArrayDependencyInfo arr = {NULL, 0, _Alignof(DependencyInfo)};
    pp_runtime *rt = rt_of(self);
    if (!rt) return arr;
    uint64_t bundle = ppi_current_init_bundle(rt);
    if (bundle == 0) return arr;
    ppi_mutex_lock(&rt->lock);
    const ppi_bundle *b = ppi_runtime_bundle_locked(rt, bundle);
    if (b && b->deps_len) {
        DependencyInfo *items = host_alloc_array(self, b->deps_len * sizeof *items, arr.align);
        if (items) {
            for (size_t i = 0; i < b->deps_len; i++) {
                memset(&items[i], 0, sizeof items[i]);
                items[i].contract_id = b->deps[i].contract_id;
                items[i].min_version = b->deps[i].min_version;
                items[i].bundle_id = b->deps[i].bundle_id;
            }
            arr.items = items;
            arr.len = b->deps_len;
        }
    }
    ppi_mutex_unlock(&rt->lock);
    return arr;
}

static void path_op(const HostApi *self, const uint8_t *path, size_t path_len,
                    AbiError *out_err, bool reload) {
    pp_runtime *rt = rt_of(self);
    if (!rt) {
        set_err(out_err, AbiErrorCode_InvalidPointer,
                reload ? "null HostApi in reload_bundle" : "null HostApi in load_bundle");
        return;
    }
    if (!path) {
        const char *msg =
            reload ? "null path pointer in reload_bundle" : "null path pointer in load_bundle";
        ppi_set_last_error(rt, msg);
        set_err(out_err, AbiErrorCode_InvalidPointer, msg);
        return;
    }
    pp_error e;
    pp_error_clear(&e);
    ppi_mutex_lock(&rt->lock);
    pp_path_hook hook = reload ? rt->reload_hook : rt->load_hook;
    void *ud = rt->hook_user_data;
    ppi_mutex_unlock(&rt->lock);
    if (reload && !rt->hot_reload_enabled) {
        ppi_fail(&e, PP_ERR_HOT_RELOAD_DISABLED, NULL, NULL, NULL,
                 "hot-reload is disabled in runtime config");
    } else if (!ppi_utf8_valid(path, path_len)) {
        ppi_fail(&e, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                 "invalid UTF-8 in bundle path passed to %s",
                 reload ? "reload_bundle" : "load_bundle");
    } else if (!hook) { /* no driver hook: the C manifest reader */
        StringView p = {path, path_len};
        if (reload)
            pp_runtime_reload_path(rt, p, &e);
        else
            pp_runtime_load_path(rt, p, &e);
    } else {
        StringView p = {path, path_len};
        if (hook(ud, rt, p, &e) != PP_OK && e.status == PP_OK)
            ppi_fail(&e, PP_ERR_HOST_EXCEPTION, NULL, NULL, NULL, "the manifest reader failed");
    }
    set_err_from(rt, out_err, &e);
}

static void host_load_bundle(const HostApi *self, const uint8_t *path, size_t path_len,
                             AbiError *out_err) {
    path_op(self, path, path_len, out_err, false);
}

static void host_reload_bundle(const HostApi *self, const uint8_t *path, size_t path_len,
                               AbiError *out_err) {
    path_op(self, path, path_len, out_err, true);
}

static void host_unload_bundle(const HostApi *self, uint64_t bundle_id, AbiError *out_err) {
    pp_runtime *rt = rt_of(self);
    if (!rt) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "null HostApi in unload_bundle");
        return;
    }
    pp_error e;
    pp_error_clear(&e);
    pp_runtime_unload(rt, bundle_id, &e);
    set_err_from(rt, out_err, &e);
}

static void host_register_loader(const HostApi *self, void *loader_ptr, AbiError *out_err) {
    pp_runtime *rt = rt_of(self);
    if (!rt || !loader_ptr) {
        set_err(out_err, AbiErrorCode_InvalidPointer, "null pointer in register_loader");
        return;
    }
    /* Takes ownership of one reference of `loader_ptr` (a pp_loader*), success or not. */
    pp_loader *loader = loader_ptr;
    pp_error e;
    pp_error_clear(&e);
    pp_runtime_add_loader(rt, loader, &e);
    pp_loader_release(loader);
    set_err_from(rt, out_err, &e);
}

/* ── error channel, logging, instances, revision ───────────────────────────── */

static size_t host_get_last_error(const HostApi *self, uint8_t *buf, size_t buf_len) {
    pp_runtime *rt = rt_of(self);
    if (!rt) return 0;
    ppi_mutex_lock(&rt->lock);
    size_t len = rt->last_error_len, n;
    if (!buf) {
        n = len;
    } else {
        n = len < buf_len ? len : buf_len;
        if (n) memcpy(buf, rt->last_error, n);
    }
    free(rt->last_error); /* reading always clears, even when truncated (upstream) */
    rt->last_error = NULL;
    rt->last_error_len = 0;
    ppi_mutex_unlock(&rt->lock);
    return n;
}

static size_t host_get_error_len(const HostApi *self) {
    pp_runtime *rt = rt_of(self);
    if (!rt) return 0;
    ppi_mutex_lock(&rt->lock);
    size_t len = rt->last_error_len;
    ppi_mutex_unlock(&rt->lock);
    return len;
}

static void host_log(const HostApi *self, uint32_t level, StringView scope, StringView message) {
    pp_runtime *rt = rt_of(self);
    if (!rt) return;
    if (!scope.ptr) scope.len = 0;
    if (!message.ptr) message.len = 0;
    ppi_log_emit(&rt->log, level, scope, message);
}

static VmLoaderData loader_data_of(const GuestContractInterface *iface) {
    VmLoaderData none = {NULL};
    return iface->dispatch_type == DispatchType_VirtualMachine ? iface->dispatch.vm.loader_data
                                                               : none;
}

/* Instances of Lua contracts are counted by the Lua loader, under the VM lock
 * (pp_lua_call.c); other loaders' instances are counted here. */
static bool counted_by_loader(const GuestContractInterface *iface) {
    return iface->dispatch_type == DispatchType_VirtualMachine &&
           iface->dispatch.vm.call == ppi_lua_vm_call_fn();
}

static void host_create_guest_instance(const HostApi *self, const GuestContractInterface *iface,
                                       const void *args, GuestContractInstance *out_instance) {
    if (!out_instance) return;
    out_instance->data = NULL;
    out_instance->contract_id = 0;
    pp_runtime *rt = rt_of(self);
    ppi_record *r = ppi_my_record();
    if (!rt || !iface || !r) return;
    pp_runtime *prev = ppi_enter_rt(r, rt);
    iface->create_instance(loader_data_of(iface), self, args, out_instance);
    if (out_instance->data && !counted_by_loader(iface))
        ppi_registry_count_instance(&rt->reg, out_instance->contract_id, 1);
    ppi_leave_rt(r, prev);
}

static void host_destroy_guest_instance(const HostApi *self, const GuestContractInterface *iface,
                                        GuestContractInstance instance) {
    pp_runtime *rt = rt_of(self);
    ppi_record *r = ppi_my_record();
    if (!rt || !iface || !r) return;
    pp_runtime *prev = ppi_enter_rt(r, rt);
    iface->destroy_instance(loader_data_of(iface), self, instance);
    if (instance.data && !counted_by_loader(iface))
        ppi_registry_count_instance(&rt->reg, instance.contract_id, -1);
    ppi_leave_rt(r, prev);
}

static const uint64_t *host_revision_counter(const HostApi *self) {
    pp_runtime *rt = rt_of(self);
    /* the atomic has the same size and representation as uint64_t on every target */
    return rt ? (const uint64_t *)&rt->reg.revision : NULL;
}

void ppi_fill_host_api(HostApi *api, pp_runtime *rt) {
    memset(api, 0, sizeof *api);
    api->runtime = rt;
    api->register_guest_contract = host_register_guest_contract;
    api->alloc = host_alloc;
    api->free = host_free;
    api->find_guest_contract = host_find_guest_contract;
    api->find_all_guest_contracts = host_find_all_guest_contracts;
    api->resolve_guest_contract = host_resolve_guest_contract;
    api->get_host_contract = host_get_host_contract;
    api->resolve_host_contract_interface = host_resolve_host_contract_interface;
    api->list_bundles = host_list_bundles;
    api->get_dependencies = host_get_dependencies;
    api->load_bundle = host_load_bundle;
    api->reload_bundle = host_reload_bundle;
    api->register_host_contract = host_register_host_contract;
    api->register_loader = host_register_loader;
    api->get_last_error = host_get_last_error;
    api->get_error_len = host_get_error_len;
    api->unload_bundle = host_unload_bundle;
    api->log = host_log;
    api->create_guest_instance = host_create_guest_instance;
    api->destroy_guest_instance = host_destroy_guest_instance;
    api->revision_counter = host_revision_counter;
    api->reserved = NULL;
}

static HostApi detached_host;
static pthread_once_t detached_once = PTHREAD_ONCE_INIT;

static void detached_init(void) { ppi_fill_host_api(&detached_host, NULL); }

const HostApi *pp_detached_host(void) {
    pthread_once(&detached_once, detached_init);
    return &detached_host;
}
