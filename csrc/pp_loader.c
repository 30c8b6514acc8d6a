/* pp_loader.c — reference-counted wrapper around a loader implementation. */
#include <stdlib.h>

#include "pp_internal.h"

pp_loader *pp_loader_new(const pp_loader_vtable *vtable, void *self) {
    if (!vtable || !vtable->name || !vtable->load) return NULL;
    pp_loader *l = malloc(sizeof *l);
    if (!l) return NULL;
    l->vt = vtable;
    l->self = self;
    atomic_init(&l->refs, 1);
    return l;
}

pp_loader *pp_loader_retain(pp_loader *loader) {
    if (loader) atomic_fetch_add_explicit(&loader->refs, 1, memory_order_relaxed);
    return loader;
}

void pp_loader_release(pp_loader *loader) {
    if (!loader) return;
    if (atomic_fetch_sub_explicit(&loader->refs, 1, memory_order_acq_rel) != 1) return;
    if (loader->vt->destroy) loader->vt->destroy(loader->self);
    free(loader);
}

const char *pp_loader_name(const pp_loader *loader) { return loader ? loader->vt->name : ""; }

bool pp_loader_supports_hot_reload(const pp_loader *loader) {
    return loader && loader->vt->supports_hot_reload && loader->vt->reload;
}

int32_t pp_loader_load(pp_loader *loader, pp_runtime *rt, const pp_manifest *m,
                       const pp_source *src, pp_error *err) {
    if (!loader || !rt || !m || !src)
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_loader_load: loader, runtime, manifest and source are required");
    int32_t st = ppi_runtime_adopt(rt, loader, m->id, NULL, err);
    if (st != PP_OK) return st;
    st = loader->vt->load(loader->self, rt, m, src, err);
    if (st != PP_OK) {
        /* forget the bundle again (no Unloading phase: it never loaded); the loader
         * already unregistered what it added */
        pp_loader_release(ppi_runtime_forget(rt, m->id));
    }
    return st;
}
