# fork() copies only the calling thread.  A child forked while another thread was in
# one of the runtime's short bookkeeping sections (the registry's rwlock, the runtime's
# or a loader's list lock) inherited that lock held forever, and its first lookup or
# load hung.  Every leaf lock is now taken around fork() and the child gets them free.
# Two threads load, look up and unload bundles without pause and a third looks up and
# calls, while the main thread forks 120 times; each child (with a 10 s alarm) looks
# up, calls a bundle none of them uses, and asks a loader (its list lock).  A load in
# the child is not tried: the flow lock a copied-away load held is bounded separately
# (fork_while_other_threads_hold_locks).
from common import *
import os, signal, tempfile, time, warnings
from polyplug.signature import signature
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with threads
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function answer(_, _, o) ffi.cast("uint32_t *", ffi.cast("uintptr_t", o))[0] = 42 end
function polyplug_init()
    return { ["%s"] = { factory = function() return {} end, functions = { [0] = answer } } },
           { code = 0 }
end
"""
SIGS = {"answer": signature("answer", 0, [], "u32")}
fixed = make_bundle(tmp, "fixed", LUA % "t.fixed")
churn = [make_bundle(tmp, f"churn{i}", LUA % f"t.churn{i}") for i in range(2)]
quiet = make_bundle(tmp, "quiet", LUA % "t.quiet")  # called in the children only

rt = runtime()
rt.load_bundle(fixed)
rt.load_bundle(quiet)
# the layer's lazy imports (json, for manifest fields) happen here, not in a worker at
# the instant of a fork: CPython's child would wait forever for that module's import
# lock (any lazy import in any library has that hazard)
import json  # noqa: F401,E402
rt.bundle_memory("fixed")
stop = threading.Event()

def churner(d, name):
    while not stop.is_set():
        rt.load_bundle(d)
        rt.contract(f"t.{name}", 1, signatures=SIGS).answer()
        rt.unload_bundle(name)

def looker():
    c = rt.contract("t.fixed", 1, signatures=SIGS)
    while not stop.is_set():
        rt.registry().find(polyplug.guest_contract_id("t.fixed", 1), 1)
        c.answer()

workers = [threading.Thread(target=churner, args=(d, f"churn{i}")) for i, d in enumerate(churn)]
workers.append(threading.Thread(target=looker))
for w in workers:
    w.start()

hung = bad = 0
for _ in range(120):
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)
        found = rt.registry().find(polyplug.guest_contract_id("t.quiet", 1), 1)
        ok = found is not None and rt.contract("t.quiet", 1, signatures=SIGS).answer() == 42
        ok = ok and rt.bundle_memory("quiet") > 0 and len(rt.list_bundles()) >= 2
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        hung += 1
    elif os.WEXITSTATUS(status) != 0:
        bad += 1
    time.sleep(0.01)
stop.set()
for w in workers:
    w.join()
rt.close()
print(f"children that hung: {hung}, that failed: {bad}")
print("finished")
