/*
 * pp_fileset.c — a bundle's files held in memory.
 *
 * Signature checking reads every file of a bundle once, digests those bytes and
 * verifies them; the loader must then run exactly those bytes, not whatever the
 * directory holds a moment later.  A host puts the verified files into a fileset and
 * attaches it to the manifest document (pp_manifest_doc_set_files); the Lua loader
 * reads the entry file and every module from it and nothing from the directory.
 *
 * A fileset is filled by one thread, then sealed when it is attached; from then on it
 * is immutable and shared by reference (the document, and every VM that loaded from
 * it, hold one), so lookups need no lock.
 */
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

typedef struct fs_entry {
    char *path; /* normalised relative path, NUL-terminated */
    size_t path_len;
    uint8_t *data;
    size_t len;
} fs_entry;

struct pp_fileset {
    _Atomic long refs;
    _Atomic bool sealed;
    fs_entry *items;
    size_t len, cap;
};

pp_fileset *pp_fileset_new(void) {
    pp_fileset *fs = calloc(1, sizeof *fs);
    if (fs) atomic_init(&fs->refs, 1);
    return fs;
}

pp_fileset *pp_fileset_retain(pp_fileset *fs) {
    if (fs) atomic_fetch_add_explicit(&fs->refs, 1, memory_order_relaxed);
    return fs;
}

void pp_fileset_release(pp_fileset *fs) {
    if (!fs || atomic_fetch_sub_explicit(&fs->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < fs->len; i++) {
        free(fs->items[i].path);
        free(fs->items[i].data);
    }
    free(fs->items);
    free(fs);
}

/*
 * The normal form of a relative path, written to `out` (capacity p.len + 1): no
 * empty or "." components, ".." removes the component before it.  Returns the length,
 * or -1 for a path that is absolute or climbs out of the bundle (no file of a
 * fileset has such a name: signing refuses symlinks, so the lexical form is the
 * real one).
 */
static long normalize(StringView p, char *out) {
    if (p.len && p.ptr[0] == '/') return -1;
    size_t o = 0;
    for (size_t i = 0; i < p.len;) {
        size_t j = i;
        while (j < p.len && p.ptr[j] != '/') j++;
        size_t n = j - i;
        if (n == 2 && p.ptr[i] == '.' && p.ptr[i + 1] == '.') {
            if (!o) return -1;
            while (o && out[o - 1] != '/') o--;
            if (o) o--; /* the separator before the dropped component */
        } else if (n && !(n == 1 && p.ptr[i] == '.')) {
            if (o) out[o++] = '/';
            memcpy(out + o, p.ptr + i, n);
            o += n;
        }
        i = j + 1;
    }
    out[o] = '\0';
    return o ? (long)o : -1;
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const fs_entry *)a)->path, ((const fs_entry *)b)->path);
}

int32_t pp_fileset_add(pp_fileset *fs, StringView path, StringView data, pp_error *err) {
    if (!fs || (!path.ptr && path.len) || (!data.ptr && data.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_fileset_add: null argument");
    if (atomic_load_explicit(&fs->sealed, memory_order_acquire))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_fileset_add: the fileset is attached to a manifest and can no "
                        "longer change");
    if (memchr(path.ptr, '\0', path.len))
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_fileset_add: a path contains a NUL byte");
    char *name = malloc(path.len + 1);
    if (!name) return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    long n = normalize(path, name);
    if (n < 0) {
        free(name);
        return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                        "pp_fileset_add: `%.*s` is not a path inside the bundle",
                        (int)(path.len > 200 ? 200 : path.len), (const char *)path.ptr);
    }
    for (size_t i = 0; i < fs->len; i++)
        if (strcmp(fs->items[i].path, name) == 0) {
            free(name);
            return ppi_fail(err, PP_ERR_INVALID_ARGUMENT, NULL, NULL, NULL,
                            "pp_fileset_add: `%s` was added twice", fs->items[i].path);
        }
    uint8_t *copy = malloc(data.len ? data.len : 1);
    if (!copy || !ppi_grow((void **)&fs->items, &fs->cap, fs->len + 1, sizeof *fs->items)) {
        free(copy);
        free(name);
        return ppi_fail(err, PP_ERR_NO_MEMORY, NULL, NULL, NULL, "out of memory");
    }
    if (data.len) memcpy(copy, data.ptr, data.len);
    fs->items[fs->len++] = (fs_entry){name, (size_t)n, copy, data.len};
    return PP_OK;
}

void ppi_fileset_seal(pp_fileset *fs) {
    if (!fs || atomic_load_explicit(&fs->sealed, memory_order_acquire)) return;
    qsort(fs->items, fs->len, sizeof *fs->items, entry_cmp);
    atomic_store_explicit(&fs->sealed, true, memory_order_release);
}

size_t pp_fileset_len(const pp_fileset *fs) { return fs ? fs->len : 0; }

bool pp_fileset_get(const pp_fileset *fs, StringView path, StringView *data) {
    if (!fs || !data || (!path.ptr && path.len)) return false;
    char small[512];
    char *name = path.len < sizeof small ? small : malloc(path.len + 1);
    if (!name) return false;
    bool found = false;
    if (normalize(path, name) >= 0 && !memchr(path.ptr, '\0', path.len)) {
        if (atomic_load_explicit(&fs->sealed, memory_order_acquire)) {
            fs_entry key = {name, 0, NULL, 0};
            const fs_entry *e = bsearch(&key, fs->items, fs->len, sizeof *fs->items, entry_cmp);
            if (e) *data = (StringView){e->data, e->len}, found = true;
        } else {
            for (size_t i = 0; i < fs->len && !found; i++)
                if (strcmp(fs->items[i].path, name) == 0)
                    *data = (StringView){fs->items[i].data, fs->items[i].len}, found = true;
        }
    }
    if (name != small) free(name);
    return found;
}
