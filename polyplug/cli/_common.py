"""What the commands share: the error line, log printing, runtimes, finding and loading bundles.

Every failure a command reports is one line on stderr, ``error: <Type>: <message>``
(exit code 1; 2 for a usage error), whatever the error's own text looks like.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from polyplug import _errors
from polyplug._abi import LogLevel
from polyplug.loader import LuaLoader, NativeLoader
from polyplug.manifest import MANIFEST_NAME, ManifestData, read_manifest
from polyplug.runtime import BundleSource, Runtime, RuntimeBuilder, RuntimeConfig

LOG_LEVELS: dict[str, Optional[LogLevel]] = {
    "off": None, "error": LogLevel.Error, "warn": LogLevel.Warn, "info": LogLevel.Info,
    "debug": LogLevel.Debug, "trace": LogLevel.Trace,
}


class UsageError(Exception):
    """A command line that cannot work (exit code 2)."""


class Failure(Exception):
    """A failure to report as ``error: <type_name>: <message>`` (exit code 1)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined with `` | ``."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def error_line(type_name: str, message: str) -> str:
    """The one shape of every reported failure: ``error: <Type>: <message>``."""
    return f"error: {type_name}: {one_line(message) or type_name}"


def fail(exc: BaseException) -> int:
    """Print the error line for ``exc``; return the exit code (2 for usage errors)."""
    if isinstance(exc, UsageError):
        print(error_line("UsageError", str(exc)), file=sys.stderr)
        return 2
    name = exc.type_name if isinstance(exc, Failure) else type(exc).__name__
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    print(error_line(name, message), file=sys.stderr)
    return 1


def reports_failures(*kinds: type[BaseException]) -> Callable[[Callable[..., int]],
                                                              Callable[..., int]]:
    """Decorate a command function: an exception of ``kinds`` becomes its error line."""

    def wrap(fn: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> int:
            try:
                return fn(*args, **kwargs)
            except kinds as exc:
                return fail(exc)

        return command

    return wrap


def bundle_command(sub: Any, name: str, run: Callable[[argparse.Namespace], int], help: str,
                   description: Optional[str] = None,
                   log_default: str = "off") -> argparse.ArgumentParser:
    """The parser of a command taking a bundle directory, with ``--log LEVEL``."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("dir", help="a bundle directory, or a directory of bundles")
    p.add_argument("--log", choices=list(LOG_LEVELS), default=log_default,
                   help=f"print runtime and guest log records up to this level to stderr "
                   f"(default {log_default})")
    p.set_defaults(func=run)
    return p


def log_printer(level: Optional[LogLevel]) -> Callable[[LogLevel, str, str], None]:
    """A log callback printing ``[level] scope: message`` to stderr (nothing for None)."""

    def log(lvl: LogLevel, scope: str, message: str) -> None:
        if level is not None and lvl <= level:
            print(f"[{lvl.name.lower()}] {scope}: {message}", file=sys.stderr, flush=True)

    return log


def build_runtime(log: Callable[[LogLevel, str, str], None], level: Optional[LogLevel],
                  hot_reload: bool = False, on_reload: Any = None) -> Runtime:
    """A runtime with the Lua and native loaders whose records go to ``log`` (not to
    ``logging``: a command prints what it was asked to, and reports failures as error
    lines)."""
    config = RuntimeConfig(hot_reload_enabled=hot_reload, on_reload=on_reload, log=log,
                           log_max_level=level if level is not None else LogLevel.Error)
    return RuntimeBuilder().config(config).loader(LuaLoader()).loader(NativeLoader()).build()


def no_bundle(root: Path) -> UsageError:
    return UsageError(f"no bundle (directory with {MANIFEST_NAME}) found in {root}")


# ── finding and loading bundles ──────────────────────────────────────────────


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
    provides: list[str] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        self.error, self.error_type = str(exc), type(exc).__name__

    def error_message(self) -> str:
        """The error, naming the bundle when its own text does not."""
        text = self.error or ""
        label = self.name or self.path
        if (self.name and self.name in text) or self.path in text:
            return text
        return f"bundle `{label}`: {text}"


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


def contracts_of(rt: Runtime, bundle_id: int) -> list[dict[str, Any]]:
    """The contracts bundle ``bundle_id`` registered, each with its own function count."""
    return [{"contract": c.contract, "plugin": c.plugin, "contract_id": f"0x{c.contract_id:016x}",
             "functions": c.functions} for c in rt.bundle_contracts(bundle_id)]


def load_all(rt: Runtime, root: Path) -> list[BundleReport]:
    """Load every bundle under ``root``; one failure does not stop the others."""
    reports: dict[Path, BundleReport] = {}
    manifests: dict[Path, ManifestData] = {}
    for path in find_bundles(root):
        report = reports[path] = BundleReport(path=str(path))
        try:
            manifests[path] = read_manifest(path)
        except _errors.PolyplugError as exc:
            report.failed(exc)
    order, cyclic = load_order(manifests)
    for path, why in cyclic.items():
        reports[path].error, reports[path].error_type = why, "DependencyCycle"
    for path in order:
        m, report = manifests[path], reports[path]
        report.name, report.version, report.loader = m.name, m.version, m.loader
        report.provides = list(m.provides)
        start = time.perf_counter()
        try:
            rt.load_bundle_from_source(m, BundleSource.Path(m.path))
        except _errors.PolyplugError as exc:
            report.failed(exc)
            continue
        report.load_ms = (time.perf_counter() - start) * 1000
        report.contracts = contracts_of(rt, m.id)
    return list(reports.values())


def needs_host(report: BundleReport) -> bool:
    """Did the bundle fail only because it requires a host contract?  The CLI provides
    none (host contracts come from the program that embeds the runtime), so such a
    bundle is skipped, not failed."""
    return report.error_type == "HostContractNotFound"


def load_failures(reports: Sequence[BundleReport]) -> str:
    """`` (N bundle(s) failed to load: ...)`` for the failed reports, or ``""`` (bundles
    skipped for want of a host contract are not failures here)."""
    failed = [r for r in reports if r.error and not needs_host(r)]
    if not failed:
        return ""
    return (f" ({len(failed)} bundle(s) failed to load: " + "; ".join(
        f"{r.name or r.path}: {r.error_type}: {one_line(r.error or '')}" for r in failed) + ")")
