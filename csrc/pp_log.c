/*
 * pp_log.c — the logging funnel.  Records are filtered before they are formatted,
 * and delivered with no runtime lock held (callers guarantee it: ppi_logf is never
 * called while holding rt->lock or the registry lock).
 */
#include <stdio.h>

#include "pp_internal.h"

void ppi_log_emit(const ppi_log_sink *sink, uint32_t level, StringView scope,
                  StringView message) {
    if (level < LogLevel_Error || level > LogLevel_Trace) level = LogLevel_Error;
    if (sink->fn) {
        if (level <= sink->max_level) sink->fn(sink->user_data, level, scope, message);
        return;
    }
    /* No callback: Warn and above go to stderr whatever log_max_level says. */
    if (level <= LogLevel_Warn) {
        fprintf(stderr, "[polyplug] [%.*s] %.*s\n", (int)scope.len,
                scope.ptr ? (const char *)scope.ptr : "", (int)message.len,
                message.ptr ? (const char *)message.ptr : "");
    }
}

static bool wanted(const ppi_log_sink *sink, uint32_t level) {
    return sink->fn ? level <= sink->max_level : level <= LogLevel_Warn;
}

void ppi_logf(pp_runtime *rt, uint32_t level, const char *scope, const char *fmt, ...) {
    if (!rt || !wanted(&rt->log, level)) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    char clean[sizeof buf];
    ppi_strlcpy(clean, sizeof clean, buf);
    ppi_log_emit(&rt->log, level, ppi_view(scope), ppi_view(clean));
}

void pp_runtime_log(pp_runtime *rt, uint32_t level, StringView scope, StringView message) {
    if (!rt) return;
    ppi_log_emit(&rt->log, level, scope, message);
}
