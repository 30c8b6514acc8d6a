/*
 * foreign_threads.c — threads Python did not start, for tests/test_host_contracts.py.
 *
 * Built as a shared object and loaded with cffi's ABI mode: pp_test_run_threads starts
 * `n` pthreads, each calling `invoke(frames[i])` (pp_call_frame_invoke of the host
 * library) `calls` times, joins them and returns how many calls answered non-zero.
 * A guest called this way that calls a Python host function makes cffi take the GIL
 * on a thread Python has never seen.
 */
#include <pthread.h>
#include <stdint.h>

typedef uint32_t (*invoke_fn)(void *frame);

typedef struct job {
    invoke_fn invoke;
    void *frame;
    int calls;
    uint32_t failures;
    pthread_barrier_t *alive; /* all threads run at once, so none reuses another's id */
} job;

static void *run(void *p) {
    job *j = p;
    pthread_barrier_wait(j->alive);
    for (int i = 0; i < j->calls; i++)
        if (j->invoke(j->frame) != 0) j->failures++;
    pthread_barrier_wait(j->alive);
    return NULL;
}

int pp_test_run_threads(uintptr_t invoke, const uintptr_t *frames, int n, int calls);

int pp_test_run_threads(uintptr_t invoke, const uintptr_t *frames, int n, int calls) {
    enum { MAX = 32 };
    pthread_t threads[MAX];
    job jobs[MAX];
    pthread_barrier_t alive;
    if (n < 1 || n > MAX || pthread_barrier_init(&alive, NULL, (unsigned)n) != 0) return -1;
    for (int i = 0; i < n; i++) {
        jobs[i].invoke = (invoke_fn)invoke;
        jobs[i].frame = (void *)frames[i];
        jobs[i].calls = calls;
        jobs[i].failures = 0;
        jobs[i].alive = &alive;
        /* a thread that cannot start: the ones started wait at the barrier for good */
        if (pthread_create(&threads[i], NULL, run, &jobs[i]) != 0) return -2;
    }
    int failures = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        failures += (int)jobs[i].failures;
    }
    pthread_barrier_destroy(&alive);
    return failures;
}
