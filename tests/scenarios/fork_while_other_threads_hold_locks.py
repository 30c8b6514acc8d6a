# fork() copies only the calling thread.  A child forked while another thread of the
# parent was inside a call (holding that bundle's VM lock) or inside a load (holding
# the runtime's flow lock) inherited those locks held by a thread that does not exist
# in it: a call into that bundle, or any load, waited forever there.  In such a child
# every wait for a lock such a thread holds is bounded (PPI_NESTED_WAIT_NS, 5 s) and
# fails saying why; other bundles and the parent are unaffected, and a lock a thread of
# the child itself holds for longer than that is waited for as in any process.
from common import *
import os, tempfile, time, warnings
from polyplug.signature import signature
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
tmp = tempfile.mkdtemp()
SPIN = """
local ffi = require("ffi")
local function spin(_, a, o)
    local stop = os.clock() + ffi.cast("const uint32_t *", ffi.cast("uintptr_t", a))[0] / 1000
    while os.clock() < stop do end
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", o))[0] = 7
end
local init_ms = %d
local stop = os.clock() + init_ms / 1000
while os.clock() < stop do end
function polyplug_init()
    return { ["%s"] = { factory = function() return {} end, functions = { [0] = spin } } },
           { code = 0 }
end
"""
# like SPIN, but sleeping (a long holder that costs no CPU)
NAP = """
local ffi = require("ffi")
ffi.cdef("int usleep(unsigned int usec);")
local function nap(_, a, o)
    ffi.C.usleep(ffi.cast("const uint32_t *", ffi.cast("uintptr_t", a))[0] * 1000)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", o))[0] = 7
end
ffi.C.usleep(%d * 1000)
function polyplug_init()
    return { ["%s"] = { factory = function() return {} end, functions = { [0] = nap } } },
           { code = 0 }
end
"""
SIGS = {"spin": signature("spin", 0, ["u32"], "u32")}
NAPS = {"nap": signature("nap", 0, ["u32"], "u32")}
busy = make_bundle(tmp, "busy", SPIN % (0, "t.busy"))
idle = make_bundle(tmp, "idle", SPIN % (0, "t.idle"))
slow = make_bundle(tmp, "slow", SPIN % (3000, "t.slow"))   # its init runs 3 s
late = make_bundle(tmp, "late", SPIN % (0, "t.late"))
nap = make_bundle(tmp, "nap", NAP % (0, "t.nap"))
napslow = make_bundle(tmp, "napslow", NAP % (6000, "t.napslow"))   # its init sleeps 6 s

def in_child(body):
    """Fork, run body() in the child (its lines go through a pipe), wait for it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            lines = body()
        except BaseException as exc:  # noqa: BLE001
            lines = [f"child raised {exc!r}"]
        os.write(w, ("\n".join(lines) + "\n").encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    print(out, end="", flush=True)

def outcome(fn, *args):
    t0 = time.monotonic()
    try:
        return f"returned {fn(*args)}", time.monotonic() - t0
    except polyplug.PolyplugError as exc:
        return f"{type(exc).__name__}: {exc}", time.monotonic() - t0

rt = runtime()
for b in (busy, idle, nap):
    rt.load_bundle(b)
cbusy = rt.contract("t.busy", 1, signatures=SIGS)
cidle = rt.contract("t.idle", 1, signatures=SIGS)
cnap = rt.contract("t.nap", 1, signatures=NAPS)

def waits_for_child_thread(hold, *args):
    """In the child: a thread of the child runs hold(*args) for 6 s; a call or load by
    this thread meanwhile waits for it (not 5 s, then a fork() error)."""
    th = threading.Thread(target=hold, args=args); th.start(); time.sleep(0.3)
    return th

# 1. another thread is inside a call of `busy` when the process forks
t = threading.Thread(target=cbusy.spin, args=(15000,)); t.start(); time.sleep(0.3)
def call_child():
    # a new thread of the child is likely to get the stack of the thread that was not
    # copied, and so its thread tag: it must not pass for the holder (a nested call
    # into a VM that is in the middle of another call)
    got = []
    th = threading.Thread(target=lambda: got.append(outcome(cbusy.spin, 1))); th.start()
    th.join()
    text, secs = got[0]
    ok = text.startswith("CallTimeout") and "fork() child" in text and 4.5 < secs < 30
    lines = [f"new thread in child bounded: {ok} ({text[:40]})"]
    text, secs = outcome(cbusy.spin, 1)
    ok = text.startswith("CallTimeout") and "fork() child" in text and 4.5 < secs < 30
    lines += [f"call in child bounded: {ok}", f"other bundle in child: {outcome(cidle.spin, 1)[0]}"]
    th = waits_for_child_thread(cnap.nap, 6000)
    text, secs = outcome(cnap.nap, 1)
    th.join()
    lines.append(f"call waits for the child's own thread: {text} {secs > 5}")
    th = waits_for_child_thread(rt.load_bundle, napslow)
    text, secs = outcome(rt.load_bundle, late)
    th.join()
    return lines + [f"load waits for the child's own thread: {text[:8]} {secs > 5}"]
in_child(call_child)
t.join()
print("parent after:", outcome(cbusy.spin, 1)[0], flush=True)

# 2. another thread is inside a load (the flow lock) when the process forks
t = threading.Thread(target=rt.load_bundle, args=(slow,)); t.start(); time.sleep(0.3)
def load_child():
    text, secs = outcome(rt.load_bundle, late)
    ok = text.startswith("RuntimeBusy") and "fork() child" in text and 4.5 < secs < 30
    return [f"load in child bounded: {ok}", f"call in child: {outcome(cidle.spin, 1)[0]}"]
in_child(load_child)
t.join()
rt.load_bundle(late)
print("parent loads after:", len(rt.list_bundles()), "bundles", flush=True)
rt.close()
print("finished")
