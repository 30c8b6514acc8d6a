"""Command line: ``python -m polyplug <command>``.

    load <dir> [--json]   load a bundle, or every bundle in a directory (providers
                          before dependents), and report what each one registered
    version               print polyplug's and LuaJIT's versions
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from polyplug import _errors
from polyplug._ffi import ffi, lib
from polyplug._version import __version__
from polyplug.loader import LuaLoader
from polyplug.manifest import MANIFEST_NAME, ManifestData, read_manifest
from polyplug.runtime import Runtime, RuntimeBuilder


@dataclass
class BundleReport:
    """What loading one bundle produced."""

    path: str
    name: str = ""
    version: str = ""
    loader: str = ""
    contracts: list[dict[str, Any]] = field(default_factory=list)
    load_ms: float = 0.0
    error: Optional[str] = None
    error_type: Optional[str] = None


def find_bundles(root: Path) -> list[Path]:
    """``root`` itself when it holds a manifest, else its subdirectories that do."""
    if (root / MANIFEST_NAME).is_file():
        return [root]
    if not root.is_dir():
        return [root]  # let load report the problem
    return sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def _bare(spec: str) -> str:
    return spec.split("@", 1)[0]


def load_order(manifests: dict[Path, ManifestData]) -> tuple[list[Path], dict[Path, str]]:
    """Providers before dependents (by contract name); bundles in a cycle are refused."""
    providers: dict[str, set[Path]] = {}
    for path, m in manifests.items():
        for spec in m.provides:
            providers.setdefault(_bare(spec), set()).add(path)
    needs = {
        path: {p for d in m.dependencies for p in providers.get(_bare(d.contract), ()) if p != path}
        for path, m in manifests.items()
    }
    order: list[Path] = []
    done: set[Path] = set()
    while len(done) < len(needs):
        ready = sorted(p for p in needs if p not in done and needs[p] <= done)
        if not ready:
            break
        order.extend(ready)
        done.update(ready)
    cyclic = {p: "dependency cycle detected involving: " +
              ", ".join(sorted(manifests[q].name for q in needs if q not in done))
              for p in needs if p not in done}
    return order, cyclic


def _contracts(rt: Runtime, bundle_id: int) -> list[dict[str, Any]]:
    cap = 64
    infos = ffi.new("pp_slot_info[]", cap)
    n = min(lib.pp_registry_bundle_slots(rt._ptr(), bundle_id, infos, cap), cap)
    host = rt.host_api
    out = []
    for i in range(n):
        info = infos[i]
        handle = host.find_guest_contract(host, info.contract_id, 0)
        iface = host.resolve_guest_contract(host, handle)
        count = lib.pp_function_count(iface) if iface != ffi.NULL else -1
        out.append({
            "contract": ffi.string(info.contract_name).decode(),
            "plugin": ffi.string(info.plugin_name).decode(),
            "contract_id": f"0x{info.contract_id:016x}",
            "functions": None if count < 0 else int(count),
        })
    return sorted(out, key=lambda c: c["contract"])


def load_all(rt: Runtime, root: Path) -> list[BundleReport]:
    """Load every bundle under ``root``; one failure does not stop the others."""
    reports: dict[Path, BundleReport] = {}
    manifests: dict[Path, ManifestData] = {}
    for path in find_bundles(root):
        report = reports[path] = BundleReport(path=str(path))
        try:
            manifests[path] = read_manifest(path)
        except _errors.PolyplugError as exc:
            report.error, report.error_type = str(exc), type(exc).__name__
    order, cyclic = load_order(manifests)
    for path, why in cyclic.items():
        reports[path].error, reports[path].error_type = why, "DependencyCycle"
    for path in order:
        m, report = manifests[path], reports[path]
        report.name, report.version, report.loader = m.name, m.version, m.loader
        start = time.perf_counter()
        try:
            rt.load_bundle_from_source(m, _source_for(m))
        except _errors.PolyplugError as exc:
            report.error, report.error_type = str(exc), type(exc).__name__
            continue
        report.load_ms = (time.perf_counter() - start) * 1000
        report.contracts = _contracts(rt, m.id)
    return list(reports.values())


def _source_for(m: ManifestData) -> Any:
    from polyplug.runtime import BundleSource

    return BundleSource.Path(m.path)


def _print_table(reports: Sequence[BundleReport]) -> None:
    rows = [("bundle", "version", "loader", "contract", "functions", "load ms")]
    for r in reports:
        if r.error:
            continue
        for i, c in enumerate(r.contracts or [{"contract": "-", "functions": None}]):
            first = i == 0
            rows.append((
                r.name if first else "", r.version if first else "", r.loader if first else "",
                c["contract"], "?" if c["functions"] is None else str(c["functions"]),
                f"{r.load_ms:.2f}" if first else "",
            ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    if len(rows) > 1:
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in reports:
        if r.error:
            label = r.name or r.path
            print(f"error: {label}: {r.error_type}: {r.error}", file=sys.stderr)
    ok = sum(1 for r in reports if not r.error)
    print(f"{ok} bundle(s) loaded, {len(reports) - ok} failed")


def cmd_load(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    with RuntimeBuilder().loader(LuaLoader()).build() as rt:
        reports = load_all(rt, root)
    if not reports:
        print(f"error: no bundle (directory with {MANIFEST_NAME}) found in {root}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.__dict__ for r in reports], indent=2))
    else:
        _print_table(reports)
    return 1 if any(r.error for r in reports) else 0


def cmd_version(_: argparse.Namespace) -> int:
    from polyplug import luajit_version

    print(f"polyplug {__version__} ({luajit_version()})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m polyplug",
                                     description="polyplug: Lua plugin bundles for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load", help="load bundles and report what they register")
    p.add_argument("dir", help="a bundle directory, or a directory of bundles")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_load)
    p = sub.add_parser("version", help="print versions")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m polyplug`` and the ``polyplug`` script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
