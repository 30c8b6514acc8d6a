/*
 * driver_util.h — the small helpers the C test drivers share (header-only: each driver
 * is a single translation unit, built by tests/cbuild.py, which rebuilds a driver when
 * a header beside it changes).
 */
#ifndef PP_TEST_DRIVER_UTIL_H
#define PP_TEST_DRIVER_UTIL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "polyplug.h"

/* FNV-1a 64, independent of the library's (the ids are checked against it). */
static inline uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* A view of a NUL-terminated string; NULL gives the empty view. */
static inline StringView view(const char *s) {
    StringView v = {(const uint8_t *)s, s ? strlen(s) : 0};
    return v;
}

static inline void sleep_us(unsigned us) {
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A log callback that drops every record: the drivers keep stderr for the sanitizers. */
static inline void quiet_log(void *user_data, uint32_t level, StringView scope,
                             StringView message) {
    (void)user_data, (void)level, (void)scope, (void)message;
}

/* Problems a driver finds: all counted (its exit status and summary line read
 * g_problems), the first 20 printed to stdout as "problem: ..." lines. */
static _Atomic unsigned g_problems __attribute__((unused));

static inline void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void problem(const char *fmt, ...) {
    if (atomic_fetch_add(&g_problems, 1) >= 20) return;
    va_list ap;
    va_start(ap, fmt);
    flockfile(stdout);
    fputs("problem: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    funlockfile(stdout);
    va_end(ap);
}

#endif
