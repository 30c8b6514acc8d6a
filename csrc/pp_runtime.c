/*
 * pp_runtime.c — the runtime: bundle bookkeeping, the graveyard, and the load /
 * reload / unload / close flows (abi-runtime.md §5, §8–§10).
 *
 * Locks (see the protocol in pp_internal.h): `rt->ops` is the flow lock, taken with
 * ppi_ops_lock; `rt->lock` is a leaf that guards the runtime's fields and is never
 * held while calling a loader, a guest, a callback or a hook.  No flow waits for
 * calls to finish: retiring a bundle hands its VM to whoever leaves it last.
 * Every HostApi entry tolerates NULL arguments the way upstream does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "pp_internal.h"

/* ── bundle bookkeeping ────────────────────────────────────────────────────── */

static void bundle_free_fields(ppi_bundle *b) {
    free(b->name);
    free(b->loader_name);
    free(b->file);
    free(b->path);
    free(b->version_text);
    for (size_t i = 0; i < b->provides_len; i++) free(b->provides[i]);
    free(b->provides);
    for (size_t i = 0; i < b->deps_len; i++) free(b->dep_contracts[i]);
    free(b->dep_contracts);
    free(b->deps);
    ppi_bundle *prev = b->prev, *next = b->next; /* the list links stay */
    memset(b, 0, sizeof *b);
    b->prev = prev;
    b->next = next;
}

/* Deep-copy the parts of a manifest the runtime keeps (reload cascade, listings). */
static bool bundle_copy_manifest(ppi_bundle *b, const pp_manifest *m) {
    b->has_manifest = true;
    b->name = ppi_strndup_view(m->name);
    b->loader_name = ppi_strndup_view(m->loader);
    b->file = ppi_strndup_view(m->file);
    b->path = ppi_strndup_view(m->path);
    b->version_text = ppi_strndup_view(m->version_text);
    b->version = m->version;
    b->needs_reinit_on_dep_reload = m->needs_reinit_on_dep_reload;
    if (!b->name || !b->loader_name || !b->file || !b->path || !b->version_text) return false;
    if (m->provides_len) {
        b->provides = calloc(m->provides_len, sizeof(char *));
        if (!b->provides) return false;
        for (; b->provides_len < m->provides_len; b->provides_len++) {
            b->provides[b->provides_len] = ppi_strndup_view(m->provides[b->provides_len]);
            if (!b->provides[b->provides_len]) return false;
        }
    }
    if (m->dependencies_len) {
        b->deps = calloc(m->dependencies_len, sizeof *b->deps);
        b->dep_contracts = calloc(m->dependencies_len, sizeof(char *));
        if (!b->deps || !b->dep_contracts) return false;
        for (; b->deps_len < m->dependencies_len; b->deps_len++) {
            size_t i = b->deps_len;
            b->deps[i] = m->dependencies[i];
            b->dep_contracts[i] = ppi_strndup_view(m->dependencies[i].contract);
            if (!b->dep_contracts[i]) return false;
            b->deps[i].contract = ppi_view(b->dep_contracts[i]);
        }
    }
    return true;
}

/* Rebuild a borrowed pp_manifest view of a stored bundle (for cascade reloads). */
static void bundle_as_manifest(const ppi_bundle *b, pp_manifest *m, StringView *provides) {
    memset(m, 0, sizeof *m);
    m->id = b->id;
    m->name = ppi_view(b->name);
    m->loader = ppi_view(b->loader_name);
    m->file = ppi_view(b->file);
    m->path = ppi_view(b->path);
    m->version_text = ppi_view(b->version_text);
    m->version = b->version;
    for (size_t i = 0; i < b->provides_len; i++) provides[i] = ppi_view(b->provides[i]);
    m->provides = provides;
    m->provides_len = b->provides_len;
    m->dependencies = b->deps;
    m->dependencies_len = b->deps_len;
    m->needs_reinit_on_dep_reload = b->needs_reinit_on_dep_reload;
}

/* A deep copy of a stored bundle's manifest fields (not its loader reference). */
static bool bundle_clone(ppi_bundle *dst, const ppi_bundle *src) {
    memset(dst, 0, sizeof *dst);
    StringView *prov = calloc(src->provides_len + 1, sizeof *prov);
    if (!prov) return false;
    pp_manifest view;
    bundle_as_manifest(src, &view, prov);
    bool ok = bundle_copy_manifest(dst, &view);
    dst->id = src->id;
    free(prov);
    return ok;
}

ppi_bundle *ppi_runtime_bundle_locked(pp_runtime *rt, uint64_t bundle_id) {
    return ppi_map_get_ptr(&rt->bundles, bundle_id, 0);
}

int32_t ppi_runtime_adopt(pp_runtime *rt, pp_loader *loader, uint64_t bundle_id,
                          const pp_manifest *m, pp_error *err) {
    int32_t st = PP_OK;
    ppi_mutex_lock(&rt->lock);
    ppi_bundle *have = ppi_runtime_bundle_locked(rt, bundle_id);
    if (!have && ppi_map_get(&rt->unloading, bundle_id, 0)) {
        /* its VM is closing: a finalizer (or a callback) loads it again, and the unload
         * would then drop the new registrations */
        char name[256];
        ppi_view_copy(name, sizeof name, m ? m->name : ppi_view(""));
        st = ppi_fail(err, PP_ERR_ALREADY_LOADED, name, NULL, NULL,
                      "bundle `%s` (id 0x%016llx) is being unloaded; load it again once "
                      "the unload has finished",
                      name, (unsigned long long)bundle_id);
        goto out;
    }
    if (have) {
        st = ppi_fail(err, PP_ERR_ALREADY_LOADED, have->name ? have->name : "", NULL, NULL,
                      "bundle `%s` (id 0x%016llx) is already loaded in this runtime; unload "
                      "it first, or use reload_bundle to replace it",
                      have->name ? have->name : "?", (unsigned long long)bundle_id);
        goto out;
    }
    ppi_bundle *b = calloc(1, sizeof *b);
    if (!b || (m && !bundle_copy_manifest(b, m)) ||
        !ppi_map_put_ptr(&rt->bundles, bundle_id, 0, b)) {
        if (b) bundle_free_fields(b);
        free(b);
        st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
        goto out;
    }
    b->id = bundle_id;
    b->loader = pp_loader_retain(loader);
    b->prev = rt->last;
    if (rt->last)
        rt->last->next = b;
    else
        rt->first = b;
    rt->last = b;
    if (b->has_manifest) rt->manifest_bundles++;
out:
    ppi_mutex_unlock(&rt->lock);
    return st;
}

/* Remove the bookkeeping entry; returns the loader reference it held (or NULL). */
pp_loader *ppi_runtime_forget(pp_runtime *rt, uint64_t bundle_id) {
    ppi_mutex_lock(&rt->lock);
    ppi_bundle *b = ppi_runtime_bundle_locked(rt, bundle_id);
    pp_loader *loader = b ? b->loader : NULL;
    if (b) {
        ppi_map_remove(&rt->bundles, bundle_id, 0);
        if (b->prev)
            b->prev->next = b->next;
        else
            rt->first = b->next;
        if (b->next)
            b->next->prev = b->prev;
        else
            rt->last = b->prev;
        if (b->has_manifest) rt->manifest_bundles--;
        bundle_free_fields(b);
        free(b);
    }
    ppi_mutex_unlock(&rt->lock);
    return loader;
}

static pp_loader *loader_find_locked(pp_runtime *rt, StringView name) {
    for (size_t i = 0; i < rt->loaders_len; i++) {
        const char *n = rt->loaders[i]->vt->name;
        if (name.len == strlen(n) && memcmp(name.ptr, n, name.len) == 0) return rt->loaders[i];
    }
    return NULL;
}

/* The NoLoaderForName failure: upstream's text, plus the registered loader names and,
 * when one differs from the wanted name only in case, that names are case-sensitive. */
static int32_t no_loader(pp_runtime *rt, pp_error *err, const char *bundle, StringView want,
                         bool hint) {
    char names[512] = "";
    char near[128] = "";
    size_t used = 0;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->loaders_len; i++) {
        const char *n = rt->loaders[i]->vt->name;
        int w = snprintf(names + used, sizeof names - used, "%s\"%s\"", used ? ", " : "", n);
        if (w > 0 && (size_t)w < sizeof names - used) used += (size_t)w;
        if (!near[0] && strlen(n) == want.len &&
            strncasecmp(n, (const char *)want.ptr, want.len) == 0)
            ppi_strlcpy(near, sizeof near, n);
    }
    ppi_mutex_unlock(&rt->lock);
    char lname[128];
    ppi_view_copy(lname, sizeof lname, want);
    if (near[0])
        return ppi_fail(err, PP_ERR_NO_LOADER, bundle, lname, NULL,
                        "bundle \"%s\" declares loader \"%s\" but no loader is registered for "
                        "\"%s\": loader names are case-sensitive; did you mean \"%s\"? "
                        "(registered: %s)", bundle, lname, lname, near, names);
    return ppi_fail(err, PP_ERR_NO_LOADER, bundle, lname, NULL,
                    "bundle \"%s\" declares loader \"%s\" but no loader is registered for "
                    "\"%s\" (registered: %s)%s%s%s", bundle, lname, lname, used ? names : "none",
                    hint ? ".\nRegister one first, e.g. RuntimeBuilder().loader(" : "",
                    !hint ? "" : strcmp(lname, "native") == 0 ? "NativeLoader()" : "LuaLoader()",
                    hint ? ")." : "");
}

/* ── errors and the last-error channel ─────────────────────────────────────── */

void ppi_set_last_error(pp_runtime *rt, const char *msg) {
    char *copy = ppi_strdup(msg);
    ppi_mutex_lock(&rt->lock);
    free(rt->last_error);
    rt->last_error = copy;
    rt->last_error_len = copy ? strlen(copy) : 0;
    ppi_mutex_unlock(&rt->lock);
}

/* ── the flow lock, the graveyard, open VMs ────────────────────────────────── */

int32_t ppi_closed_error(pp_error *err, const char *what) {
    return ppi_fail(err, PP_ERR_RUNTIME_CLOSED, NULL, NULL, NULL,
                    "%s: the runtime is closed", what);
}

bool ppi_ops_lock(pp_runtime *rt, const char *what, pp_error *err) {
    return ppi_ops_lock_within(rt, what, 0, err);
}

/* Take the flow lock, waiting at most `ns`. */
static bool ops_timedlock(pp_runtime *rt, uint64_t ns) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long end = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec + (long long)ns;
    ts.tv_sec = (time_t)(end / 1000000000LL);
    ts.tv_nsec = (long)(end % 1000000000LL);
    return pthread_mutex_timedlock(&rt->ops, &ts) == 0;
}

/* The flow lock in the child of a fork() with orphans: as long as it takes while a
 * thread of this process holds it, PPI_NESTED_WAIT_NS while one that was not copied
 * does (ppi_fork_orphan_owner). */
static bool ops_lock_in_fork_child(pp_runtime *rt) {
    long long give_up = ppi_now_ns() + (long long)PPI_NESTED_WAIT_NS;
    for (;;) {
        if (ops_timedlock(rt, 100000000ULL)) return true;
        long long now = ppi_now_ns();
        if (!ppi_fork_orphan_owner(atomic_load(&rt->ops_owner)))
            give_up = now + (long long)PPI_NESTED_WAIT_NS;
        else if (now >= give_up)
            return false;
    }
}

bool ppi_ops_lock_within(pp_runtime *rt, const char *what, uint64_t wait_ns, pp_error *err) {
    ppi_thread *t = ppi_self();
    PPI_ASSERT_MAY_TAKE(PPI_LEVEL_OPS, "the flow lock");
    (void)ppi_my_record(); /* a fork() child must know this thread was in polyplug */
    bool outermost = t->vm_locks == 0 && t->ops_held == 0 && wait_ns == 0;
    if (outermost && !atomic_load_explicit(&ppi_fork_orphans, memory_order_relaxed)) {
        pthread_mutex_lock(&rt->ops);
    } else if (outermost) {
        if (!ops_lock_in_fork_child(rt)) {
            ppi_fail(err, PP_ERR_RUNTIME_BUSY, NULL, NULL, NULL,
                     "%s: gave up after %.3f s waiting for another load, reload or unload of "
                     "this runtime to finish (this process is a fork() child, and the one "
                     "holding it was a thread of the parent that does not exist here)",
                     what, (double)PPI_NESTED_WAIT_NS / 1e9);
            return false;
        }
    } else {
        /* This thread holds a lock already (a guest inside a call starts a flow, or a
         * callback of one runtime's flow uses another runtime), or the caller set a
         * bound: whoever holds the flow lock may be waiting for this thread, so wait
         * at most PPI_NESTED_WAIT_NS (a recursive acquisition succeeds at once). */
        uint64_t bound = wait_ns ? wait_ns : PPI_NESTED_WAIT_NS;
        if (bound > (uint64_t)INT64_MAX / 2) bound = (uint64_t)INT64_MAX / 2;
        if (!ops_timedlock(rt, bound)) {
            ppi_fail(err, PP_ERR_RUNTIME_BUSY, NULL, NULL, NULL,
                     "%s: gave up after %.3f s waiting for another load, reload or unload of "
                     "this runtime to finish%s",
                     what, (double)bound / 1e9,
                     wait_ns ? ""
                             : " (this thread holds a lock already, so it cannot wait longer "
                               "without risking a deadlock)");
            return false;
        }
    }
    if (rt->ops_depth++ == 0) atomic_store(&rt->ops_owner, ppi_thread_tag());
    t->ops_held++;
    return true;
}

void ppi_ops_unlock(pp_runtime *rt) {
    ppi_thread *t = ppi_self();
    t->ops_held--;
    if (--rt->ops_depth == 0) atomic_store(&rt->ops_owner, 0);
    pthread_mutex_unlock(&rt->ops);
}

void ppi_runtime_bury(pp_runtime *rt, void *ptr, void (*free_fn)(void *ptr)) {
    ppi_mutex_lock(&rt->lock);
    bool ok = ppi_grow((void **)&rt->graves, &rt->graves_cap, rt->graves_len + 1,
                       sizeof rt->graves[0]);
    if (ok) {
        rt->graves[rt->graves_len].ptr = ptr;
        rt->graves[rt->graves_len].free_fn = free_fn;
        rt->graves_len++;
    }
    ppi_mutex_unlock(&rt->lock);
    /* out of memory: leak it; freeing memory a raw caller may still reach is worse */
}

void ppi_runtime_vm_opened(pp_runtime *rt) { atomic_fetch_add(&rt->open_vms, 1); }

void ppi_runtime_vm_closed(pp_runtime *rt) { atomic_fetch_sub(&rt->open_vms, 1); }

/* ── reload notifications ──────────────────────────────────────────────────── */

static void fire_phase(pp_runtime *rt, uint32_t type, uint64_t id, const char *name,
                       const char *reason) {
    if (!rt->on_reload) return;
    ReloadPhase ph;
    memset(&ph, 0, sizeof ph);
    ph.phase_type = type;
    ph.bundle_id = id;
    ph.bundle_name = ppi_view(name ? name : "");
    if (reason) ph.reason = ppi_view(reason);
    rt->on_reload(rt->on_reload_user_data, &ph);
}

void pp_runtime_notify_reload_failed(pp_runtime *rt, uint64_t bundle_id, StringView bundle_name,
                                     StringView reason) {
    if (!rt || !rt->on_reload) return;
    ReloadPhase ph;
    memset(&ph, 0, sizeof ph);
    ph.phase_type = ReloadPhaseType_Failed;
    ph.bundle_id = bundle_id;
    ph.bundle_name = bundle_name;
    ph.reason = reason;
    rt->on_reload(rt->on_reload_user_data, &ph);
}

/* ── load ──────────────────────────────────────────────────────────────────── */

static const char *const known_loader_names[] = {
    "native", "rust", "python", "lua", "javascript", "js", "dotnet", "csharp", "cpp",
};

int32_t pp_runtime_load(pp_runtime *rt, const pp_manifest *m, const pp_source *src,
                        pp_error *err) {
    if (!rt || !m || !src)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_load: runtime, manifest and source are required");
    char name[256];
    ppi_view_copy(name, sizeof name, m->name);
    int32_t st = PP_ERR_RUNTIME_BUSY;
    pp_loader *loader = NULL;
    if (!ppi_ops_lock(rt, "load_bundle", err)) goto failed;
    if (atomic_load(&rt->closed)) {
        st = ppi_closed_error(err, "load_bundle");
        goto out;
    }
    ppi_mutex_lock(&rt->lock);
    loader = pp_loader_retain(loader_find_locked(rt, m->loader));
    ppi_mutex_unlock(&rt->lock);
    if (!loader) {
        st = no_loader(rt, err, name, m->loader, true);
        goto out;
    }
    st = ppi_runtime_adopt(rt, loader, m->id, m, err);
    if (st != PP_OK) goto out;
    ppi_registry_declare_deps(&rt->reg, m->id, m);
    /* the load window: nothing is visible until everything registered */
    if (!ppi_registry_begin_window(&rt->reg, m->id))
        st = ppi_fail(err, PP_ERR_NO_MEMORY, name, NULL, NULL,
                      "loading bundle `%s`: out of memory", name);
    else
        st = loader->vt->load(loader->self, rt, m, src, err);
    if (st != PP_OK) {
        /* a failed load registers nothing and was never visible: drop it and forget it
         * (the loader retired its VM; nobody can be calling into it) */
        ppi_registry_abort_window(&rt->reg, m->id);
        ppi_registry_drop_deps(&rt->reg, m->id);
        pp_loader_release(ppi_runtime_forget(rt, m->id));
        goto out;
    }
    ppi_mutex_lock(&rt->lock);
    bool still_there = ppi_runtime_bundle_locked(rt, m->id) != NULL;
    ppi_mutex_unlock(&rt->lock);
    if (!still_there) {
        /* unloaded while it was loading (its own init, or a callback, unloaded it):
         * what the loader made goes too, and nothing is published */
        if (loader->vt->unload) loader->vt->unload(loader->self, rt, m->id);
        ppi_registry_abort_window(&rt->reg, m->id);
        ppi_registry_drop_deps(&rt->reg, m->id);
        st = ppi_fail(err, PP_ERR_INIT_FAILED, name, NULL, NULL,
                      "init failed for bundle `%s`: it was unloaded while it was loading "
                      "(by its own init, or a callback)",
                      name);
        goto out;
    }
    ppi_registry_commit_window(&rt->reg, m->id);
    bool known = false;
    for (size_t i = 0; i < PP_COUNTOF(known_loader_names); i++)
        known = known || ppi_view_eq(m->loader, known_loader_names[i]);
    if (!known)
        ppi_logf(rt, LogLevel_Warn, "runtime",
                 "bundle `%s`: unknown loader `%.*s`; defaulting SupportedLanguage to Rust", name,
                 (int)m->loader.len, (const char *)m->loader.ptr);
out:
    pp_loader_release(loader);
    ppi_ops_unlock(rt);
    if (st == PP_OK) return PP_OK;
failed:
    if (err) ppi_set_last_error(rt, err->message);
    return st;
}

/* ── reload ────────────────────────────────────────────────────────────────── */

static int32_t reload_one(pp_runtime *rt, const pp_manifest *m, ppi_map *visited,
                          pp_error *err);

/* The ids of the bundles that declared a dependency on a contract `provider`
 * publishes, each once, in `*ids` (malloc'd); returns how many, 0 when out of memory
 * too.  No leaf lock may be held. */
static size_t registry_dependents(pp_runtime *rt, uint64_t provider, uint64_t **ids) {
    *ids = NULL;
    size_t n = ppi_registry_dependents(&rt->reg, provider, NULL, 0);
    for (;;) {
        if (n == 0) return 0;
        free(*ids);
        *ids = malloc(n * sizeof **ids);
        if (!*ids) return 0;
        size_t got = ppi_registry_dependents(&rt->reg, provider, *ids, n);
        if (got <= n) {
            n = got;
            break;
        }
        n = got; /* grew meanwhile: ask again */
    }
    /* an id repeats once per contract it declared: keep the first of each */
    ppi_map seen = {NULL, 0, 0};
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (ppi_map_get(&seen, (*ids)[i], 0)) continue;
        if (!ppi_map_put(&seen, (*ids)[i], 0, 1)) {
            len = 0;
            break;
        }
        (*ids)[len++] = (*ids)[i];
    }
    ppi_map_free(&seen);
    return len;
}

/*
 * Reload a dependent for a cascade.  Under a signature policy its files must be
 * verified again, which only the host's driver can do: the reload goes through the
 * driver's reload hook (the Python runtime's reload_bundle), never straight from the
 * directory.  A runtime without a hook (a C host) has no verifier: Required refuses
 * the cascade reload, WarnOnly warns and reloads.  A nested reload on this thread
 * shares the cascade's visited set (ppi_thread.reload_visited), so cycles end.
 */
static int32_t cascade_reload(pp_runtime *rt, const pp_manifest *m, ppi_map *visited,
                              pp_error *err) {
    if (rt->signature_policy == SignaturePolicy_Off) return reload_one(rt, m, visited, err);
    ppi_mutex_lock(&rt->lock);
    pp_path_hook hook = rt->reload_hook;
    void *ud = rt->hook_user_data;
    ppi_mutex_unlock(&rt->lock);
    if (hook) {
        int32_t st = hook(ud, rt, m->path, err);
        if (st != PP_OK && err && err->status == PP_OK)
            ppi_fail(err, PP_ERR_HOST_EXCEPTION, NULL, NULL, NULL, "the reload hook failed");
        return st;
    }
    char name[256];
    ppi_view_copy(name, sizeof name, m->name);
    if (rt->signature_policy == SignaturePolicy_Required)
        return ppi_fail(err, PP_ERR_SIGNATURE_UNVERIFIED, name, NULL, NULL,
                        "bundle `%s` was not reloaded: signature_policy is Required and this "
                        "runtime has no verifier (its files would be loaded unverified)",
                        name);
    ppi_logf(rt, LogLevel_Warn, "runtime",
             "bundle `%s`: signature not checked (WarnOnly — continuing): this runtime has "
             "no verifier",
             name);
    return reload_one(rt, m, visited, err);
}

/* Reload every stored bundle that opted in and depends on `provider`, by name. */
static void reload_dependents(pp_runtime *rt, uint64_t provider, const char *provider_name,
                              ppi_map *visited) {
    for (;;) {
        /* pick the next not-yet-visited opted-in dependent with the smallest name
         * (asked afresh each time: a reload may load or unload bundles) */
        uint64_t *ids;
        size_t n = registry_dependents(rt, provider, &ids);
        ppi_bundle copy;
        memset(&copy, 0, sizeof copy);
        bool found = false;
        ppi_mutex_lock(&rt->lock);
        const ppi_bundle *best = NULL;
        for (size_t i = 0; i < n; i++) {
            const ppi_bundle *b = ppi_runtime_bundle_locked(rt, ids[i]);
            if (!b || b->id == provider || !b->has_manifest || !b->needs_reinit_on_dep_reload ||
                ppi_map_get(visited, b->id, 0))
                continue;
            if (!best || strcmp(b->name, best->name) < 0) best = b;
        }
        if (best) found = bundle_clone(&copy, best);
        ppi_mutex_unlock(&rt->lock);
        free(ids);
        if (!best) return;
        if (!found || !ppi_map_put(visited, copy.id, 0, 1)) {
            bundle_free_fields(&copy);
            return;
        }
        pp_manifest dm;
        StringView *prov = calloc(copy.provides_len + 1, sizeof *prov);
        if (prov) {
            bundle_as_manifest(&copy, &dm, prov);
            pp_error e;
            pp_error_clear(&e);
            if (cascade_reload(rt, &dm, visited, &e) != PP_OK)
                ppi_logf(rt, LogLevel_Warn, "reload",
                         "cascade reload of dependent bundle '%s' failed after '%s' "
                         "reloaded: %s",
                         copy.name, provider_name, e.message);
            free(prov);
        }
        bundle_free_fields(&copy);
    }
}

static int32_t reload_one(pp_runtime *rt, const pp_manifest *m, ppi_map *visited,
                          pp_error *err) {
    char name[256];
    ppi_view_copy(name, sizeof name, m->name);
    ppi_mutex_lock(&rt->lock);
    ppi_bundle *b = ppi_runtime_bundle_locked(rt, m->id);
    bool loaded = b != NULL;
    pp_loader *loader = pp_loader_retain(loader_find_locked(rt, m->loader));
    ppi_mutex_unlock(&rt->lock);
    int32_t st = PP_OK;
    if (!loaded) {
        st = ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, name, NULL, NULL,
                      "bundle `%s` is not loaded, so it cannot be reloaded; load it first",
                      name);
        goto out;
    }
    if (!loader) {
        st = no_loader(rt, err, name, m->loader, false);
        goto out;
    }
    if (!pp_loader_supports_hot_reload(loader)) {
        st = ppi_fail(err, PP_ERR_HOT_RELOAD_UNSUPPORTED, name, loader->vt->name, NULL,
                      "loader `%s` does not support hot-reload", loader->vt->name);
        goto out;
    }
    fire_phase(rt, ReloadPhaseType_Preparing, m->id, name, NULL);
    if (atomic_load(&rt->closed)) { /* the Preparing callback closed the runtime */
        st = ppi_closed_error(err, "reload_bundle");
        goto out;
    }
    int64_t live = ppi_registry_live_instances(&rt->reg, m->id);
    if (live > 0)
        ppi_logf(rt, LogLevel_Warn, "reload",
                 "reload: bundle '%s' still has %lld live guest instance(s) across its "
                 "contracts after the Preparing callback; their state does not survive the "
                 "reload (Lua: calls on them return FunctionNotAvailable; native: the new "
                 "build's functions receive the old build's instance data). Proceeding "
                 "anyway.",
                 name, (long long)live);
    if (!ppi_registry_begin_window(&rt->reg, m->id))
        st = ppi_fail(err, PP_ERR_NO_MEMORY, name, NULL, NULL,
                      "reloading bundle `%s`: out of memory", name);
    else
        st = loader->vt->reload(loader->self, rt, m, err);
    if (st != PP_OK) {
        ppi_registry_abort_window(&rt->reg, m->id);
        fire_phase(rt, ReloadPhaseType_Failed, m->id, name, err ? err->message : "reload failed");
        goto out;
    }
    ppi_registry_commit_window(&rt->reg, m->id);
    ppi_registry_reset_counts(&rt->reg, m->id);
    /* keep the stored manifest current (upstream leaves the old one) */
    ppi_mutex_lock(&rt->lock);
    b = ppi_runtime_bundle_locked(rt, m->id);
    if (b) {
        ppi_bundle fresh;
        memset(&fresh, 0, sizeof fresh);
        if (bundle_copy_manifest(&fresh, m)) {
            fresh.id = b->id;
            fresh.loader = b->loader;
            fresh.prev = b->prev;
            fresh.next = b->next;
            b->loader = NULL;
            bundle_free_fields(b);
            *b = fresh;
        } else {
            bundle_free_fields(&fresh);
        }
    }
    ppi_mutex_unlock(&rt->lock);
    ppi_map_put(visited, m->id, 0, 1);
    reload_dependents(rt, m->id, name, visited);
    fire_phase(rt, ReloadPhaseType_Reloaded, m->id, name, NULL);
out:
    pp_loader_release(loader);
    return st;
}

int32_t pp_runtime_reload(pp_runtime *rt, const pp_manifest *m, pp_error *err) {
    if (!rt || !m)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_runtime_reload: runtime and manifest are required");
    if (!rt->hot_reload_enabled)
        return ppi_fail(err, PP_ERR_HOT_RELOAD_DISABLED, NULL, NULL, NULL,
                        "hot-reload is disabled in runtime config");
    int32_t st;
    if (!ppi_ops_lock(rt, "reload_bundle", err)) {
        st = err ? err->status : PP_ERR_RUNTIME_BUSY;
    } else {
        if (atomic_load(&rt->closed)) {
            st = ppi_closed_error(err, "reload_bundle");
        } else {
            /* a reload nested in a cascade (through the driver's hook) joins its
             * visited set */
            ppi_thread *t = ppi_self();
            ppi_map visited = {NULL, 0, 0};
            ppi_map *outer = t->reload_visited;
            if (!outer) t->reload_visited = &visited;
            st = reload_one(rt, m, t->reload_visited, err);
            if (!outer) {
                t->reload_visited = NULL;
                ppi_map_free(&visited);
            }
        }
        ppi_ops_unlock(rt);
    }
    if (st != PP_OK && err) ppi_set_last_error(rt, err->message);
    return st;
}

/* ── unload ────────────────────────────────────────────────────────────────── */

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of the other loaded bundles that declared a dependency on `bundle_id`,
 * sorted, as `"a", "b"` into `out`; returns how many.  Runs under the flow lock, so
 * the bundle list cannot change; the registry is asked before rt->lock is taken
 * (leaf locks never nest). */
static size_t dependents_of(pp_runtime *rt, uint64_t bundle_id, char *out, size_t cap) {
    uint64_t *ids;
    size_t n = registry_dependents(rt, bundle_id, &ids);
    char **names = calloc(n + 1, sizeof *names);
    size_t ndep = 0;
    ppi_mutex_lock(&rt->lock);
    for (size_t i = 0; names && i < n; i++) {
        const ppi_bundle *o = ppi_runtime_bundle_locked(rt, ids[i]);
        if (!o || o->id == bundle_id || !o->has_manifest) continue;
        names[ndep] = ppi_strdup(o->name ? o->name : "");
        if (names[ndep]) ndep++;
    }
    ppi_mutex_unlock(&rt->lock);
    if (ndep > 1) qsort(names, ndep, sizeof *names, compare_names);
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ndep; i++) {
        if (off < cap)
            off += (size_t)snprintf(out + off, cap - off, "%s\"%s\"", i ? ", " : "", names[i]);
        free(names[i]);
    }
    free(ids);
    free(names);
    return ndep;
}

/* Retire a bundle: Unloading phase, registry, bookkeeping, then the loader (which
 * retires the VM without waiting for calls in it).  Flow lock held. */
static void unload_locked(pp_runtime *rt, uint64_t bundle_id, const char *name, bool phase) {
    if (phase) fire_phase(rt, ReloadPhaseType_Unloading, bundle_id, name, NULL);
    int64_t live = ppi_registry_live_instances(&rt->reg, bundle_id);
    if (live > 0 && phase)
        ppi_logf(rt, LogLevel_Warn, "runtime",
                 "unload: bundle '%s' still has %lld live guest instance(s) across its "
                 "contracts; they die with its VM (calls on them answer StaleHandle). "
                 "Proceeding anyway.",
                 name, (long long)live);
    /* the loader retires the VM first (calls answer StaleHandle, a factory finishing
     * now counts no instance), then the counts go, then the registry entries */
    /* closing the VM runs the guest's finalizers, which may try to load the bundle
     * again: refused while the id is marked (out of memory: not marked, not refused) */
    ppi_mutex_lock(&rt->lock);
    bool marked = ppi_map_put(&rt->unloading, bundle_id, 0, 1);
    ppi_mutex_unlock(&rt->lock);
    pp_loader *loader = ppi_runtime_forget(rt, bundle_id);
    if (loader && loader->vt->unload) loader->vt->unload(loader->self, rt, bundle_id);
    pp_loader_release(loader);
    ppi_registry_reset_counts(&rt->reg, bundle_id);
    ppi_registry_invalidate(&rt->reg, bundle_id);
    ppi_registry_drop_deps(&rt->reg, bundle_id);
    atomic_fetch_add_explicit(&rt->reg.revision, 1, memory_order_release);
    if (marked) {
        ppi_mutex_lock(&rt->lock);
        ppi_map_remove(&rt->unloading, bundle_id, 0);
        ppi_mutex_unlock(&rt->lock);
    }
}

int32_t pp_runtime_unload(pp_runtime *rt, uint64_t bundle_id, pp_error *err) {
    if (!rt) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null runtime");
    int32_t st = PP_ERR_RUNTIME_BUSY;
    if (!ppi_ops_lock(rt, "unload_bundle", err)) goto failed;
    st = PP_OK;
    char name[256] = "";
    char dependents[1024];
    if (atomic_load(&rt->closed)) {
        st = ppi_closed_error(err, "unload_bundle");
        goto out;
    }
    ppi_mutex_lock(&rt->lock);
    ppi_bundle *b = ppi_runtime_bundle_locked(rt, bundle_id);
    if (b && b->name) ppi_strlcpy(name, sizeof name, b->name);
    bool found = b != NULL;
    ppi_mutex_unlock(&rt->lock);
    if (!found && bundle_id != 0) {
        char idtxt[32];
        snprintf(idtxt, sizeof idtxt, "0x%016llx", (unsigned long long)bundle_id);
        st = ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, idtxt, NULL, NULL,
                      "bundle not found: no loaded bundle has id %s", idtxt);
        goto out;
    }
    if (found && dependents_of(rt, bundle_id, dependents, sizeof dependents)) {
        st = ppi_fail(err, PP_ERR_DEPENDENCY_IN_USE, name, NULL, dependents,
                      "cannot unload bundle `%s`: still-loaded bundles declared a dependency "
                      "on it: [%s]",
                      name, dependents);
        goto out;
    }
    unload_locked(rt, bundle_id, name, true);
out:
    ppi_ops_unlock(rt);
    if (st == PP_OK) return PP_OK;
failed:
    if (err) ppi_set_last_error(rt, err->message);
    return st;
}

/* ── misc public API ───────────────────────────────────────────────────────── */

int32_t pp_runtime_add_loader(pp_runtime *rt, pp_loader *loader, pp_error *err) {
    if (!rt || !loader)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "null pointer in register_loader");
    int32_t st = PP_OK;
    ppi_mutex_lock(&rt->lock);
    if (loader_find_locked(rt, ppi_view(loader->vt->name))) {
        st = ppi_fail(err, PP_ERR_DUPLICATE_LOADER, NULL, loader->vt->name, NULL,
                      "duplicate loader \"%s\": a loader with this name is already registered",
                      loader->vt->name);
    } else if (!ppi_grow((void **)&rt->loaders, &rt->loaders_cap, rt->loaders_len + 1,
                         sizeof rt->loaders[0])) {
        st = ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    } else {
        rt->loaders[rt->loaders_len++] = pp_loader_retain(loader);
    }
    ppi_mutex_unlock(&rt->lock);
    return st;
}

void pp_runtime_set_path_hooks(pp_runtime *rt, pp_path_hook load, pp_path_hook reload,
                               void *user_data) {
    if (!rt) return;
    ppi_mutex_lock(&rt->lock);
    rt->load_hook = load;
    rt->reload_hook = reload;
    rt->hook_user_data = user_data;
    ppi_mutex_unlock(&rt->lock);
}

int64_t pp_runtime_bundle_memory(pp_runtime *rt, uint64_t bundle_id) {
    if (!rt) return -1;
    ppi_mutex_lock(&rt->lock);
    ppi_bundle *b = ppi_runtime_bundle_locked(rt, bundle_id);
    pp_loader *loader = b ? pp_loader_retain(b->loader) : NULL;
    ppi_mutex_unlock(&rt->lock);
    int64_t n = -1;
    if (loader && loader->vt->memory) n = loader->vt->memory(loader->self, rt, bundle_id);
    pp_loader_release(loader);
    return n;
}

size_t pp_runtime_bundle_ids(pp_runtime *rt, uint64_t *out, size_t cap) {
    if (!rt) return 0;
    size_t n = 0;
    ppi_mutex_lock(&rt->lock);
    for (const ppi_bundle *b = out ? rt->first : NULL; b && n < cap; b = b->next)
        if (b->has_manifest) out[n++] = b->id;
    n = rt->manifest_bundles;
    ppi_mutex_unlock(&rt->lock);
    return n;
}

bool pp_runtime_has_bundle(pp_runtime *rt, uint64_t bundle_id) {
    if (!rt) return false;
    ppi_mutex_lock(&rt->lock);
    const ppi_bundle *b = ppi_runtime_bundle_locked(rt, bundle_id);
    bool has = b && b->has_manifest;
    ppi_mutex_unlock(&rt->lock);
    return has;
}

const HostApi *pp_runtime_host(pp_runtime *rt) { return rt ? &rt->api : NULL; }

pp_runtime *pp_runtime_from_host(const HostApi *host) {
    return host ? (pp_runtime *)host->runtime : NULL;
}

bool pp_runtime_hot_reload_enabled(const pp_runtime *rt) { return rt && rt->hot_reload_enabled; }

uint32_t pp_runtime_compatibility(const pp_runtime *rt) { return rt ? rt->compatibility : 0; }

/* ── registry front ────────────────────────────────────────────────────────── */

static int32_t not_found(pp_error *err, uint64_t cid, uint32_t min_major) {
    char idtxt[32];
    snprintf(idtxt, sizeof idtxt, "0x%016llX", (unsigned long long)cid);
    int32_t st = ppi_fail(err, PP_ERR_PLUGIN_NOT_FOUND, NULL, NULL, idtxt,
                          "no plugin found for contract_id=%s with min_version=%u", idtxt,
                          min_major);
    if (err) err->abi_code = AbiErrorCode_NotFound;
    return st;
}

int32_t pp_registry_find(pp_runtime *rt, uint64_t contract_id, uint32_t min_major,
                         GuestContractHandle *out, pp_error *err) {
    if (!rt || !out) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null");
    *out = ppi_registry_find(&rt->reg, contract_id, min_major, false, 0);
    return out->index == UINT32_MAX ? not_found(err, contract_id, min_major) : PP_OK;
}

int32_t pp_registry_find_by_bundle(pp_runtime *rt, uint64_t bundle_id, uint64_t contract_id,
                                   uint32_t min_major, GuestContractHandle *out,
                                   pp_error *err) {
    if (!rt || !out) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null");
    *out = ppi_registry_find(&rt->reg, contract_id, min_major, true, bundle_id);
    return out->index == UINT32_MAX ? not_found(err, contract_id, min_major) : PP_OK;
}

int32_t pp_registry_resolve(pp_runtime *rt, GuestContractHandle handle,
                            const GuestContractInterface **out, pp_error *err) {
    if (!rt || !out) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null");
    return ppi_registry_resolve(&rt->reg, handle, out, err);
}

int32_t pp_registry_invalidate_bundle(pp_runtime *rt, uint64_t bundle_id, size_t *retired,
                                      pp_error *err) {
    if (!rt) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null runtime");
    size_t n = ppi_registry_invalidate(&rt->reg, bundle_id);
    if (retired) *retired = n;
    return PP_OK;
}

int32_t pp_registry_handle_info(pp_runtime *rt, GuestContractHandle handle, pp_slot_info *out,
                                pp_error *err) {
    if (!rt || !out) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null");
    return ppi_registry_handle_info(&rt->reg, handle, out, err);
}

size_t pp_registry_bundle_slots(pp_runtime *rt, uint64_t bundle_id, pp_slot_info *out,
                                size_t cap) {
    return rt ? ppi_registry_bundle_slots(&rt->reg, bundle_id, out, cap) : 0;
}

/* ── create / destroy ──────────────────────────────────────────────────────── */

pp_runtime *pp_runtime_new(const RuntimeConfig *config, pp_error *err) {
    pp_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory creating a runtime");
        return NULL;
    }
    rt->log.max_level = LogLevel_Warn;
    if (config) {
        if (config->compatibility > Compatibility_Yolo ||
            config->signature_policy > SignaturePolicy_Required) {
            ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                     "RuntimeConfig: compatibility must be 0..2 and signature_policy 0..2 "
                     "(got %u and %u)",
                     config->compatibility, config->signature_policy);
            free(rt);
            return NULL;
        }
        rt->compatibility = config->compatibility;
        rt->hot_reload_enabled = config->hot_reload_enabled;
        rt->on_reload = config->on_reload;
        rt->on_reload_user_data = config->on_reload_user_data;
        rt->log.fn = config->log;
        rt->log.user_data = config->log_user_data;
        rt->log.max_level = config->log_max_level;
        rt->signature_policy = config->signature_policy;
        if (config->trusted_keys.len) {
            if (!config->trusted_keys.items) {
                ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                         "RuntimeConfig.trusted_keys has len %zu but a null items pointer",
                         config->trusted_keys.len);
                free(rt);
                return NULL;
            }
            rt->trusted_keys = malloc(config->trusted_keys.len * sizeof(Ed25519PublicKey));
            if (!rt->trusted_keys) {
                ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
                free(rt);
                return NULL;
            }
            memcpy(rt->trusted_keys, config->trusted_keys.items,
                   config->trusted_keys.len * sizeof(Ed25519PublicKey));
            rt->trusted_keys_len = config->trusted_keys.len;
        }
    }
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    bool ok = pthread_mutex_init(&rt->ops, &attr) == 0;
    pthread_mutexattr_destroy(&attr);
    ok = ok && ppi_leaf_mutex_init(&rt->lock) == 0;
    ok = ok && ppi_registry_init(&rt->reg) == 0;
    if (!ok) {
        ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "could not initialise runtime locks");
        free(rt->trusted_keys);
        free(rt);
        return NULL;
    }
    atomic_init(&rt->closed, false);
    atomic_init(&rt->open_vms, 0);
    ppi_fill_host_api(&rt->api, rt);
    return rt;
}

/* Is this thread running a call in one of `rt`'s VMs? */
static bool inside_call_of(pp_runtime *rt) {
    for (const ppi_call *c = ppi_self()->call; c; c = c->outer)
        if (c->rt == rt) return true;
    return false;
}

/* Is some other thread still running code of `rt` (ppi_enter_rt)? */
static bool another_thread_inside(pp_runtime *rt) {
    ppi_record *mine = ppi_self()->record;
    for (ppi_record *r = ppi_records(); r; r = r->next)
        if (r != mine && atomic_load_explicit(&r->inside, memory_order_acquire) == rt)
            return true;
    return false;
}

int32_t pp_runtime_close(pp_runtime *rt, uint64_t wait_ns, pp_error *err) {
    if (!rt) return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL, "null runtime");
    long long deadline = ppi_now_ns() + (long long)(wait_ns > INT64_MAX / 2 ? INT64_MAX / 2
                                                                               : wait_ns);
    /* closed first: flows that start from now on fail, the one in progress finishes */
    atomic_store(&rt->closed, true);
    if (!ppi_ops_lock_within(rt, "close", wait_ns ? wait_ns : 1, err)) {
        if (err) ppi_set_last_error(rt, err->message);
        return PP_ERR_RUNTIME_BUSY;
    }
    /* newest first, so dependents go before their providers */
    for (;;) {
        char name[256] = "";
        ppi_mutex_lock(&rt->lock);
        bool any = rt->last != NULL;
        uint64_t id = any ? rt->last->id : 0;
        if (any && rt->last->name) ppi_strlcpy(name, sizeof name, rt->last->name);
        ppi_mutex_unlock(&rt->lock);
        if (!any) break;
        unload_locked(rt, id, name, false);
    }
    ppi_ops_unlock(rt);
    /* then the host contracts provided from callbacks: released once no call is in them */
    ppi_hostfn_withdraw_all(rt);
    /* VMs with calls still inside close when those calls return; and a thread on its
     * way out of a call may still touch the runtime: wait for both */
    bool self = inside_call_of(rt);
    struct timespec nap = {0, 20000};
    while (!self && (atomic_load(&rt->open_vms) > 0 || another_thread_inside(rt)) &&
           ppi_now_ns() < deadline) {
        nanosleep(&nap, NULL);
        if (nap.tv_nsec < 5000000) nap.tv_nsec *= 2; /* up to 5 ms */
    }
    long left = atomic_load(&rt->open_vms);
    bool busy = left > 0 || another_thread_inside(rt);
    if (!busy) return PP_OK;
    int32_t st = ppi_fail(err, PP_ERR_RUNTIME_BUSY, NULL, NULL, NULL,
                          "close: %ld bundle VM(s) still have calls running%s; the runtime is "
                          "closed to new work and those VMs are freed when their calls return",
                          left ? left : 1,
                          self ? " (close was called from inside one of them)" : "");
    if (err) ppi_set_last_error(rt, err->message);
    return st;
}

static void free_graves(pp_runtime *rt) {
    /* newest first: a bundle buried after its records were buried goes first */
    for (size_t i = rt->graves_len; i-- > 0;) rt->graves[i].free_fn(rt->graves[i].ptr);
    free(rt->graves);
}

void pp_runtime_free(pp_runtime *rt) {
    if (!rt) return;
    if (pp_runtime_close(rt, PPI_CLOSE_WAIT_NS, NULL) != PP_OK) {
        /* Guest code is still running in this runtime's VMs and may use the runtime
         * (HostApi) any moment: freeing it now would be a use-after-free.  Keep it. */
        fprintf(stderr,
                "[polyplug] pp_runtime_free: calls were still running in %ld VM(s) after "
                "%.0f s; the runtime's memory is left allocated\n",
                atomic_load(&rt->open_vms), (double)PPI_CLOSE_WAIT_NS / 1e9);
        return;
    }
    free_graves(rt);
    /* Like upstream, cached host-contract singletons are not destroyed here: the
     * registrant owns them. */
    for (size_t i = 0; i < rt->loaders_len; i++) pp_loader_release(rt->loaders[i]);
    free(rt->loaders);
    ppi_map_free(&rt->bundles); /* empty: closing unloaded every bundle */
    ppi_map_free(&rt->unloading);
    free(rt->host_contracts);
    free(rt->last_error);
    free(rt->trusted_keys);
    ppi_registry_destroy(&rt->reg);
    ppi_leaf_mutex_destroy(&rt->lock);
    pthread_mutex_destroy(&rt->ops);
    free(rt);
}

const HostApi *polyplug_runtime_create(const RuntimeConfig *config) {
    pp_runtime *rt = pp_runtime_new(config, NULL);
    return rt ? &rt->api : NULL;
}

void polyplug_runtime_destroy(const HostApi *host) { pp_runtime_free(pp_runtime_from_host(host)); }
