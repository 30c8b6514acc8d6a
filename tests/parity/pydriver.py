"""The Python interpreter of the parity scenarios (tests/parity/*.scn).

It runs each scenario through polyplug's Python API — ``RuntimeBuilder``, ``LuaLoader``,
``Runtime.load_bundle_from_source(ManifestData(...), BundleSource...)``,
``Runtime.load_bundle(path)`` / ``reload_bundle(path)``,
``registry().find / resolve_guest_contract``, the ``host_api`` table, ``lib.pp_call``
and ``iface.dispatch.vm.call``, ``lib.pp_arena_new`` — and prints the transcript that
tests/c/parity_driver.c prints for the same script when it drives the C host
directly.  tests/test_parity.py asserts the two are identical.

The language is documented in tests/parity/README.md.  Standalone use::

    python tests/parity/pydriver.py --root . --work "$(mktemp -d)" tests/parity/*.scn
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

import polyplug
from polyplug import (
    BundleSource,
    Compatibility,
    GuestContractHandle,
    HostContract,
    LogLevel,
    LuaLoader,
    ManifestData,
    NativeLoader,
    PolyplugError,
    ReloadPhase,
    RuntimeBuilder,
    RuntimeConfig,
    bundle_id,
    ffi,
    guest_contract_id,
    host_contract_id,
    lib,
)


class ParityCounter:
    """The state of one instance of the parity host contract (count() increments it)."""

    def __init__(self) -> None:
        self.count = 0


class ScenarioError(Exception):
    """The script itself is wrong (the C driver exits with status 2 for these)."""


# ── escaping (must match sb_escape in parity_driver.c) ───────────────────────


def escape(data: bytes | str, quoted: bool = True) -> str:
    """Printable ASCII as is (but ``\\`` and ``"``), ``\\n \\t \\r``, else ``\\xHH``."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    out = []
    for c in data:
        if c == 0x5C:
            out.append("\\\\")
        elif c == 0x22:
            out.append('\\"')
        elif c == 0x0A:
            out.append("\\n")
        elif c == 0x09:
            out.append("\\t")
        elif c == 0x0D:
            out.append("\\r")
        elif c < 0x20 or c > 0x7E or (not quoted and c == 0x20):
            out.append(f"\\x{c:02x}")
        else:
            out.append(chr(c))
    text = "".join(out)
    return f'"{text}"' if quoted else text


def view_bytes(sv: Any) -> Optional[bytes]:
    """A StringView's bytes; None for a NULL pointer."""
    if sv.ptr == ffi.NULL:
        return None
    return bytes(ffi.buffer(sv.ptr, sv.len)) if sv.len else b""


# ── driver state ─────────────────────────────────────────────────────────────


@dataclass
class HandleSlot:
    handle: GuestContractHandle = GuestContractHandle.null()
    iface: Any = None


@dataclass
class InstanceSlot:
    inst: Any = None
    iface: Any = None
    dead: bool = False


@dataclass
class BundleSlot:
    dir: str
    file: str
    version: str
    loader: str


@dataclass
class State:
    rt: Any = None
    loader: Optional[LuaLoader] = None
    handles: dict[str, HandleSlot] = field(default_factory=dict)
    instances: dict[str, InstanceSlot] = field(default_factory=dict)
    arenas: dict[str, Any] = field(default_factory=dict)
    bundles: dict[str, BundleSlot] = field(default_factory=dict)


LEVELS = {lvl.name: lvl for lvl in LogLevel}
PHASES = {0: "Preparing", 1: "Reloaded", 2: "Failed", 3: "Unloading"}


class Interpreter:
    """Runs one scenario; ``lines`` collects the transcript."""

    def __init__(self, root: Path, work: Path, emit: Callable[[str], None]) -> None:
        self.root = str(root)
        self.work = str(work)
        self._emit = emit
        self.s = State()
        self.lineno = 0

    # ── output ──

    def emit(self, line: str) -> None:
        if self.work:
            line = line.replace(self.work, "$WORK")
        if self.root:
            line = line.replace(self.root, "$ROOT")
        self._emit(line)

    def on_log(self, level: LogLevel, scope: str, message: str) -> None:
        first = message.split("\n", 1)[0]
        self.emit(f"log {LogLevel(level).name} {escape(scope, quoted=False)} {escape(first)}")

    def on_reload(self, phase: ReloadPhase) -> None:
        line = (f"phase {PHASES.get(int(phase.type), '?')} {escape(phase.bundle_name, False)}"
                f" id={phase.bundle_id:016x}")
        if phase.reason is not None:
            line += f" reason={escape(phase.reason)}"
        self.emit(line)

    @staticmethod
    def error_text(exc: BaseException) -> str:
        return f" error {type(exc).__name__} {escape(str(exc))}"

    # ── helpers ──

    def fail(self, msg: str) -> None:
        raise ScenarioError(f"line {self.lineno}: {msg}")

    def need_runtime(self) -> Any:
        if self.s.rt is None:
            self.fail("no runtime: start the scenario with `runtime`")
        return self.s.rt

    @property
    def host(self) -> Any:
        return self.need_runtime().host_api

    def close_runtime(self) -> None:
        for arena in self.s.arenas.values():
            lib.pp_arena_free(arena)
        self.s.arenas.clear()
        self.s.handles.clear()
        self.s.instances.clear()
        self.s.bundles.clear()
        if self.s.rt is not None:
            self.s.rt.close()
        self.s.rt = None
        self.s.loader = None

    def split(self, tokens: list[str], npos: int, known: tuple[str, ...], usage: str
              ) -> tuple[list[str], dict[str, str]]:
        first_opt = next((i for i, t in enumerate(tokens) if "=" in t), len(tokens))
        if any("=" not in t for t in tokens[first_opt:]):
            self.fail("positional argument after options")
        pos = tokens[:first_opt]
        if len(pos) != npos:
            self.fail(f"usage: {usage}")
        opts = {}
        for t in tokens[first_opt:]:
            k, _, v = t.partition("=")
            if k not in known:
                self.fail(f"unknown option {t!r}")
            if k not in opts:  # first wins, like the C driver
                opts[k] = v
        return pos, opts

    @staticmethod
    def u(text: str, bits: int = 32) -> int:
        if text.startswith("-"):
            raise ScenarioError(f"not an unsigned number: {text!r}")
        v = int(text, 0)
        if v >= 1 << bits:
            raise ScenarioError(f"out of range: {text!r}")
        return v

    # ── commands ──

    def cmd_runtime(self, t: list[str]) -> None:
        _, o = self.split(t, 0, ("hot_reload", "log", "create", "compat", "native"),
                          "runtime [hot_reload=0|1] [log=<Level>] [create=new|api] "
                          "[compat=strict|relaxed|yolo] [native=0|1]")
        if self.s.rt is not None:
            self.fail("a runtime is already open")
        modes = {"strict": Compatibility.Strict, "relaxed": Compatibility.Relaxed,
                 "yolo": Compatibility.Yolo}
        if o.get("compat", "strict") not in modes:
            self.fail("compat must be strict, relaxed or yolo")
        cfg = RuntimeConfig(
            compatibility=modes[o.get("compat", "strict")],
            hot_reload_enabled=self.u(o.get("hot_reload", "0")) != 0,
            log=self.on_log,
            log_max_level=LEVELS[o.get("log", "Trace")],
            on_reload=self.on_reload,
        )
        create = o.get("create", "new")
        loader = LuaLoader()
        self.s.loader = loader
        loaders: list[Any] = [loader]
        if self.u(o.get("native", "0")):
            loaders.append(NativeLoader())
        if create == "new":
            self.s.rt = RuntimeBuilder().config(cfg)
            for each in loaders:
                self.s.rt = self.s.rt.loader(each)
            self.s.rt = self.s.rt.build()
            self.emit("runtime ok")
        elif create == "api":
            # HostApi.register_loader takes one reference of its own
            self.s.rt = RuntimeBuilder().config(cfg).build()
            host = self.s.rt.host_api
            err = ffi.new("AbiError *")
            for each in loaders:
                if err.code == 0:
                    host.register_loader(host, lib.pp_loader_retain(each._c_loader()), err)
            self.emit("runtime ok" if err.code == 0 else f"runtime register_loader code={err.code}")
        else:
            self.fail("create must be new or api")

    def cmd_close(self, t: list[str]) -> None:
        self.split(t, 0, (), "close")
        self.need_runtime()
        self.close_runtime()
        self.emit("close ok")

    def cmd_write(self, t: list[str], lines: list[str]) -> None:
        (path,), _ = self.split(t, 1, (), "write <path> (then lines up to END)")
        body = []
        while True:
            if not lines:
                self.fail("write: missing END")
            self.lineno += 1
            line = lines.pop(0)
            if line == "END":
                break
            body.append(line + "\n")
        data = "".join(body).encode("utf-8", "surrogateescape")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
        self.emit(f"write {path} bytes={len(data)}")

    def cmd_copy(self, t: list[str]) -> None:
        (src, dst), _ = self.split(t, 2, (), "copy <src> <dst>")
        tmp = Path(dst + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(Path(src).read_bytes())
        tmp.replace(dst)  # a new file, as a build writes one
        self.emit(f"copy {dst} ok")

    def cmd_manifest(self, t: list[str]) -> None:
        (d, name), o = self.split(t, 2, ("file", "version"),
                                  "manifest <dir> <name> [file=] [version=]")
        text = (f'id = {bundle_id(name)}\nname = "{name}"\nloader = "lua"\n'
                f'file = "{o.get("file", "bundle.lua")}"\n')
        if "version" in o:
            text += f'version = "{o["version"]}"\n'
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / "manifest.toml").write_bytes(text.encode())
        self.emit(f"manifest {d} {name}")

    def cmd_load(self, t: list[str]) -> None:
        (name, d), o = self.split(t, 2, ("file", "version", "loader", "source", "via"),
                                  "load <name> <dir> [file=] [version=] [loader=] [source=] [via=]")
        rt = self.need_runtime()
        slot = BundleSlot(d, o.get("file", "bundle.lua"), o.get("version", ""),
                          o.get("loader", "lua"))
        self.s.bundles[name] = slot
        manifest = ManifestData(id=bundle_id(name), name=name, loader=slot.loader,
                                file=slot.file, path=Path(d), version=slot.version)
        source = o.get("source", "path")
        if source == "path":
            src = BundleSource.Path(d)
        elif source == "code":
            src = BundleSource.Code((Path(d) / slot.file).read_bytes().decode("utf-8"))
        elif source == "bytes":
            src = BundleSource.Bytes((Path(d) / slot.file).read_bytes())
        elif source.startswith("hex:"):
            src = BundleSource.Bytes(bytes.fromhex(source[4:]))
        else:
            self.fail(f"unknown source {source!r}")
        via = o.get("via", "runtime")
        try:
            if via == "runtime":
                rt.load_bundle_from_source(manifest, src)
            elif via == "loader":
                self.s.loader.load(manifest, src, rt)
            else:
                self.fail("via must be runtime or loader")
        except PolyplugError as exc:
            self.emit(f"load {name}{self.error_text(exc)}")
        else:
            self.emit(f"load {name} ok")

    def cmd_find(self, t: list[str]) -> None:
        (h, contract, major), o = self.split(t, 3, ("min", "by"),
                                             "find <h> <contract> <major> [min=] [by=]")
        reg = self.need_runtime().registry()
        cid = guest_contract_id(contract, self.u(major))
        minimum = self.u(o.get("min", "0"))
        try:
            if "by" in o:
                handle = reg.find_by_bundle(bundle_id(o["by"]), cid, minimum)
            else:
                handle = reg.find(cid, minimum)
        except polyplug.PluginNotFound:
            handle = GuestContractHandle.null()
        self.s.handles[h] = HandleSlot(handle, None)
        if handle.is_null():
            self.emit(f"find {h} notfound")
        else:
            self.emit(f"find {h} index={handle.index} gen={handle.generation}")

    def cmd_findall(self, t: list[str]) -> None:
        (contract, major), o = self.split(t, 2, ("min",), "findall <contract> <major> [min=]")
        reg = self.need_runtime().registry()
        found = reg.find_all(guest_contract_id(contract, self.u(major)), self.u(o.get("min", "0")))
        items = "".join(f" {h.index}:{h.generation}" for h in found)
        self.emit(f"findall {contract}@{major} n={len(found)}{items}")

    def handle(self, name: str) -> HandleSlot:
        if name not in self.s.handles:
            self.fail(f"unknown handle {name!r}")
        return self.s.handles[name]

    def cmd_resolve(self, t: list[str]) -> None:
        (h,), _ = self.split(t, 1, (), "resolve <h>")
        rt = self.need_runtime()
        slot = self.handle(h)
        try:
            iface = rt.registry().resolve_guest_contract(slot.handle)
        except PolyplugError as exc:
            self.emit(f"resolve {h}{self.error_text(exc)}")
            return
        slot.iface = iface
        v = iface.contract_version
        self.emit(f"resolve {h} ok cid={iface.contract_id:016x} v={v.major}.{v.minor}.{v.patch}"
                  f" dispatch={iface.dispatch_type} fns={lib.pp_function_count(iface)}")

    def build_args(self, spec: str) -> tuple[Any, list[Any]]:
        """A struct-like argument block (natural alignment), and the cdata to keep alive."""
        block = ffi.new("uint64_t[64]")
        raw = ffi.buffer(block)
        keep: list[Any] = [block]
        size = 0

        def slot(n: int, align: int) -> int:
            nonlocal size
            off = (size + align - 1) & ~(align - 1)
            if off + n > len(raw):
                self.fail("argument block too large")
            size = off + n
            return off

        for item in spec.split(","):
            if not item:
                continue  # strtok skips empty items
            typ, sep, val = item.partition(":")
            if not sep:
                self.fail(f"argument {item!r} is not type:value")
            if typ == "u32":
                struct.pack_into("<I", raw, slot(4, 4), self.u(val))
            elif typ == "i32":
                struct.pack_into("<i", raw, slot(4, 4), int(val, 0))
            elif typ == "u64":
                struct.pack_into("<Q", raw, slot(8, 8), self.u(val, 64))
            elif typ == "i64":
                struct.pack_into("<q", raw, slot(8, 8), int(val, 0))
            elif typ == "f64":
                struct.pack_into("<d", raw, slot(8, 8), float(val))
            elif typ == "str":
                data = percent_decode(val)
                off = slot(16, 8)
                if data:
                    buf = ffi.new("uint8_t[]", data)
                    keep.append(buf)
                    addr = int(ffi.cast("uintptr_t", buf))
                else:
                    addr = 0
                struct.pack_into("<QQ", raw, off, addr, len(data))
            else:
                self.fail(f"unknown argument type {typ!r}")
        return block, keep

    def cmd_call(self, t: list[str]) -> None:
        (h, fn_text), o = self.split(t, 2, ("inst", "arena", "args", "out", "via"),
                                     "call <h> <fn> [inst=] [arena=] [args=] [out=] [via=]")
        self.need_runtime()
        slot = self.handle(h)
        fn = self.u(fn_text)
        line = f"call {h} fn={fn}"
        iface = slot.iface
        if iface is None:
            self.emit(line + " noiface")
            return
        data, cid = ffi.NULL, 0
        iname = o.get("inst")
        if iname is not None and iname.startswith("raw:"):
            data, cid = ffi.cast("void *", self.u(iname[4:], 64)), iface.contract_id
        elif iname is not None:
            if iname not in self.s.instances:
                self.fail(f"unknown instance {iname!r}")
            inst = self.s.instances[iname].inst
            data, cid = inst.data, inst.contract_id
        arena = ffi.NULL
        if "arena" in o:
            if o["arena"] not in self.s.arenas:
                self.fail(f"unknown arena {o['arena']!r}")
            arena = self.s.arenas[o["arena"]]
        spec = o.get("args", "null")
        args, keep = (ffi.NULL, []) if spec == "null" else self.build_args(spec)
        otype = o.get("out")
        out = ffi.new("uint64_t[4]") if otype else ffi.NULL
        err = ffi.new("AbiError *")
        via = o.get("via", "vm")
        if via == "vm":
            inst = ffi.new("GuestContractInstance *")
            inst.data, inst.contract_id = data, cid
            vm = iface.dispatch.vm
            vm.call(vm.loader_data, inst[0], fn, args, out, arena, err)
        elif via == "pp_call":
            lib.pp_call(iface, data, cid, fn, args, out, arena, err)
        elif via == "handle":  # checks the handle, resets the arena first
            rt = lib.pp_runtime_from_host(self.host)
            lib.pp_call_handle(rt, slot.handle.index, slot.handle.generation, data, cid, fn,
                               args, out, arena, err)
        elif via == "native":  # the native formula: the library's own function
            if iface.dispatch_type != polyplug.DispatchType.Native:
                self.fail("via=native on a VM interface")
            if fn >= iface.dispatch.native.function_count:
                err.code = polyplug.AbiErrorCode.FunctionNotAvailable
            else:
                inst = ffi.new("GuestContractInstance *")
                inst.data, inst.contract_id = data, cid
                native = ffi.cast("NativeGuestFn", iface.dispatch.native.functions[fn])
                native(inst[0], args, out, err)
        else:
            self.fail("via must be vm, pp_call, handle or native")
        del keep
        line += f" code={err.code}"
        if otype:
            raw = ffi.buffer(out)
            if otype == "u32":
                value = str(struct.unpack_from("<I", raw)[0])
            elif otype == "i32":
                value = str(struct.unpack_from("<i", raw)[0])
            elif otype == "u64":
                value = str(struct.unpack_from("<Q", raw)[0])
            elif otype == "i64":
                value = str(struct.unpack_from("<q", raw)[0])
            elif otype == "f64":
                value = format(struct.unpack_from("<d", raw)[0], ".17g")
            elif otype == "sv":
                sv = ffi.cast("StringView *", out)[0]
                got = view_bytes(sv)
                if got is None and sv.len:
                    value = f"<null len={sv.len}>"
                else:
                    value = escape(got or b"")
                if arena == ffi.NULL and sv.ptr != ffi.NULL:
                    host = self.host  # host->alloc'd bytes: ours to free
                    host.free(host, ffi.cast("uint8_t *", sv.ptr), sv.len, 1)
            elif otype == "str":  # a StringView the callee keeps owning
                value = escape(view_bytes(ffi.cast("StringView *", out)[0]) or b"")
            else:
                self.fail(f"unknown out type {otype!r}")
            line += f" out={value}"
        msg = view_bytes(err.message)
        if msg:
            line += f" msg={escape(msg)}"
        self.emit(line)

    def cmd_instance(self, t: list[str]) -> None:
        (i, h), _ = self.split(t, 2, (), "instance <i> <h>")
        host = self.host
        slot = self.handle(h)
        if slot.iface is None:
            self.fail(f"instance: handle {h!r} has no resolved interface")
        inst = ffi.new("GuestContractInstance *")
        host.create_guest_instance(host, slot.iface, ffi.NULL, inst)
        value = ffi.new("GuestContractInstance *", (inst.data, inst.contract_id))[0]
        self.s.instances[i] = InstanceSlot(value, slot.iface, inst.data == ffi.NULL)
        if inst.data != ffi.NULL:
            data = int(ffi.cast("uintptr_t", inst.data))
            ok = int(inst.contract_id == slot.iface.contract_id)
            self.emit(f"instance {i} data={data} cid_ok={ok}")
        else:
            self.emit(f"instance {i} null")

    def cmd_destroy(self, t: list[str]) -> None:
        (i,), _ = self.split(t, 1, (), "destroy <i>")
        host = self.host
        if i not in self.s.instances:
            self.fail(f"unknown instance {i!r}")
        slot = self.s.instances[i]
        if slot.dead:
            self.emit(f"destroy {i} skipped")
            return
        host.destroy_guest_instance(host, slot.iface, slot.inst)
        slot.dead = True
        self.emit(f"destroy {i} ok")

    def cmd_arena(self, t: list[str]) -> None:
        (a, cap), _ = self.split(t, 2, (), "arena <a> <capacity>")
        host = self.host
        if a in self.s.arenas:
            self.fail(f"arena {a!r} exists")
        arena = lib.pp_arena_new(host, self.u(cap, 64))
        if arena == ffi.NULL:
            self.fail("pp_arena_new failed")
        self.s.arenas[a] = arena
        self.emit(f"arena {a} cap={self.u(cap, 64)}")

    def arena(self, name: str) -> Any:
        if name not in self.s.arenas:
            self.fail(f"unknown arena {name!r}")
        return self.s.arenas[name]

    def cmd_arena_used(self, t: list[str]) -> None:
        (a,), _ = self.split(t, 1, (), "arena_used <a>")
        self.emit(f"arena_used {a} {lib.pp_arena_used(self.arena(a))}")

    def cmd_arena_reset(self, t: list[str]) -> None:
        (a,), _ = self.split(t, 1, (), "arena_reset <a>")
        lib.pp_arena_reset(self.arena(a))
        self.emit(f"arena_reset {a}")

    def cmd_reload(self, t: list[str]) -> None:
        (name,), _ = self.split(t, 1, (), "reload <name>")
        rt = self.need_runtime()
        if name not in self.s.bundles:
            self.fail(f"unknown bundle {name!r}")
        try:
            rt.reload_bundle(self.s.bundles[name].dir)
        except PolyplugError as exc:
            self.emit(f"reload {name}{self.error_text(exc)}")
        else:
            self.emit(f"reload {name} ok")

    def path_op(self, t: list[str], reload: bool) -> None:
        cmd = "reloadpath" if reload else "loadpath"
        (name, path), o = self.split(t, 2, ("via",), f"{cmd} <name> <path> [via=runtime|hostapi]")
        rt = self.need_runtime()
        via = o.get("via", "runtime")
        if via == "hostapi":  # through the Python driver's hook into Runtime.load_bundle
            host = rt.host_api
            raw = path.encode("utf-8", "surrogateescape")
            err = ffi.new("AbiError *")
            (host.reload_bundle if reload else host.load_bundle)(host, raw, len(raw), err)
            self.emit(f"{cmd} {name} code={err.code}")
            return
        if via != "runtime":
            self.fail("via must be runtime or hostapi")
        try:
            if reload:
                rt.reload_bundle(path)
            else:
                rt.load_bundle(path)
        except PolyplugError as exc:
            self.emit(f"{cmd} {name}{self.error_text(exc)}")
        else:
            self.emit(f"{cmd} {name} ok")

    def cmd_loadpath(self, t: list[str]) -> None:
        self.path_op(t, reload=False)

    def cmd_reloadpath(self, t: list[str]) -> None:
        self.path_op(t, reload=True)

    def cmd_unload(self, t: list[str]) -> None:
        (name,), _ = self.split(t, 1, (), "unload <name>")
        rt = self.need_runtime()
        try:
            rt.unload_bundle(bundle_id(name))
        except PolyplugError as exc:
            self.emit(f"unload {name}{self.error_text(exc)}")
        else:
            self.emit(f"unload {name} ok")

    def cmd_bundles(self, t: list[str]) -> None:
        self.split(t, 0, (), "bundles")
        ids = sorted(self.need_runtime().list_bundles())
        self.emit(f"bundles n={len(ids)}" + "".join(f" {i:016x}" for i in ids))

    def cmd_hostlog(self, t: list[str]) -> None:
        if len(t) < 2:
            self.fail("usage: hostlog <level> <scope> <message...>")
        host = self.host
        keep: list[Any] = []
        scope = text_view(t[1].encode(), keep)
        msg = text_view(" ".join(t[2:]).encode(), keep)
        host.log(host, self.u(t[0]), scope, msg)

    def cmd_last_error(self, t: list[str]) -> None:
        self.split(t, 0, (), "last_error")
        host = self.host
        n = host.get_error_len(host)
        buf = ffi.new("uint8_t[]", max(n, 1))
        got = host.get_last_error(host, buf, max(n, 1))
        self.emit(f"last_error {escape(bytes(ffi.buffer(buf, min(got, n))))}")

    def cmd_revision(self, t: list[str]) -> None:
        self.split(t, 0, (), "revision")
        self.emit(f"revision {self.need_runtime().revision()}")

    # ── host contracts: the parity host (parity_driver.c provides the same in C) ──

    def cmd_provide(self, t: list[str]) -> None:
        (name, major), o = self.split(t, 2, ("minor", "instances", "replace"),
                                      "provide <name> <major> [minor=] [instances=0|1] "
                                      "[replace=0|1]")
        rt = self.need_runtime()
        per_instance = self.u(o.get("instances", "0")) != 0
        contract = HostContract(name, self.u(major), minor=self.u(o.get("minor", "0")),
                                factory=ParityCounter if per_instance else None)
        shared = ParityCounter()  # the singleton's counter

        def first(*args: Any) -> tuple[Any, ...]:  # drop the instance of a per-instance call
            return args[1:] if per_instance else args

        def add(*args: Any) -> int:
            a, b = first(*args)
            return (a + b) & 0xFFFFFFFF

        def greet(*args: Any) -> str:
            return "hello, " + first(*args)[0]

        def fail(*args: Any) -> None:
            raise ValueError(first(*args)[0])

        def count(*args: Any) -> int:
            counter = args[0] if per_instance else shared
            counter.count += 1
            return counter.count

        contract.add("add", add, ["u32", "u32"], "u32")
        contract.add("greet", greet, ["string"], "string")
        contract.add("fail", fail, ["string"])
        contract.add("count", count, [], "u32")
        try:
            rt.provide_host_contract(contract, replace=self.u(o.get("replace", "0")) != 0)
        except PolyplugError as exc:
            self.emit(f"provide {name}@{major}{self.error_text(exc)}")
        else:
            self.emit(f"provide {name}@{major} ok")

    def cmd_withdraw(self, t: list[str]) -> None:
        (name, major), _ = self.split(t, 2, (), "withdraw <name> <major>")
        done = self.need_runtime().withdraw_host_contract(name, self.u(major))
        self.emit(f"withdraw {name}@{major} {int(done)}")

    def cmd_hostcall(self, t: list[str]) -> None:
        (name, major, fn_text), o = self.split(t, 3, ("min", "args", "out", "inst"),
                                               "hostcall <name> <major> <fn> [min=] [args=] "
                                               "[out=] [inst=get|null]")
        self.need_runtime()
        host = self.host
        cid = host_contract_id(name, self.u(major))
        minimum = self.u(o.get("min", "0"))
        fn = self.u(fn_text)
        line = f"hostcall {name}@{major} fn={fn}"
        iface = host.resolve_host_contract_interface(host, cid, minimum)
        if iface == ffi.NULL:
            self.emit(line + " noiface")
            return
        if iface.dispatch_type != 0 or fn >= lib.PP_HOST_MAX_FUNCTIONS:
            self.fail(f"hostcall: a native host contract and fn < {lib.PP_HOST_MAX_FUNCTIONS}")
        get = o.get("inst", "get") == "get"
        inst = host.get_host_contract(host, cid, minimum) if get else \
            ffi.new("HostContractInstance *")[0]
        spec = o.get("args", "null")
        args, keep = (ffi.NULL, []) if spec == "null" else self.build_args(spec)
        otype = o.get("out")
        out = ffi.new("uint64_t[4]") if otype else ffi.NULL
        err = ffi.new("AbiError *")
        f = ffi.cast("NativeHostFn", iface.dispatch.native.functions[fn])
        f(inst.data, args, out, err)
        del keep
        line += f" code={err.code}"
        if otype == "u32":
            line += f" out={struct.unpack_from('<I', ffi.buffer(out))[0]}"
        elif otype == "sv":
            line += f" out={escape(view_bytes(ffi.cast('StringView *', out)[0]) or b'')}"
        elif otype:
            self.fail("hostcall: out must be u32 or sv")
        msg = view_bytes(err.message)
        if msg:
            line += f" msg={escape(msg)}"
        if get and not iface.singleton:
            iface.destroy_instance(iface, inst)
        self.emit(line)

    # ── the loop ──

    def run(self, path: Path) -> None:
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # a final newline ends the last line; it is not an empty line
        self.emit(f"== scenario {path.stem}")
        try:
            while lines:
                self.lineno += 1
                raw = lines.pop(0).rstrip("\r\n ")
                line = raw.lstrip(" \t")
                if not line or line.startswith("#"):
                    continue
                line = line.replace("$ROOT", self.root).replace("$WORK", self.work)
                if line == "echo" or line.startswith("echo "):
                    self.emit(line)
                    continue
                tokens = line.split()
                cmd, rest = tokens[0], tokens[1:]
                if cmd == "write":
                    self.cmd_write(rest, lines)
                    continue
                handler = getattr(self, f"cmd_{cmd}", None)
                if handler is None:
                    self.fail(f"unknown command {cmd!r}")
                handler(rest)
        finally:
            self.close_runtime()


def percent_decode(text: str) -> bytes:
    out = bytearray()
    raw = text.encode("utf-8")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # %
            if i + 2 >= len(raw):
                raise ScenarioError(f"bad percent escape in {text!r}")
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def text_view(data: bytes, keep: list[Any]) -> Any:
    view = ffi.new("StringView *")
    if data:
        buf = ffi.new("uint8_t[]", data)
        keep.append(buf)
        view.ptr, view.len = buf, len(data)
    keep.append(view)
    return view[0]


def run_scenarios(paths: list[Path], root: Path, work_base: Path) -> list[str]:
    """Run the scenarios in order; returns the transcript lines (one list for all)."""
    lines: list[str] = []
    for path in paths:
        work = work_base / path.stem
        work.mkdir(parents=True, exist_ok=True)
        Interpreter(root, work, lines.append).run(path)
    return lines


def main(argv: Optional[list[str]] = None, out: TextIO = sys.stdout) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("scenarios", nargs="+", type=Path)
    ns = p.parse_args(argv)
    root = Path(os.path.abspath(ns.root))
    work = Path(os.path.abspath(ns.work))
    try:
        for line in run_scenarios(ns.scenarios, root, work):
            print(line, file=out)
    except ScenarioError as exc:
        print(f"pydriver: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
