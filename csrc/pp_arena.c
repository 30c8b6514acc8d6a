/*
 * pp_arena.c — CallArena, with exactly upstream's algorithm (abi-runtime.md §2.9):
 * bump in [cur, end), then the retained overflow chain, then a new overflow block of
 * max(header + align + size, 4096) bytes from host->alloc, pushed at the chain head.
 * One addition: a caller that registered a taker for its arena (ppi_arena_taker,
 * pp_internal.h) is offered the large requests before the overflow chain.
 */
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

enum { OVERFLOW_HEADER = sizeof(ArenaOverflowBlock), OVERFLOW_MIN = 4096, OVERFLOW_ALIGN = 8 };
_Static_assert(_Alignof(ArenaOverflowBlock) <= OVERFLOW_ALIGN,
               "host->alloc's alignment must suit an overflow block header");

static bool is_pow2(size_t x) { return x && !(x & (x - 1)); }

/* Bump `size` bytes aligned to `align` out of [*cur, end); NULL if they do not fit. */
static uint8_t *bump(uintptr_t cur, uintptr_t end, size_t size, size_t align,
                     uintptr_t *new_cur) {
    uintptr_t aligned = (cur + (align - 1)) & ~(uintptr_t)(align - 1);
    if (aligned < cur || aligned > end || size > end - aligned) return NULL;
    *new_cur = aligned + size;
    return (uint8_t *)aligned;
}

void pp_arena_init(CallArena *arena, const HostApi *host, uint8_t *buf, size_t cap) {
    if (!arena) return;
    arena->base = arena->cur = buf;
    arena->end = buf ? buf + cap : NULL;
    arena->host = host;
    arena->first_overflow = NULL;
}

_Thread_local ppi_arena_taker *ppi_arena_taker_current;

void *pp_arena_alloc(CallArena *arena, size_t size, size_t align) {
    if (!arena || size == 0 || !is_pow2(align)) return NULL;
    uintptr_t next = 0;
    if (arena->cur) {
        uint8_t *p = bump((uintptr_t)arena->cur, (uintptr_t)arena->end, size, align, &next);
        if (p) {
            arena->cur = (uint8_t *)next;
            return p;
        }
    }
    ppi_arena_taker *taker = ppi_arena_taker_current;
    if (taker && taker->arena == arena && size >= taker->min_size) {
        void *p = taker->take(taker, size, align);
        if (p) return p;
    }
    const HostApi *host = arena->host;
    if (!host) return NULL;
    for (ArenaOverflowBlock *b = arena->first_overflow; b; b = b->next) {
        uintptr_t start = (uintptr_t)b;
        uint8_t *p = bump(start + b->used, start + b->capacity, size, align, &next);
        if (p) {
            b->used = next - start;
            return p;
        }
    }
    if (size > SIZE_MAX - OVERFLOW_HEADER - align) return NULL;
    size_t cap = OVERFLOW_HEADER + align + size;
    if (cap < OVERFLOW_MIN) cap = OVERFLOW_MIN;
    void *mem = host->alloc(host, cap, OVERFLOW_ALIGN);  /* aligned as asked: no cast needed */
    if (!mem) return NULL;
    ArenaOverflowBlock *b = mem;
    b->next = arena->first_overflow;
    b->capacity = cap;
    b->used = OVERFLOW_HEADER;
    arena->first_overflow = b;
    uintptr_t start = (uintptr_t)b;
    uint8_t *p = bump(start + b->used, start + cap, size, align, &next);
    b->used = next - start;
    return p;
}

void pp_arena_reset(CallArena *arena) {
    if (!arena) return;
    arena->cur = arena->base;
    for (ArenaOverflowBlock *b = arena->first_overflow; b; b = b->next) b->used = OVERFLOW_HEADER;
}

void pp_arena_release(CallArena *arena) {
    if (!arena) return;
    ArenaOverflowBlock *b = arena->first_overflow;
    while (b) {
        ArenaOverflowBlock *next = b->next;
        if (arena->host) arena->host->free(arena->host, (uint8_t *)b, b->capacity, OVERFLOW_ALIGN);
        b = next;
    }
    arena->first_overflow = NULL;
}

size_t pp_arena_used(const CallArena *arena) {
    if (!arena) return 0;
    size_t used = (size_t)(arena->cur - arena->base);
    for (const ArenaOverflowBlock *b = arena->first_overflow; b; b = b->next)
        used += b->used - OVERFLOW_HEADER;
    return used;
}

/* A heap arena: the CallArena header and its bump region in one allocation. */
CallArena *pp_arena_new(const HostApi *host, size_t cap) {
    if (cap > SIZE_MAX - sizeof(CallArena)) return NULL;
    CallArena *arena = malloc(sizeof(CallArena) + cap);
    if (!arena) return NULL;
    pp_arena_init(arena, host, cap ? (uint8_t *)(arena + 1) : NULL, cap);
    return arena;
}

void pp_arena_free(CallArena *arena) {
    if (!arena) return;
    pp_arena_release(arena);
    free(arena);
}
