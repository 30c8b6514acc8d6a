/*
 * pp_map.c — the host's hash map: a pair of 64-bit keys to a 64-bit value.
 *
 * Open addressing with linear probing, at most 3/4 full, and backward-shift deletion
 * (no tombstones, so a map that sees many inserts and removes never degrades).  Keys
 * are ids (FNV-1a hashes), pairs of ids, or pointers; they are mixed once more, so
 * ids that differ only in a few bits still spread over the table.  Every bit
 * pattern is a valid key, zero included: an entry is empty when its tag is 0.
 *
 * Not thread-safe: the structure that owns a map guards it with its own lock.
 */
#include <stdlib.h>
#include <string.h>

#include "pp_internal.h"

enum { MAP_MIN_CAP = 8 };

static uint64_t map_tag(uint64_t k1, uint64_t k2) {
    /* the murmur3 finaliser over both keys */
    uint64_t h = k1 ^ (k2 * 0x9e3779b97f4a7c15ULL);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h ? h : 1;
}

/* The entry holding (k1, k2), or the empty entry where it would go. */
static ppi_map_entry *map_probe(const ppi_map *m, uint64_t tag, uint64_t k1, uint64_t k2) {
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)tag & mask;; i = (i + 1) & mask) {
        ppi_map_entry *e = &m->items[i];
        if (e->tag == 0 || (e->tag == tag && e->k1 == k1 && e->k2 == k2)) return e;
    }
}

/* Move every entry into a table of `cap` entries (a power of two, room for all). */
static bool map_resize(ppi_map *m, size_t cap) {
    ppi_map_entry *items = calloc(cap, sizeof *items);
    if (!items) return false;
    ppi_map old = *m;
    m->items = items;
    m->cap = cap;
    size_t mask = cap - 1;
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.items[i].tag) continue;
        size_t k = (size_t)old.items[i].tag & mask;
        while (items[k].tag) k = (k + 1) & mask;
        items[k] = old.items[i];
    }
    free(old.items);
    return true;
}

uint64_t *ppi_map_get(const ppi_map *m, uint64_t k1, uint64_t k2) {
    if (m->len == 0) return NULL;
    ppi_map_entry *e = map_probe(m, map_tag(k1, k2), k1, k2);
    return e->tag ? &e->value : NULL;
}

bool ppi_map_reserve(ppi_map *m, size_t extra) {
    size_t need = m->len + extra;
    if (need * 4 <= m->cap * 3) return true;
    size_t cap = m->cap ? m->cap : MAP_MIN_CAP;
    while (need * 4 > cap * 3) {
        if (cap > SIZE_MAX / 2 / sizeof(ppi_map_entry)) return false;
        cap *= 2;
    }
    return map_resize(m, cap);
}

bool ppi_map_put(ppi_map *m, uint64_t k1, uint64_t k2, uint64_t value) {
    uint64_t *have = ppi_map_get(m, k1, k2);
    if (have) { /* overwriting needs no room */
        *have = value;
        return true;
    }
    if (!ppi_map_reserve(m, 1)) return false;
    uint64_t tag = map_tag(k1, k2);
    ppi_map_entry *e = map_probe(m, tag, k1, k2);
    e->tag = tag;
    e->k1 = k1;
    e->k2 = k2;
    e->value = value;
    m->len++;
    return true;
}

bool ppi_map_remove(ppi_map *m, uint64_t k1, uint64_t k2) {
    if (m->len == 0) return false;
    ppi_map_entry *e = map_probe(m, map_tag(k1, k2), k1, k2);
    if (!e->tag) return false;
    /* backward shift: pull every later entry of the probe run that may move into the
     * hole (its home is not in the cyclic range (hole, its position]) */
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(e - m->items);
    for (size_t j = (hole + 1) & mask; m->items[j].tag; j = (j + 1) & mask) {
        size_t home = (size_t)m->items[j].tag & mask;
        bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays) continue;
        m->items[hole] = m->items[j];
        hole = j;
    }
    memset(&m->items[hole], 0, sizeof m->items[hole]);
    m->len--;
    /* a map that emptied out gives memory back (best effort) */
    if (m->cap > MAP_MIN_CAP * 4 && m->len * 8 < m->cap) map_resize(m, m->cap / 2);
    return true;
}

ppi_map_entry *ppi_map_next(const ppi_map *m, size_t *pos) {
    for (; *pos < m->cap; (*pos)++)
        if (m->items[*pos].tag) return &m->items[(*pos)++];
    return NULL;
}

void ppi_map_free(ppi_map *m) {
    free(m->items);
    memset(m, 0, sizeof *m);
}
