"""A native bundle is reloaded (two builds, alternating), unloaded and loaded again while
three threads call it: two through the Python call layer (checked handles), one through
interface and function pointers it cached (raw native dispatch, pp_call).  Every answer
must be the tag of a build that was loaded (1 or 3), or StaleHandle through the checked
path while the bundle is unloaded; cached pointers keep working throughout (a library
is never closed before the runtime is freed)."""
import sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import native_plugins as plugins  # noqa: E402
from common import *  # noqa: E402

stop = threading.Event()
tags, bad, counts = set(), [], {"calls": 0, "raw": 0, "stale": 0}
lock = threading.Lock()


def call_layer(rt):
    """Calls through a Contract; after an unload, a new Contract once it is loaded again."""
    n = stale = 0
    math = rt.contract("native.math", 1)
    while not stop.is_set():
        try:
            t = math.tag()
        except polyplug.StaleHandle:
            stale += 1
            try:
                math = rt.contract("native.math", 1)
            except polyplug.PluginNotFound:
                pass
            continue
        except Exception as exc:  # noqa: BLE001 - any other failure is a bug
            bad.append(repr(exc))
            continue
        n += 1
        if t not in (1, 3):
            bad.append(f"tag {t}")
        with lock:
            tags.add(t)
    with lock:
        counts["calls"] += n
        counts["stale"] += stale


def raw(iface):
    fn = ffi.cast("NativeGuestFn", iface.dispatch.native.functions[1])
    out, err = ffi.new("uint32_t *"), ffi.new("AbiError *")
    inst = ffi.new("GuestContractInstance *")[0]
    n = 0
    while not stop.is_set():
        fn(inst, ffi.NULL, out, err)      # the function pointer cached at the start
        lib.pp_call(iface, ffi.NULL, 0, 1, ffi.NULL, out, ffi.NULL, err)  # the old iface
        if err.code or out[0] != 1:
            bad.append(f"raw code={err.code} tag={out[0]}")
        n += 1
    with lock:
        counts["raw"] += n


with tempfile.TemporaryDirectory() as tmp:
    d = plugins.bundle(Path(tmp), "nplug", "plug",
                       extra='\n[contracts."native.math@1".functions]\ntag = { id = 1, returns = "u32" }\n')
    so = d / "libplug.so"
    rt = polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(hot_reload_enabled=True)) \
        .loader(polyplug.NativeLoader()).build()
    rt.load_bundle(d)
    iface = rt.contract("native.math", 1).interface
    reloads = 0

    def main():
        global reloads
        for i in range(60):
            plugins.install("plug_v3" if i % 2 == 0 else "plug", so)
            if i % 20 == 19:
                rt.unload_bundle("nplug")
                time.sleep(0.01)
                rt.load_bundle(d)
            else:
                rt.reload_bundle(d)
            reloads += 1
            time.sleep(0.005)
        stop.set()

    workers = [lambda: call_layer(rt), lambda: call_layer(rt), lambda: raw(iface)]
    threads = [threading.Thread(target=w) for w in workers]
    for t in threads:
        t.start()
    finish([main], secs=120)
    stop.set()
    for t in threads:
        t.join(30)
    rt.close()
    print(f"reloads={reloads} calls={counts['calls']} raw={counts['raw']} "
          f"stale={counts['stale']} bad={len(bad)} tags={sorted(tags)}")
    if bad:
        print("first bad:", bad[:5])
