/*
 * pp_native.c — the native loader: bundles whose artifact is a C shared library with
 * NativeDispatch contracts (upstream's polyplug-loaders-native 0.1.3 protocol,
 * abi-runtime.md §12.3).
 *
 * Load and reload run the same steps: the artifact `<dir>/<file>` must stay inside the
 * bundle directory and must not be a symlink; it is copied into a private directory
 * and the copy is opened with dlopen(RTLD_NOW | RTLD_LOCAL); `polyplug_abi_version()`
 * must return 1; `polyplug_init(host, ctx)` runs inside the bundle's init window and
 * registers the contracts (the runtime's load or reload window keeps them pending until
 * it commits, and drops them when init fails).
 *
 * Why a copy: dlopen of a path that is already open returns the library that is
 * already mapped, so a reload would run the old code.  A fresh file (new inode) is a
 * fresh library: a reload runs the new build, an unload followed by a load starts from
 * the file as it is now, and two runtimes that load one bundle do not share its
 * statics.  The copy keeps the artifact's file name (debuggers and profilers show it)
 * and stays on disk while the library is open, so symbolizers can read it.
 *
 * Lifetime — a library is dlclose'd only by pp_runtime_free (its graveyard), never by
 * unload or reload.  Code in it can be reached long after the registry forgot the
 * bundle: interface blocks live until pp_runtime_free and their
 * dispatch.native.functions point straight into the library, so a caller that cached
 * an interface pointer (or a function pointer from it) may call at any time; a call
 * may be running in it on another thread (unload never waits for calls); init may
 * have handed out other pointers into it (host contracts it registered, callbacks it
 * gave other bundles).  None of these can be tracked, so no earlier moment is safe.
 * pp_runtime_free runs the graveyard only after pp_runtime_close saw no thread inside
 * the runtime (checked native calls mark themselves, pp_call.c), and a runtime being
 * freed invalidates every interface pointer anyway.  The cost: a reloaded or unloaded
 * version keeps its mapping (and its copy on disk) until the runtime is freed.  A
 * library whose init never ran (ABI version missing or wrong, no polyplug_init) was
 * never reachable and is closed at once.
 *
 * A retired native interface cannot answer StaleHandle: raw callers call the library
 * directly and keep running the version they resolved.  The checked paths
 * (pp_call_handle, the Python call layer) refuse stale handles before calling.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pp_internal.h"

#define SCOPE "loader.native"

/* One opened copy of an artifact.  Owned by the runtime's graveyard once init ran. */
typedef struct native_lib {
    void *handle;
    char *copy_dir;  /* the private directory holding the copy */
    char *copy_path; /* <copy_dir>/<artifact file name> */
} native_lib;

/* A bundle this loader loaded into a runtime (for reload and unload). */
typedef struct native_bundle {
    pp_runtime *rt;
    uint64_t id;
    struct native_bundle *next;
} native_bundle;

typedef struct native_loader {
    pthread_mutex_t lock; /* leaf: guards `bundles` */
    native_bundle *bundles;
    char *copy_root; /* where per-load copy directories are made */
} native_loader;

/* What a load or reload works with: the bundle's name, and the artifact's paths. */
typedef struct artifact {
    char name[256];
    char path[4096]; /* <dir>/<file> as the manifest gives them: what messages show */
    char dir[4096];  /* the artifact's directory: BundleInitContext.bundle_path */
    const char *base; /* the artifact's file name (inside `path`) */
} artifact;

typedef uint32_t (*abi_version_fn)(void);
typedef AbiError (*init_fn)(const HostApi *host, const BundleInitContext *ctx);

/* ── copies ────────────────────────────────────────────────────────────────── */

/* Remove a copy (the file, then its private directory); the library is closed. */
static void lib_remove_copy(native_lib *lib) {
    if (lib->copy_path) unlink(lib->copy_path);
    if (lib->copy_dir) rmdir(lib->copy_dir);
    free(lib->copy_path);
    free(lib->copy_dir);
    lib->copy_path = lib->copy_dir = NULL;
}

static void lib_close(native_lib *lib) {
    if (!lib) return;
    if (lib->handle) dlclose(lib->handle);
    lib_remove_copy(lib);
    free(lib);
}

/* The graveyard's free function: runs in pp_runtime_free, nothing can call in any more. */
static void lib_bury_free(void *p) { lib_close(p); }

/* Write everything readable from `in` to `out`; false with errno on failure. */
static bool copy_fd(int in, int out) {
    char buf[65536];
    for (;;) {
        ssize_t got = read(in, buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return false;
        if (got == 0) return true;
        for (ssize_t done = 0; done < got;) {
            ssize_t put = write(out, buf + done, (size_t)(got - done));
            if (put < 0 && errno == EINTR) continue;
            if (put < 0) return false;
            done += put;
        }
    }
}

/* Write all of `data` to `out`; false with errno on failure. */
static bool write_all(int out, const uint8_t *data, size_t len) {
    for (size_t done = 0; done < len;) {
        ssize_t put = write(out, data + done, len - done);
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) return false;
        done += (size_t)put;
    }
    return true;
}

/* Copy the open artifact `fd` (or, with `data`, those bytes: a signed bundle's verified
 * copy of it) to a new private directory under `root`. */
static bool make_copy(native_lib *lib, int fd, const StringView *data, const char *root,
                      const char *base, char *why, size_t whycap) {
    size_t rl = strlen(root), bl = strlen(base);
    static const char tmpl[] = "/polyplug-native-XXXXXX";
    lib->copy_dir = malloc(rl + sizeof tmpl);
    lib->copy_path = malloc(rl + sizeof tmpl + 1 + bl + 1);
    if (!lib->copy_dir || !lib->copy_path) {
        free(lib->copy_dir);
        free(lib->copy_path);
        lib->copy_dir = lib->copy_path = NULL;
        snprintf(why, whycap, "out of memory");
        return false;
    }
    memcpy(lib->copy_dir, root, rl);
    memcpy(lib->copy_dir + rl, tmpl, sizeof tmpl);
    if (!mkdtemp(lib->copy_dir)) {
        snprintf(why, whycap, "cannot make a directory for its copy in %s: %s", root,
                 strerror(errno));
        free(lib->copy_dir);
        free(lib->copy_path);
        lib->copy_dir = lib->copy_path = NULL;
        return false;
    }
    snprintf(lib->copy_path, rl + sizeof tmpl + 1 + bl + 1, "%s/%s", lib->copy_dir, base);
    int out = open(lib->copy_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    bool ok = out >= 0 && (data ? write_all(out, data->ptr, data->len) : copy_fd(fd, out));
    int saved = errno;
    if (out >= 0 && close(out) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        snprintf(why, whycap, "copying it to %s failed: %s", lib->copy_path, strerror(saved));
        lib_remove_copy(lib);
    }
    return ok;
}

enum { MESSAGE_CAP = 2048 };

/* `msg` with every occurrence of `from` written as `to` (dlerror names the copy; the
 * user knows the artifact), into dst[MESSAGE_CAP]. */
static void replace_all(char *dst, const char *msg, const char *from, const char *to) {
    const size_t cap = MESSAGE_CAP;
    size_t used = 0, fl = strlen(from);
    dst[0] = '\0';
    while (*msg && used + 1 < cap) {
        const char *hit = fl ? strstr(msg, from) : NULL;
        size_t n = hit ? (size_t)(hit - msg) : strlen(msg);
        int w = snprintf(dst + used, cap - used, "%.*s%s", (int)n, msg, hit ? to : "");
        if (w < 0) break;
        used += (size_t)w;
        if (used >= cap) {
            used = cap - 1;
            break;
        }
        msg = hit ? hit + fl : msg + n;
    }
    char tmp[MESSAGE_CAP];
    ppi_strlcpy(tmp, sizeof tmp, dst); /* cut on a character boundary */
    ppi_strlcpy(dst, cap, tmp);
}

/* ── the protocol ──────────────────────────────────────────────────────────── */

static int32_t init_failed(pp_error *err, const artifact *a, const char *fmt, ...)
    PP_PRINTF(3, 4);
static int32_t init_failed(pp_error *err, const artifact *a, const char *fmt, ...) {
    char detail[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char clean[sizeof detail];
    ppi_strlcpy(clean, sizeof clean, detail);
    return ppi_fail(err, PP_ERR_INIT_FAILED, a->name, NULL, clean,
                    "init failed for bundle `%s`: %s", a->name, clean);
}

/* Name, artifact path and directory from the manifest; the source must be a Path. */
static int32_t describe(const pp_manifest *m, const pp_source *src, artifact *a,
                        pp_error *err) {
    ppi_view_copy(a->name, sizeof a->name, m->name);
    if (src->kind != PP_SOURCE_PATH) {
        const char *kind = src->kind == PP_SOURCE_CODE    ? "code"
                           : src->kind == PP_SOURCE_BYTES ? "bytes"
                                                          : "unknown";
        return ppi_fail(err, PP_ERR_UNSUPPORTED_SOURCE, a->name, "native", kind,
                        "loader `native` does not support bundle source kind `%s` (bundle "
                        "`%s`): a native bundle is a shared library in a bundle directory",
                        kind, a->name);
    }
    StringView dir = m->path.len ? m->path : src->data;
    if (!dir.len) dir = ppi_view(".");
    if (m->id == 0) {
        char where[1024];
        ppi_view_copy(where, sizeof where, dir);
        return ppi_fail(err, PP_ERR_MANIFEST, where, NULL,
                        "id field is required but was 0 or missing",
                        "manifest parse error for `%s`: id field is required but was 0 or "
                        "missing",
                        where);
    }
    if (m->file.len == 0)
        return ppi_fail(err, PP_ERR_MANIFEST_MISSING_FILE, a->name, NULL, NULL,
                        "bundle \"%s\" manifest.toml has an empty or missing `file` field",
                        a->name);
    size_t dl = dir.len;
    while (dl > 1 && dir.ptr[dl - 1] == '/') dl--;
    int n = snprintf(a->path, sizeof a->path, "%.*s%s%.*s", (int)dl, (const char *)dir.ptr,
                     dl && dir.ptr[dl - 1] == '/' ? "" : "/", (int)m->file.len,
                     (const char *)m->file.ptr);
    if (n < 0 || (size_t)n >= sizeof a->path || memchr(m->file.ptr, '\0', m->file.len))
        return init_failed(err, a, "artifact path is too long or contains a NUL character");
    ppi_strlcpy(a->dir, sizeof a->dir, a->path);
    char *slash = strrchr(a->dir, '/');
    *slash = '\0'; /* there is one: the separator written above */
    if (!a->dir[0]) ppi_strlcpy(a->dir, sizeof a->dir, "/");
    a->base = strrchr(a->path, '/') + 1;
    /* the manifest's rule (also checked when the manifest was validated; a loader may
     * get a hand-made one, and the files may have changed since) */
    char root[4096];
    ppi_view_copy(root, sizeof root, dir);
    return ppi_check_entry_path(root, m->file, m->name, err);
}

static int32_t escape(pp_error *err, const artifact *a, const pp_manifest *m) {
    char shown[1024];
    ppi_view_copy(shown, sizeof shown, m->file);
    return ppi_fail(err, PP_ERR_PATH_ESCAPE, a->name, NULL, shown,
                    "bundle `%s` artifact `%s` resolves outside the bundle directory (path "
                    "traversal or symlink escape)",
                    a->name, shown);
}

static native_lib *copy_and_open(native_loader *ld, const artifact *a, int fd,
                                 const StringView *data, pp_error *err);

/* Open the artifact (never through a symlink, never blocking on a FIFO) and copy it —
 * or, for a signed bundle, write the verified bytes the host read — then dlopen the
 * copy.  Returns the library, or NULL with `err` filled. */
static native_lib *open_artifact(native_loader *ld, const artifact *a, const pp_manifest *m,
                                 pp_error *err) {
    StringView verified;
    if (m->files) {
        if (!pp_fileset_get(m->files, m->file, &verified)) {
            init_failed(err, a, "failed to load plugin library at %s: %s", a->path,
                        "the file is not among the bundle's verified files");
            return NULL;
        }
        return copy_and_open(ld, a, -1, &verified, err);
    }
    struct stat st;
    if (lstat(a->path, &st) != 0) {
        int e = errno;
        init_failed(err, a, "failed to canonicalize artifact path %s: %s (os error %d)", a->path,
                    strerror(e), e);
        return NULL;
    }
    if (S_ISLNK(st.st_mode)) { /* upstream refuses every symlinked artifact */
        escape(err, a, m);
        return NULL;
    }
    int fd = open(a->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP) { /* replaced by a symlink since the lstat */
            escape(err, a, m);
            return NULL;
        }
        init_failed(err, a, "failed to load plugin library at %s: %s", a->path, strerror(e));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        init_failed(err, a, "failed to load plugin library at %s: not a regular file", a->path);
        return NULL;
    }
    native_lib *lib = copy_and_open(ld, a, fd, NULL, err);
    close(fd);
    return lib;
}

/* The copy of `fd` or `data`, dlopened; NULL with `err` filled. */
static native_lib *copy_and_open(native_loader *ld, const artifact *a, int fd,
                                 const StringView *data, pp_error *err) {
    native_lib *lib = calloc(1, sizeof *lib);
    char why[1024];
    if (!lib) {
        ppi_fail(err, PP_ERR_NO_MEMORY, a->name, NULL, NULL, "out of memory");
        return NULL;
    }
    bool copied = make_copy(lib, fd, data, ld->copy_root, a->base, why, sizeof why);
    if (!copied) {
        lib_close(lib);
        init_failed(err, a, "failed to load plugin library at %s: %s", a->path, why);
        return NULL;
    }
    dlerror();
    lib->handle = dlopen(lib->copy_path, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle) {
        const char *e = dlerror();
        char msg[MESSAGE_CAP];
        replace_all(msg, e ? e : "dlopen failed", lib->copy_path, a->path);
        size_t pl = strlen(a->path);
        if (strncmp(msg, a->path, pl) == 0 && msg[pl] == ':' && msg[pl + 1] == ' ')
            memmove(msg, msg + pl + 2, strlen(msg + pl + 2) + 1); /* it names the file first */
        bool noexec = strstr(msg, "failed to map segment") != NULL;
        char root[1200];
        snprintf(root, sizeof root, " (is %s mounted noexec? choose another copy directory)",
                 ld->copy_root);
        lib_close(lib);
        init_failed(err, a, "failed to load plugin library at %s: %s%s", a->path, msg,
                    noexec ? root : "");
        return NULL;
    }
    return lib;
}

/* A symbol of the library as a function pointer (dlsym returns an object pointer). */
static void *symbol(native_lib *lib, const char *name) {
    dlerror();
    return dlsym(lib->handle, name);
}

/*
 * Everything a load and a reload share: open, check the ABI, run init inside the
 * bundle's init window.  The caller's registry window (load or reload) keeps what init
 * registers pending; on failure it is dropped by the caller.
 */
static int32_t run_bundle(native_loader *ld, pp_runtime *rt, const pp_manifest *m,
                          const pp_source *src, pp_error *err) {
    artifact a;
    int32_t st = describe(m, src, &a, err);
    if (st != PP_OK) return st;
    native_lib *lib = open_artifact(ld, &a, m, err);
    if (!lib) return err ? err->status : PP_ERR_INIT_FAILED;
    void *sym = symbol(lib, "polyplug_abi_version");
    if (!sym) {
        lib_close(lib);
        return init_failed(err, &a, "missing symbol 'polyplug_abi_version' in bundle '%s'",
                           a.path);
    }
    abi_version_fn version;
    memcpy(&version, &sym, sizeof version);
    uint32_t found = version();
    if (found != POLYPLUG_ABI_VERSION) {
        lib_close(lib);
        return init_failed(err, &a, "ABI version mismatch in %s: expected=%d, found=%u", a.path,
                           POLYPLUG_ABI_VERSION, found);
    }
    sym = symbol(lib, "polyplug_init");
    if (!sym) {
        lib_close(lib);
        return init_failed(err, &a,
                           "init symbol missing: %s does not export `polyplug_init` (expected "
                           "`AbiError polyplug_init(const HostApi *host, const "
                           "BundleInitContext *ctx)`)",
                           a.path);
    }
    init_fn init;
    memcpy(&init, &sym, sizeof init);
    /* from here on code in the library may be reachable from outside: it stays mapped
     * until the runtime is freed, whatever init does */
    ppi_runtime_bury(rt, lib, lib_bury_free);
    st = pp_runtime_begin_init(rt, m->id, err);
    if (st != PP_OK) return st;
    BundleInitContext ctx;
    ctx.bundle_id = m->id;
    ctx.bundle_path = ppi_view(a.dir);
    AbiError res = init(pp_runtime_host(rt), &ctx);
    pp_runtime_end_init(rt);
    if (res.code == AbiErrorCode_Ok) {
        ppi_logf(rt, LogLevel_Debug, SCOPE, "bundle `%s`: loaded %s", a.name, a.path);
        return PP_OK;
    }
    /* the message is the library's: copy what is readable of it now */
    char text[1024] = "";
    size_t len = res.message.ptr ? res.message.len : 0;
    if (len > sizeof text - 1) len = sizeof text - 1;
    if (len) {
        size_t ok = ppi_utf8_check(res.message.ptr, len);
        memcpy(text, res.message.ptr, ok);
        text[ok] = '\0';
    }
    if (text[0])
        return init_failed(err, &a, "%s", text);
    return init_failed(err, &a, "init returned error code %u", res.code);
}

/* Loader lock held. */
static native_bundle **bundle_link(native_loader *ld, pp_runtime *rt, uint64_t id) {
    native_bundle **pp = &ld->bundles;
    while (*pp && !((*pp)->rt == rt && (*pp)->id == id)) pp = &(*pp)->next;
    return pp;
}

static bool bundle_known(native_loader *ld, pp_runtime *rt, uint64_t id) {
    ppi_mutex_lock(&ld->lock);
    bool known = *bundle_link(ld, rt, id) != NULL;
    ppi_mutex_unlock(&ld->lock);
    return known;
}

/* ── the pp_loader vtable ──────────────────────────────────────────────────── */

static int32_t loader_load(void *self, pp_runtime *rt, const pp_manifest *m,
                           const pp_source *src, pp_error *err) {
    native_loader *ld = self;
    native_bundle *b = calloc(1, sizeof *b);
    if (!b) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    int32_t st = run_bundle(ld, rt, m, src, err);
    if (st != PP_OK) {
        /* Inside the runtime's load window what init registered is pending and the
         * runtime drops it; a direct pp_loader_load has no window, so retire it here
         * (the bundle is new: every slot it owns came from this init). */
        ppi_registry_invalidate(&rt->reg, m->id);
        free(b);
        return st;
    }
    b->rt = rt;
    b->id = m->id;
    ppi_mutex_lock(&ld->lock);
    b->next = ld->bundles;
    ld->bundles = b;
    ppi_mutex_unlock(&ld->lock);
    return PP_OK;
}

/* The new version runs from a new copy; the runtime's reload window publishes its
 * registrations (surviving contracts keep their slots and handles) or, on failure,
 * drops them while the old version keeps serving.  The old library stays mapped:
 * interface pointers resolved before the reload still call it. */
static int32_t loader_reload(void *self, pp_runtime *rt, const pp_manifest *m, pp_error *err) {
    native_loader *ld = self;
    if (!bundle_known(ld, rt, m->id)) {
        char name[256];
        ppi_view_copy(name, sizeof name, m->name);
        return ppi_fail(err, PP_ERR_BUNDLE_NOT_FOUND, name, NULL, NULL,
                        "bundle `%s` was not loaded by this native loader (its manifest now "
                        "says loader = \"native\"? unload it and load it again)",
                        name);
    }
    pp_source src = {PP_SOURCE_PATH, m->path};
    return run_bundle(ld, rt, m, &src, err);
}

/* Forget the bundle; its libraries stay mapped until the runtime is freed. */
static void loader_unload(void *self, pp_runtime *rt, uint64_t bundle_id) {
    native_loader *ld = self;
    ppi_mutex_lock(&ld->lock);
    native_bundle **pp = bundle_link(ld, rt, bundle_id), *b = *pp;
    if (b) *pp = b->next;
    ppi_mutex_unlock(&ld->lock);
    free(b);
}

/* Native code allocates from the process heap: nothing to measure. */
static int64_t loader_memory(void *self, pp_runtime *rt, uint64_t bundle_id) {
    (void)self;
    (void)rt;
    (void)bundle_id;
    return -1;
}

static void native_loader_destroy(void *self) {
    native_loader *ld = self;
    /* records left by runtimes that were never freed; their libraries are theirs */
    for (native_bundle *b = ld->bundles, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    ppi_leaf_mutex_destroy(&ld->lock);
    free(ld->copy_root);
    free(ld);
}

static const pp_loader_vtable native_vtable = {
    "native", true, loader_load, loader_reload, loader_unload, loader_memory,
    native_loader_destroy,
};

pp_loader *pp_native_loader_new(const pp_native_config *cfg) {
    native_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return NULL;
    const char *root = cfg && cfg->copy_dir && cfg->copy_dir[0] ? cfg->copy_dir : NULL;
    if (!root) root = getenv("TMPDIR");
    if (!root || !root[0]) root = "/tmp";
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/') rl--;
    ld->copy_root = ppi_strndup_view((StringView){(const uint8_t *)root, rl});
    if (!ld->copy_root || ppi_leaf_mutex_init(&ld->lock) != 0) {
        free(ld->copy_root);
        free(ld);
        return NULL;
    }
    pp_loader *l = pp_loader_new(&native_vtable, ld);
    if (!l) native_loader_destroy(ld);
    return l;
}
