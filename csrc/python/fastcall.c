/*
 * fastcall.c — polyplug._fastcall: the hot path of the Pythonic call layer.
 *
 * One object type, Function: a callable bound to one guest function (a registry
 * handle, an instance, a function id, call limits) and its signature.  A call
 *
 *   1. converts the Python arguments straight into a C argument block on this C stack
 *      (str arguments lend their cached UTF-8 bytes, bytes arguments their own buffer:
 *      no copy; bytearray and memoryview arguments are copied once, since another
 *      thread could resize them while the guest runs),
 *   2. fills a pp_call_frame on the stack, with a CallArena from the thread's own
 *      free list (a 4 KiB bump region; overflow blocks come from the process heap),
 *   3. runs pp_call_frame_invoke with the GIL released,
 *   4. builds the result (a str is decoded straight out of the arena: one copy; a
 *      large bytes result was written by the guest into the bytes object returned:
 *      no copy at all) and gives the arena back to the thread.
 *
 * Nothing the call wrote outlives it (the next call through an arena resets it first),
 * and no memory is shared between calls in flight, so a Function may be called from
 * any number of threads at once, and from inside a host callback that a call of the
 * same Function is running (that nested call takes another arena).
 *
 * Everything that needs words for a human stays in Python (polyplug/call.py): a call
 * that fails runs `fail(code, message)` and an argument that does not convert runs
 * `bad_arguments(args, exc)`; both raise.  Results that are not what the signature
 * promises (a NULL string pointer, invalid UTF-8) raise the given GuestError class.
 *
 * The file is compiled into polyplug._native's shared object (polyplug/_build.py), so
 * it calls the C core directly, and is loaded from there as a second module (PEP 489:
 * several modules in one library; polyplug/_ffi.py).  Limited API 3.9 (abi3), plus
 * two things 3.9's limited headers do not declare although the 3.9 runtime has them
 * with the layout every later version keeps (and 3.10/3.12 added to the limited API):
 * PyUnicode_AsUTF8AndSize and the vectorcall protocol.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x03090000
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../pp_internal.h" /* ppi_arena_taker; includes polyplug.h */

/* Entering Python from C code at interpreter exit ("Python entered from C code" below);
 * also used by the cffi module's callback adapters (polyplug/_build.py). */
int pp_python_enter(void);
void pp_python_leave(void);

#if Py_LIMITED_API + 0 < 0x030A0000
PyAPI_FUNC(const char *) PyUnicode_AsUTF8AndSize(PyObject *unicode, Py_ssize_t *size);
#endif
#if Py_LIMITED_API + 0 < 0x030C0000
typedef PyObject *(*vectorcallfunc)(PyObject *callable, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames);
#define PY_VECTORCALL_ARGUMENTS_OFFSET ((size_t)1 << (8 * sizeof(size_t) - 1))
#define Py_TPFLAGS_HAVE_VECTORCALL (1UL << 11)
#endif
/* PyErr_Fetch is deprecated from 3.12 on, in favour of a function 3.9 does not have */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

/* Type codes: struct's format characters, plus 's' (string: str or bytes in, str out)
 * and 'y' (bytes: bytes-like in, bytes out); both travel as a StringView. */
enum { NO_RESULT = 0, ARENA_BYTES = 4096, SMALL_ARGS = 256, SMALL_TEMPS = 8,
       LARGE_BYTES = 16 * 1024 };

typedef union out_slot {
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
    StringView sv;
} out_slot;

typedef struct Function {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;        /* __qualname__, __doc__, signature ... (set by call.py) */
    PyObject *owner;       /* keeps the runtime, and so its C memory, alive */
    PyObject *fail;        /* fail(code, message: bytes): raises the call's error */
    PyObject *bad_args;    /* bad_arguments(args: tuple, exc or None): raises */
    PyObject *guest_error; /* the class raised for results that break the signature */
    pp_call_frame tmpl;    /* rt, handle, instance, fn_id, limits */
    Py_ssize_t nargs;
    size_t args_size;
    char *types;           /* nargs type codes */
    size_t *offsets;       /* nargs offsets into the argument block */
    char result;           /* a type code, or NO_RESULT */
} Function;

static size_t type_size(char t) {
    switch (t) {
    case 'B': case 'b': case '?': return 1;
    case 'H': case 'h': return 2;
    case 'I': case 'i': case 'f': return 4;
    case 'Q': case 'q': case 'd': return 8;
    case 's': case 'y': return sizeof(StringView);
    default: return 0;
    }
}

/* n zeroed object pointers from PyMem (3.9's limited API has no PyMem_Calloc). */
static PyObject **object_array(Py_ssize_t n) {
    PyObject **a = PyMem_Malloc((size_t)n * sizeof *a);
    if (a) memset(a, 0, (size_t)n * sizeof *a);
    return a;
}

/* ── arguments ──────────────────────────────────────────────────────────────── */

enum { CONVERTED = 0, PROPAGATE = -1, BAD = -2 };

/* A failed conversion: BAD when the error means "wrong value for this type"
 * (TypeError, OverflowError: what struct.pack reports as such), else PROPAGATE. */
static int conversion_failed(void) {
    if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_OverflowError))
        return BAD;
    return PROPAGATE;
}

static int put_int(PyObject *v, char t, uint8_t *dst) {
    PyObject *num;
    if (PyLong_Check(v)) {
        Py_INCREF(v);
        num = v;
    } else {
        num = PyNumber_Index(v); /* what struct.pack accepts: int or __index__ */
        if (!num) return conversion_failed();
    }
    int rc = CONVERTED;
    if (t == 'B' || t == 'H' || t == 'I' || t == 'Q') {
        unsigned long long x = PyLong_AsUnsignedLongLong(num);
        if (x == (unsigned long long)-1 && PyErr_Occurred()) {
            rc = conversion_failed();
        } else if (t == 'B' && x <= UINT8_MAX) {
            dst[0] = (uint8_t)x;
        } else if (t == 'H' && x <= UINT16_MAX) {
            uint16_t y = (uint16_t)x;
            memcpy(dst, &y, sizeof y);
        } else if (t == 'I' && x <= UINT32_MAX) {
            uint32_t y = (uint32_t)x;
            memcpy(dst, &y, sizeof y);
        } else if (t == 'Q') {
            uint64_t y = x;
            memcpy(dst, &y, sizeof y);
        } else {
            rc = BAD;
        }
    } else {
        long long x = PyLong_AsLongLong(num);
        if (x == -1 && PyErr_Occurred()) {
            rc = conversion_failed();
        } else if (t == 'b' && x >= INT8_MIN && x <= INT8_MAX) {
            int8_t y = (int8_t)x;
            memcpy(dst, &y, sizeof y);
        } else if (t == 'h' && x >= INT16_MIN && x <= INT16_MAX) {
            int16_t y = (int16_t)x;
            memcpy(dst, &y, sizeof y);
        } else if (t == 'i' && x >= INT32_MIN && x <= INT32_MAX) {
            int32_t y = (int32_t)x;
            memcpy(dst, &y, sizeof y);
        } else if (t == 'q') {
            int64_t y = x;
            memcpy(dst, &y, sizeof y);
        } else {
            rc = BAD;
        }
    }
    Py_DECREF(num);
    return rc;
}

static int put_float(PyObject *v, char t, uint8_t *dst) {
    double x = PyFloat_AsDouble(v); /* float, or anything with __float__ / __index__ */
    if (x == -1.0 && PyErr_Occurred()) return conversion_failed();
    if (t == 'd') {
        memcpy(dst, &x, sizeof x);
        return CONVERTED;
    }
    float y = (float)x;
    if (isinf(y) && !isinf(x)) return BAD; /* too large for a float (struct: OverflowError) */
    memcpy(dst, &y, sizeof y);
    return CONVERTED;
}

/* A StringView over the bytes of `v`.  str (string only) lends its UTF-8 form and bytes
 * its buffer; bytearray and memoryview are copied into a new bytes object, which is
 * stored in *temp for the caller to release after the call. */
static int put_view(PyObject *v, char t, uint8_t *dst, PyObject **temp) {
    StringView sv = {NULL, 0};
    char *p = NULL;
    Py_ssize_t n = 0;
    if (PyUnicode_Check(v)) {
        if (t != 's') return BAD;
        const char *u = PyUnicode_AsUTF8AndSize(v, &n);
        if (!u) return PROPAGATE; /* e.g. a lone surrogate: UnicodeEncodeError */
        p = (char *)u;
    } else if (PyBytes_Check(v)) {
        if (PyBytes_AsStringAndSize(v, &p, &n) < 0) return PROPAGATE;
    } else if (PyByteArray_Check(v) || PyObject_TypeCheck(v, &PyMemoryView_Type)) {
        PyObject *copy = PyBytes_FromObject(v);
        if (!copy) return conversion_failed();
        if (PyBytes_AsStringAndSize(copy, &p, &n) < 0) {
            Py_DECREF(copy);
            return PROPAGATE;
        }
        *temp = copy;
    } else {
        return BAD;
    }
    if (n > 0) {
        sv.ptr = (const uint8_t *)p;
        sv.len = (size_t)n;
    }
    memcpy(dst, &sv, sizeof sv);
    return CONVERTED;
}

static int put_arg(PyObject *v, char t, uint8_t *dst, PyObject **temp) {
    switch (t) {
    case 'f': case 'd':
        return put_float(v, t, dst);
    case '?': {
        int b = PyObject_IsTrue(v); /* any object, as struct.pack('?') */
        if (b < 0) return conversion_failed();
        dst[0] = (uint8_t)b;
        return CONVERTED;
    }
    case 's': case 'y':
        return put_view(v, t, dst, temp);
    default:
        return put_int(v, t, dst);
    }
}

/* Report arguments that did not convert through bad_arguments(args, exc); NULL. */
static PyObject *bad_arguments(Function *f, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *tuple = PyTuple_New(nargs);
    if (!tuple) {
        Py_XDECREF(value);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Py_INCREF(args[i]);
        PyTuple_SetItem(tuple, i, args[i]); /* steals */
    }
    PyObject *r = PyObject_CallFunctionObjArgs(f->bad_args, tuple, value ? value : Py_None,
                                               NULL);
    Py_DECREF(tuple);
    Py_XDECREF(value);
    if (r) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_SystemError, "polyplug: bad_arguments returned instead of raising");
    }
    return NULL;
}

/* ── results ────────────────────────────────────────────────────────────────── */

static PyObject *guest_error(Function *f, const char *text) {
    PyErr_SetString(f->guest_error, text);
    return NULL;
}

static PyObject *view_result(Function *f, StringView sv) {
    if (sv.len == 0) return f->result == 's' ? PyUnicode_FromStringAndSize("", 0)
                                             : PyBytes_FromStringAndSize("", 0);
    if (!sv.ptr) return guest_error(f, "the guest returned a StringView with a null pointer");
    if (sv.len > (size_t)PY_SSIZE_T_MAX)
        return guest_error(f, "the guest returned a StringView longer than the address space");
    if (f->result == 'y') return PyBytes_FromStringAndSize((const char *)sv.ptr, (Py_ssize_t)sv.len);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)sv.ptr, (Py_ssize_t)sv.len, "strict");
    if (s || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return s;
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *msg = PyUnicode_FromFormat("the guest returned a string that is not UTF-8 (%S)",
                                         value ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (msg) {
        PyErr_SetObject(f->guest_error, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

static PyObject *result_of(Function *f, const out_slot *o) {
    switch (f->result) {
    case NO_RESULT: Py_RETURN_NONE;
    case 'B': return PyLong_FromUnsignedLong(o->u8);
    case 'H': return PyLong_FromUnsignedLong(o->u16);
    case 'I': return PyLong_FromUnsignedLong(o->u32);
    case 'Q': return PyLong_FromUnsignedLongLong(o->u64);
    case 'b': return PyLong_FromLong(o->i8);
    case 'h': return PyLong_FromLong(o->i16);
    case 'i': return PyLong_FromLong(o->i32);
    case 'q': return PyLong_FromLongLong(o->i64);
    case 'f': return PyFloat_FromDouble((double)o->f32);
    case 'd': return PyFloat_FromDouble(o->f64);
    case '?': return PyBool_FromLong(o->u8 != 0);
    default: return view_result(f, o->sv);
    }
}

/* ── call arenas ───────────────────────────────────────────────────────────── */

/*
 * Each call takes an arena from its thread's free list and puts it back afterwards, so a
 * call nested in a host callback takes another one, and nothing is shared between
 * threads.  The bump region is ARENA_BYTES of heap (not the C stack, which a thread
 * with a small stack cannot spare); overflow blocks stay with the arena for the next
 * call unless they add up to more than RETAIN_BYTES.  A thread's arenas are freed when
 * it exits.
 */
enum { RETAIN_BYTES = 256 * 1024, MAX_FREE = 8 };

typedef struct pooled_arena {
    struct pooled_arena *next;
    CallArena arena;
    ppi_arena_taker taker; /* large bytes results (below); set per call */
    PyObject *large;       /* the bytes object whose buffer the guest was given */
    uint64_t buf[ARENA_BYTES / sizeof(uint64_t)];
} pooled_arena;

typedef struct thread_arenas {
    pooled_arena *free;
    int count;
} thread_arenas;

static pthread_key_t g_arenas_key;
static int g_arenas_key_ok;
static pthread_once_t g_arenas_once = PTHREAD_ONCE_INIT;

static void free_thread_arenas(void *p) {
    thread_arenas *t = p;
    while (t->free) {
        pooled_arena *a = t->free;
        t->free = a->next;
        pp_arena_release(&a->arena);
        free(a);
    }
    free(t);
}

static void make_arenas_key(void) {
    g_arenas_key_ok = pthread_key_create(&g_arenas_key, free_thread_arenas) == 0;
}

/* An arena for one call (its bump region empty), or NULL when out of memory. */
static pooled_arena *take_arena(thread_arenas **owner) {
    thread_arenas *t = NULL;
    if (g_arenas_key_ok) {
        t = pthread_getspecific(g_arenas_key);
        if (!t && (t = calloc(1, sizeof *t)) != NULL && pthread_setspecific(g_arenas_key, t)) {
            free(t);
            t = NULL;
        }
    }
    *owner = t;
    pooled_arena *a = t ? t->free : NULL;
    if (a) {
        t->free = a->next;
        t->count--;
        return a;
    }
    a = malloc(sizeof *a);
    if (a) {
        pp_arena_init(&a->arena, pp_detached_host(), (uint8_t *)a->buf, sizeof a->buf);
        a->large = NULL;
    }
    return a;
}

/* With the GIL held. */
static void give_arena(thread_arenas *t, pooled_arena *a) {
    Py_CLEAR(a->large);
    size_t kept = 0;
    for (const ArenaOverflowBlock *b = a->arena.first_overflow; b; b = b->next)
        kept += b->capacity;
    if (kept > RETAIN_BYTES) pp_arena_release(&a->arena);
    if (t && t->count < MAX_FREE) {
        a->next = t->free;
        t->free = a;
        t->count++;
        return;
    }
    pp_arena_release(&a->arena);
    free(a);
}

/* ── large bytes results ──────────────────────────────────────────────────── */

/*
 * A function whose result is bytes lends its arena's taker (pp_internal.h) to the call:
 * the first request of at least LARGE_BYTES that the bump region cannot hold gets the
 * buffer of a new bytes object of exactly that size, and when the result is that whole
 * buffer, the call returns the object itself.  A guest that returns a large string
 * (the SDK copies it into the arena) thus writes the caller's result directly, and the
 * result read copies nothing; without this the bytes went guest -> overflow block ->
 * bytes object.  Creating the object needs the GIL, which this thread released for
 * the call: it takes it back for that moment (PyGILState_Ensure: also right when a
 * host callback in between holds it already), holding the VM's lock, as a Python host
 * function does (the GIL comes after every C-core lock: pp_internal.h).  Not for a
 * second request in the same call (ordinary overflow memory then), nor at interpreter
 * exit (pp_python_enter, below).
 */
static void *take_large(ppi_arena_taker *self, size_t size, size_t align) {
    pooled_arena *a = (pooled_arena *)((char *)self - offsetof(pooled_arena, taker));
    if (a->large || align > 16 || size > (size_t)PY_SSIZE_T_MAX) return NULL;
    void *p = NULL;
    if (pp_python_enter()) {
        PyGILState_STATE gil = PyGILState_Ensure();
        PyObject *o = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (!o) PyErr_Clear(); /* declined: the overflow chain tries */
        p = o ? PyBytes_AsString(o) : NULL;
        if (p && ((uintptr_t)p & (align - 1)) != 0) { /* not as aligned as asked */
            Py_CLEAR(o);
            p = NULL;
        }
        a->large = o;
        PyGILState_Release(gil);
    }
    pp_python_leave();
    return p;
}

/* The result of a bytes function: the object the guest wrote it into, or a copy. */
static PyObject *bytes_result(Function *f, pooled_arena *a, StringView sv) {
    if (a->large && sv.len && sv.ptr == (const uint8_t *)PyBytes_AsString(a->large) &&
        sv.len == (size_t)PyBytes_Size(a->large)) {
        PyObject *r = a->large;
        a->large = NULL;
        return r;
    }
    return view_result(f, sv);
}

/* ── Python entered from C code at interpreter exit ────────────────────────── */

/*
 * Once Python finalizes, a thread that takes the GIL is ended on the spot with
 * pthread_exit.  For a thread that C code of ours runs on — a guest's large bytes
 * result (above), a Python host function, a log record, a path hook or a reload
 * callback called from inside a guest — that would be mid-call, holding its bundle's
 * lock, and the unwinding cannot pass LuaJIT's compiled frames: the process aborts.
 * So every such entry into Python goes through pp_python_enter, which refuses once
 * mark_finalizing (atexit, before Python finalizes) has run, except on the thread that
 * ran it — the one that finalizes, holding the GIL throughout; the caller then does
 * without (the record is dropped, the host function fails).  mark_finalizing closes
 * the door and then waits, with the GIL released, for the entries already past it:
 * a thread that looked at g_finalizing just before and now waits for the GIL or runs
 * a callback.  Both sides store then load (g_entered / g_finalizing, sequentially
 * consistent), so each entry either sees the door closed or is counted.  The wait is
 * bounded (FINALIZING_WAIT_MS): a callback that runs longer than that is ended by
 * Python as before.
 */
static atomic_int g_finalizing;
static atomic_int g_entered;  /* entries past their look at g_finalizing */
static pthread_t g_exit_thread; /* set before g_finalizing */

enum { FINALIZING_WAIT_MS = 2000 };

int pp_python_enter(void) {
    atomic_fetch_add(&g_entered, 1);
    return !atomic_load(&g_finalizing) || pthread_equal(pthread_self(), g_exit_thread);
}

void pp_python_leave(void) { atomic_fetch_sub(&g_entered, 1); }

static PyObject *mark_finalizing(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    g_exit_thread = pthread_self();
    atomic_store(&g_finalizing, 1);
    if (atomic_load(&g_entered)) {
        /* bounded: an entry needs only the GIL, which this thread now lets go */
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; atomic_load(&g_entered) && i < FINALIZING_WAIT_MS * 10; i++)
            nanosleep(&(struct timespec){0, 100 * 1000}, NULL);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

/* ── the call ───────────────────────────────────────────────────────────────── */

/* Not inlined: its buffer must not sit in fn_vectorcall's frame during the call (a
 * thread with a small stack has little to spare there). */
__attribute__((noinline)) static PyObject *call_failed(Function *f, uint32_t code,
                                                       StringView message) {
    /* The message lives in this thread's error buffer until its next call, and creating
     * a Python object may run a finalizer that makes one: copy it out first (error
     * texts are shorter than this; a longer message is cut). */
    char text[4096];
    size_t n = message.ptr ? message.len : 0;
    if (n > sizeof text) n = sizeof text;
    if (n) memcpy(text, message.ptr, n);
    PyObject *msg = PyBytes_FromStringAndSize(text, (Py_ssize_t)n);
    if (!msg) return NULL;
    PyObject *r = PyObject_CallFunction(f->fail, "kN", (unsigned long)code, msg);
    if (r) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_SystemError, "polyplug: fail returned instead of raising");
    }
    return NULL;
}

static PyObject *fn_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    Function *f = (Function *)self;
    Py_ssize_t nargs = (Py_ssize_t)(nargsf & ~PY_VECTORCALL_ARGUMENTS_OFFSET);
    if (kwnames && PyTuple_Size(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "%R takes no keyword arguments", self);
        return NULL;
    }
    if (nargs != f->nargs) {
        PyErr_Format(PyExc_TypeError, "%R takes %zd argument%s (%zd given)", self, f->nargs,
                     f->nargs == 1 ? "" : "s", nargs);
        return NULL;
    }
    uint64_t small_block[SMALL_ARGS / sizeof(uint64_t)];
    PyObject *small_temps[SMALL_TEMPS] = {NULL};
    uint8_t *block = (uint8_t *)small_block;
    PyObject **temps = small_temps;
    if (f->args_size > sizeof small_block) {
        block = PyMem_Malloc(f->args_size);
        if (!block) return PyErr_NoMemory();
    }
    if (nargs > SMALL_TEMPS) {
        temps = object_array(nargs);
        if (!temps) {
            if (block != (uint8_t *)small_block) PyMem_Free(block);
            return PyErr_NoMemory();
        }
    }
    PyObject *result = NULL;
    int rc = CONVERTED;
    for (Py_ssize_t i = 0; i < nargs && rc == CONVERTED; i++)
        rc = put_arg(args[i], f->types[i], block + f->offsets[i], &temps[i]);
    if (rc == BAD) {
        bad_arguments(f, args, nargs);
    } else if (rc == CONVERTED) {
        thread_arenas *owner;
        pooled_arena *arena = take_arena(&owner);
        if (!arena) {
            PyErr_NoMemory();
        } else {
            out_slot out;
            memset(&out, 0, sizeof out);
            pp_call_frame frame = f->tmpl;
            frame.args = nargs ? block : NULL;
            frame.out = f->result != NO_RESULT ? &out : NULL;
            frame.arena = &arena->arena; /* reset by the call before the guest runs */
            /* only a bytes function lends a taker: the thread-local is left alone (two
             * TLS lookups through the dynamic loader) on every other call */
            bool lends = f->result == 'y';
            ppi_arena_taker *outer = NULL;
            if (lends) {
                outer = ppi_arena_taker_current;
                arena->taker = (ppi_arena_taker){&arena->arena, LARGE_BYTES, take_large};
                ppi_arena_taker_current = &arena->taker;
            }
            PyThreadState *ts = PyEval_SaveThread();
            uint32_t code = pp_call_frame_invoke(&frame);
            PyEval_RestoreThread(ts);
            if (lends) ppi_arena_taker_current = outer;
            if (code)
                result = call_failed(f, code, frame.err.message);
            else if (f->result == 'y')
                result = bytes_result(f, arena, out.sv);
            else
                result = result_of(f, &out);
            give_arena(owner, arena);
        }
    }
    for (Py_ssize_t i = 0; i < nargs; i++) Py_XDECREF(temps[i]);
    if (temps != small_temps) PyMem_Free(temps);
    if (block != (uint8_t *)small_block) PyMem_Free(block);
    return result;
}

/* tp_call: the same with a tuple (callers that do not use vectorcall). */
static PyObject *fn_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    if (kwargs && PyDict_Size(kwargs) > 0) {
        PyErr_Format(PyExc_TypeError, "%R takes no keyword arguments", self);
        return NULL;
    }
    Py_ssize_t n = PyTuple_Size(args);
    if (n < 0) return NULL;
    PyObject *small[SMALL_TEMPS];
    PyObject **stack = small;
    if (n > SMALL_TEMPS) {
        stack = object_array(n);
        if (!stack) return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) stack[i] = PyTuple_GetItem(args, i); /* borrowed */
    PyObject *r = fn_vectorcall(self, stack, (size_t)n, NULL);
    if (stack != small) PyMem_Free(stack);
    return r;
}

/* ── the type ───────────────────────────────────────────────────────────────── */

static int unsigned_arg(PyObject *v, const char *what, unsigned long long max,
                        unsigned long long *out) {
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    if (x > max) {
        PyErr_Format(PyExc_OverflowError, "%s is out of range", what);
        return -1;
    }
    *out = x;
    return 0;
}

/*
 * Function(rt, index, generation, instance_data, instance_contract_id, fn_id,
 *          timeout_ns, cancel, arg_types, arg_offsets, args_size, result_type,
 *          owner, fail, bad_arguments, guest_error)
 * Addresses (rt, instance_data, cancel) are ints; arg_types and result_type are bytes
 * of type codes (result_type b"" for no result); arg_offsets is a tuple of ints.
 */
static PyObject *fn_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static const char *const names[] = {"rt", "index", "generation", "instance_data",
                                        "instance_contract_id", "fn_id", "timeout_ns",
                                        "cancel", "arg_types", "arg_offsets", "args_size",
                                        "result_type", "owner", "fail", "bad_arguments",
                                        "guest_error"};
    enum { NFIELDS = sizeof names / sizeof names[0] };
    if (kwargs && PyDict_Size(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "Function() takes positional arguments only");
        return NULL;
    }
    if (PyTuple_Size(args) != NFIELDS) {
        PyErr_Format(PyExc_TypeError, "Function() takes %d arguments", (int)NFIELDS);
        return NULL;
    }
    unsigned long long num[8];
    static const unsigned long long max[8] = {UINTPTR_MAX, UINT32_MAX, UINT32_MAX, UINTPTR_MAX,
                                              UINT64_MAX, UINT32_MAX, UINT64_MAX, UINTPTR_MAX};
    for (int i = 0; i < 8; i++)
        if (unsigned_arg(PyTuple_GetItem(args, i), names[i], max[i], &num[i]) < 0) return NULL;
    PyObject *types = PyTuple_GetItem(args, 8), *offsets = PyTuple_GetItem(args, 9);
    PyObject *result = PyTuple_GetItem(args, 11);
    unsigned long long args_size;
    if (unsigned_arg(PyTuple_GetItem(args, 10), "args_size", SIZE_MAX / 2, &args_size) < 0)
        return NULL;
    if (!PyBytes_Check(types) || !PyTuple_Check(offsets) || !PyBytes_Check(result) ||
        PyBytes_Size(types) != PyTuple_Size(offsets) || PyBytes_Size(result) > 1) {
        PyErr_SetString(PyExc_TypeError, "Function(): bad signature description");
        return NULL;
    }
    PyObject *callbacks[3] = {PyTuple_GetItem(args, 13), PyTuple_GetItem(args, 14),
                              PyTuple_GetItem(args, 15)};
    for (int i = 0; i < 3; i++) {
        if (!PyCallable_Check(callbacks[i])) {
            PyErr_Format(PyExc_TypeError, "Function(): %s must be callable", names[13 + i]);
            return NULL;
        }
    }
    Py_ssize_t nargs = PyBytes_Size(types);
    const char *codes = PyBytes_AsString(types);
    char rcode = PyBytes_Size(result) ? PyBytes_AsString(result)[0] : (char)NO_RESULT;
    if (rcode != NO_RESULT && !type_size(rcode)) {
        PyErr_Format(PyExc_ValueError, "Function(): unknown result type code %c", rcode);
        return NULL;
    }

    allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
    Function *f = (Function *)alloc(type, 0);
    if (!f) return NULL;
    f->vectorcall = fn_vectorcall;
    f->nargs = nargs;
    f->args_size = (size_t)args_size;
    f->result = rcode;
    f->types = PyMem_Malloc((size_t)nargs + 1);
    f->offsets = PyMem_Malloc(((size_t)nargs + 1) * sizeof *f->offsets);
    if (!f->types || !f->offsets) {
        Py_DECREF(f);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        size_t size = type_size(codes[i]);
        size_t off = PyLong_AsSize_t(PyTuple_GetItem(offsets, i));
        if (off == (size_t)-1 && PyErr_Occurred()) {
            Py_DECREF(f);
            return NULL;
        }
        if (!size || off > f->args_size || size > f->args_size - off) {
            Py_DECREF(f);
            PyErr_Format(PyExc_ValueError, "Function(): argument %zd (type code %c, offset "
                         "%zu) does not fit an argument block of %zu bytes", i + 1, codes[i],
                         off, f->args_size);
            return NULL;
        }
        f->types[i] = codes[i];
        f->offsets[i] = off;
    }
    memset(&f->tmpl, 0, sizeof f->tmpl);
    f->tmpl.rt = (pp_runtime *)(uintptr_t)num[0];
    f->tmpl.index = (uint32_t)num[1];
    f->tmpl.generation = (uint32_t)num[2];
    f->tmpl.instance_data = (void *)(uintptr_t)num[3];
    f->tmpl.instance_contract_id = num[4];
    f->tmpl.fn_id = (uint32_t)num[5];
    f->tmpl.timeout_ns = num[6];
    f->tmpl.cancel = (pp_cancel *)(uintptr_t)num[7];
    PyObject *owner = PyTuple_GetItem(args, 12);
    Py_INCREF(owner);
    f->owner = owner;
    Py_INCREF(callbacks[0]);
    f->fail = callbacks[0];
    Py_INCREF(callbacks[1]);
    f->bad_args = callbacks[1];
    Py_INCREF(callbacks[2]);
    f->guest_error = callbacks[2];
    return (PyObject *)f;
}

static int fn_traverse(PyObject *self, visitproc visit, void *arg) {
    Function *f = (Function *)self;
    Py_VISIT(f->dict);
    Py_VISIT(f->owner);
    Py_VISIT(f->fail);
    Py_VISIT(f->bad_args);
    Py_VISIT(f->guest_error);
    Py_VISIT((PyObject *)Py_TYPE(self)); /* instances of heap types own their type */
    return 0;
}

static int fn_clear(PyObject *self) {
    Function *f = (Function *)self;
    Py_CLEAR(f->dict);
    Py_CLEAR(f->owner);
    Py_CLEAR(f->fail);
    Py_CLEAR(f->bad_args);
    Py_CLEAR(f->guest_error);
    return 0;
}

static void fn_dealloc(PyObject *self) {
    Function *f = (Function *)self;
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    fn_clear(self);
    PyMem_Free(f->types);
    PyMem_Free(f->offsets);
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *fn_repr(PyObject *self) {
    Function *f = (Function *)self;
    PyObject *name = f->dict ? PyDict_GetItemString(f->dict, "__qualname__") : NULL;
    if (name) return PyUnicode_FromFormat("<polyplug function %S>", name);
    return PyUnicode_FromFormat("<polyplug function id %u>", (unsigned)f->tmpl.fn_id);
}

static PyMemberDef fn_members[] = {
    {"__dictoffset__", T_PYSSIZET, offsetof(Function, dict), READONLY, NULL},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Function, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot fn_slots[] = {
    {Py_tp_new, (void *)fn_new},
    {Py_tp_dealloc, (void *)fn_dealloc},
    {Py_tp_traverse, (void *)fn_traverse},
    {Py_tp_clear, (void *)fn_clear},
    {Py_tp_call, (void *)fn_call},
    {Py_tp_repr, (void *)fn_repr},
    {Py_tp_members, (void *)fn_members},
    {Py_tp_doc, (void *)"A guest function bound to its signature (see polyplug/call.py)."},
    {0, NULL},
};

static PyType_Spec fn_spec = {
    "polyplug._fastcall.Function",
    (int)sizeof(Function),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    fn_slots,
};

/* ── the module ─────────────────────────────────────────────────────────────── */

static PyMethodDef fastcall_methods[] = {
    {"mark_finalizing", mark_finalizing, METH_NOARGS,
     "Called at interpreter exit (atexit): C code on other threads stops entering "
     "Python (pp_python_enter); entries already under way finish first."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcall_module = {
    PyModuleDef_HEAD_INIT,
    "polyplug._fastcall",
    "The Pythonic call layer's hot path (see polyplug/call.py).",
    -1,
    fastcall_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__fastcall(void);
PyMODINIT_FUNC PyInit__fastcall(void) {
    pthread_once(&g_arenas_once, make_arenas_key);
    PyObject *m = PyModule_Create(&fastcall_module);
    if (!m) return NULL;
    PyObject *type = PyType_FromSpec(&fn_spec);
    if (!type || PyModule_AddObject(m, "Function", type) < 0) {
        Py_XDECREF(type);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "ARENA_BYTES", ARENA_BYTES) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
