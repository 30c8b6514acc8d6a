/*
 * alloc_count.c — an LD_PRELOAD malloc interposer that counts heap allocations.
 *
 * Built as a shared object and preloaded into the allocation-counting runs (ours and
 * upstream's alike), so it sees every malloc in the process, including those made
 * inside libc (strdup, ...) and inside upstream's Rust .so.  The loops read the
 * count through dlsym("pp_bench_alloc_count") (bench_loops.c).  LuaJIT's own
 * allocator (mmap-backed on x86-64) is not malloc and is not counted; the Lua heap
 * is measured separately with collectgarbage("count").
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

#define EXPORT __attribute__((visibility("default")))

static _Atomic uint64_t count;

static inline void bump(void) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); }

EXPORT uint64_t pp_bench_alloc_count(void) {
    return atomic_load_explicit(&count, memory_order_relaxed);
}

EXPORT void *malloc(size_t size) {
    bump();
    return __libc_malloc(size);
}

EXPORT void *calloc(size_t n, size_t size) {
    bump();
    return __libc_calloc(n, size);
}

EXPORT void *realloc(void *p, size_t size) {
    bump();
    return __libc_realloc(p, size);
}

EXPORT void free(void *p) { __libc_free(p); }

EXPORT void *memalign(size_t align, size_t size) {
    bump();
    return __libc_memalign(align, size);
}

EXPORT void *aligned_alloc(size_t align, size_t size) {
    bump();
    return __libc_memalign(align, size);
}

EXPORT int posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
    bump();
    void *p = __libc_memalign(align, size);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
