# Fresh-eyes review of cperf2: call limits are enforced by a watchdog thread that starts
# with the first limited call, and fork() copies only the calling thread.  A child forked
# after that (multiprocessing's default start method on Linux) still believed the
# watchdog was running: its limited calls published their deadlines to nobody, and a
# runaway call under a time limit or a cancel token never stopped.
from common import *
import os, signal, tempfile, time
from polyplug.signature import signature
tmp = tempfile.mkdtemp()
LUA = """
local ffi = require("ffi")
local function spin() while true do end end
local function answer(_, _, out) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = 42 end
function polyplug_init()
    return { ["t.f"] = { factory = function() return {} end,
                         functions = { [0] = spin, answer } } }, { code = 0 }
end
"""
SIGS = {"spin": signature("spin", 0), "answer": signature("answer", 1, [], "u32")}
bundle = make_bundle(tmp, "f", LUA)

def outcome(fn):
    try:
        fn()
        return "returned"
    except polyplug.PolyplugError as exc:
        return type(exc).__name__

rt = runtime(polyplug.LuaConfig(call_timeout=0.2))
rt.load_bundle(bundle)
c = rt.contract("t.f", 1, signatures=SIGS)
print("parent:", outcome(c.spin), flush=True)   # the watchdog runs from here on
rt.close()

def child():
    out = []
    crt = runtime(polyplug.LuaConfig(call_timeout=0.2))
    crt.load_bundle(bundle)
    cc = crt.contract("t.f", 1, signatures=SIGS)
    out.append(outcome(cc.spin))                                  # a short limit
    out.append(outcome(cc.with_limits(timeout=0.5).spin))         # a pending deadline
    token = polyplug.CancelToken()
    timer = threading.Timer(0.1, token.cancel); timer.start()
    out.append(outcome(cc.with_limits(timeout=60, cancel=token).spin))
    out.append(str(cc.answer()))
    crt.close()
    return out

for round_ in range(2):   # a grandchild too: the fix must hold across generations
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = child()
        if round_ == 0:                      # fork again from the child
            pid2 = os.fork()
            if pid2 == 0:
                res = ["grandchild"] + child()
                os.write(w, (" ".join(res) + "\n").encode()); os._exit(0)
            os.waitpid(pid2, 0)
        os.write(w, (" ".join(res) + "\n").encode())
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done: break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
        print("HUNG: a limited call in a forked child never stopped", flush=True)
    with os.fdopen(r) as f:
        for line in f.read().splitlines():
            print("child:", line, flush=True)
print("finished")
