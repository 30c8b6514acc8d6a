"""Run the native-loader protocol cases against upstream polyplug 0.1.3 or against ours.

Both sides get the same bundles (the plugins of tests/native_plugins.py, already built
into a directory) and the same calls (ctypes, through the interface address the
registry resolves), and print one JSON object: case -> outcome.  Paths in messages are
written relative to the probe's work directory as ``<work>``.

Recording upstream's behaviour (a separate venv with upstream's wheels; never the
project's, both packages are named ``polyplug``)::

    python -m venv build/upstream-venv
    build/upstream-venv/bin/pip install polyplug==0.1.3 polyplug-loaders-native==0.1.3
    POLYPLUG_LIB=$(ls build/upstream-venv/lib/python*/site-packages/polyplug/_native/*/libpolyplug.so) \\
        build/upstream-venv/bin/python tests/native/upstream_probe.py --impl upstream \\
        --plugins build/cbuild/native > tests/native/upstream-0.1.3.json

tests/test_native_upstream.py runs the cases against ours and compares with the record.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


MATH_ID = fnv1a(b"guest_contract:native.math@1")


class StringView(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class AbiError(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint32), ("message", StringView)]


class Instance(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("contract_id", ctypes.c_uint64)]


class Interface(ctypes.Structure):  # GuestContractInterface, native view of the union
    _fields_ = [("contract_id", ctypes.c_uint64), ("version", ctypes.c_uint32 * 3),
                ("dispatch_type", ctypes.c_uint32), ("create", ctypes.c_void_p),
                ("destroy", ctypes.c_void_p), ("function_count", ctypes.c_uint32),
                ("functions", ctypes.POINTER(ctypes.c_void_p))]


NativeFn = ctypes.CFUNCTYPE(None, Instance, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.POINTER(AbiError))


def call(address: int, fn_id: int, args: Any = None, out: Any = None) -> tuple[int, Any]:
    """fn ``fn_id`` of the interface at ``address`` (the native formula)."""
    iface = Interface.from_address(address)
    fn = NativeFn(iface.functions[fn_id])
    err = AbiError()
    fn(Instance(), ctypes.addressof(args) if args is not None else None,
       ctypes.addressof(out) if out is not None else None, ctypes.byref(err))
    return err.code, out


def tag(address: int) -> int:
    return call(address, 1, None, ctypes.c_uint32())[1].value


def add(address: int) -> int:
    return call(address, 0, (ctypes.c_uint32 * 2)(7, 35), ctypes.c_uint32())[1].value


def context(address: int) -> str:
    out = StringView()
    call(address, 8, None, out)
    return ctypes.string_at(out.ptr, out.len).decode()


# ── the two implementations behind one face ──────────────────────────────────


class Upstream:
    def __init__(self) -> None:
        import polyplug
        from polyplug_abi.abi import RuntimeConfig
        from polyplug_loaders_native import register_native_loader

        cfg = RuntimeConfig()
        cfg.hot_reload_enabled = True
        self.rt = polyplug.Runtime(config=cfg)
        register_native_loader(self.rt)

    def load(self, path: Path) -> None:
        self.rt.load_bundle(str(path))

    def reload(self, path: Path) -> None:
        self.rt.reload_bundle(str(path))

    def resolve(self) -> Optional[int]:
        h = self.rt.find_guest_contract(MATH_ID, 1)
        return None if h.index == 0xFFFFFFFF else int(self.rt.resolve_guest_contract(h))


class Ours:
    def __init__(self) -> None:
        import polyplug

        self.polyplug = polyplug
        cfg = polyplug.RuntimeConfig(hot_reload_enabled=True)
        self.rt = polyplug.RuntimeBuilder().config(cfg).loader(polyplug.NativeLoader()).build()

    def load(self, path: Path) -> None:
        self.rt.load_bundle(path)

    def reload(self, path: Path) -> None:
        self.rt.reload_bundle(path)

    def resolve(self) -> Optional[int]:
        try:
            h = self.rt.find_guest_contract(MATH_ID, 1)
        except self.polyplug.PluginNotFound:
            return None
        ptr = self.rt.resolve_guest_contract(h)
        return int(self.polyplug.ffi.cast("uintptr_t", ptr))


# ── the cases ────────────────────────────────────────────────────────────────


class Probe:
    def __init__(self, impl: Callable[[], Any], plugins: Path, work: Path) -> None:
        self.impl, self.plugins, self.work = impl, plugins, work
        self.results: dict[str, dict[str, Any]] = {}

    def bundle(self, case: str, variant: Optional[str], file: str = "libplug.so") -> Path:
        d = self.work / case / "b"
        d.mkdir(parents=True)
        (d / "manifest.toml").write_text(
            f'name = "{case}"\nid = {fnv1a(case.encode())}\nversion = "1.0.0"\n'
            f'loader = "native"\nfile = "{file}"\nprovides = ["native.math@1"]\n\n'
            '[function_count]\n"native.math@1" = 9\n')
        if variant:
            (d / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.plugins / f"{variant}.so", d / file)
        return d

    def text(self, value: str) -> str:
        return value.replace(str(self.work), "<work>")

    def run(self, case: str, fn: Callable[[Any], dict[str, Any]]) -> None:
        rt = self.impl()
        try:
            out = fn(rt)
        except Exception as exc:  # noqa: BLE001 - the outcome is the record
            out = {"error": self.text(str(exc))}
        out["registered"] = rt.resolve() is not None
        self.results[case] = out

    def load_case(self, case: str, variant: Optional[str], file: str = "libplug.so",
                  prepare: Optional[Callable[[Path], None]] = None) -> None:
        def body(rt: Any) -> dict[str, Any]:
            d = self.bundle(case, variant, file)
            if prepare:
                prepare(d)
            rt.load(d)
            address = rt.resolve()
            return {"loaded": True, "add": add(address), "context": self.text(context(address))}
        self.run(case, body)

    def all(self) -> dict[str, dict[str, Any]]:
        self.load_case("ok", "plug")
        self.load_case("subdir", "plug", "lib/libplug.so")
        for variant in ("plug_no_abi_symbol", "plug_abi_v2", "plug_no_init", "plug_init_code",
                        "plug_init_msg", "plug_null_entry", "plug_undefined"):
            self.load_case(variant, variant)
        self.load_case("missing", None)
        self.load_case("garbage", None, prepare=lambda d: (d / "libplug.so").write_text(
            "not a shared library\n" * 8))

        def link_inside(d: Path) -> None:
            shutil.copyfile(self.plugins / "plug.so", d / "real.so")
            (d / "libplug.so").symlink_to("real.so")

        self.load_case("symlink_inside", None, prepare=link_inside)
        self.load_case("symlink_outside", None, prepare=lambda d: (d / "libplug.so").symlink_to(
            self.plugins / "plug.so"))
        self.load_case("dotdot", None, "../outside.so", prepare=lambda d: shutil.copyfile(
            self.plugins / "plug.so", d.parent / "outside.so"))

        def reload(rt: Any) -> dict[str, Any]:
            d = self.bundle("reload", "plug")
            rt.load(d)
            old = rt.resolve()
            shutil.copyfile(self.plugins / "plug_v3.so", d / "libplug.so.new")
            os.replace(d / "libplug.so.new", d / "libplug.so")
            rt.reload(d)
            return {"tag_after_reload": tag(rt.resolve()), "old_pointer_tag": tag(old)}

        self.run("reload", reload)

        def twice(rt: Any) -> dict[str, Any]:
            d = self.bundle("twice", "plug")
            rt.load(d)
            rt.load(d)
            return {"loaded_twice": True}

        self.run("twice", twice)
        return self.results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("upstream", "ours"), required=True)
    ap.add_argument("--plugins", type=Path, required=True)
    ns = ap.parse_args()
    impl = Upstream if ns.impl == "upstream" else Ours
    with tempfile.TemporaryDirectory() as tmp:
        results = Probe(impl, ns.plugins.resolve(), Path(tmp).resolve()).all()
    json.dump(results, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
