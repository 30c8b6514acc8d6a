"""Command line: ``python -m polyplug <command>``.

    load <dir> [--json]   load a bundle, or every bundle in a directory (providers
                          before dependents), and report what each one registered
    call <dir> <contract>[@major] <fn> [args...] [--json] [--instance]
                          load the bundle(s) and call one function; arguments are
                          converted by the manifest's signature table (or by
                          ``--args u32,u32 --returns u32`` for a numeric function id)
    watch <dir> [--interval S] [--debounce S] [--max-reloads N] [--timeout S]
                          load the bundle(s) and hot-reload each one when its files
                          change, printing every reload phase
    new <name> [--dir PATH]
                          scaffold a bundle directory ``<name>/`` with a manifest, a
                          Lua entry file and a pytest test
    keygen <prefix>       write an Ed25519 key pair <prefix>.key / <prefix>.pub
    sign <dir> --key K    sign a bundle (writes <dir>/bundle.sig, upstream's format)
    verify <dir> [--key P ...]
                          check a bundle's signature (optionally pinned to keys)
    version               print polyplug's and LuaJIT's versions

Exit codes: 0 success, 1 failure (one ``error: <Type>: <message>`` line on stderr),
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import keyword
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from polyplug import _errors, signing
from polyplug._ffi import ffi, lib
from polyplug._version import __version__
from polyplug.ids import bundle_id
from polyplug.loader import LuaLoader
from polyplug.manifest import MANIFEST_NAME, ManifestData, read_manifest
from polyplug.runtime import (
    LogLevel,
    ReloadPhase,
    ReloadPhaseType,
    Runtime,
    RuntimeBuilder,
    RuntimeConfig,
)
from polyplug.signature import TYPES, FunctionSig, normalize_type, signature


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


# ── shared helpers of call / watch ───────────────────────────────────────────


class UsageError(Exception):
    """A command line that cannot work (exit code 2)."""


class _Failure(Exception):
    """A failure to report as ``error: <type_name>: <message>`` (exit code 1)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined with `` | ``."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _fail(exc: BaseException) -> int:
    """Print ``error: <Type>: <message>`` for ``exc``; return the exit code."""
    if isinstance(exc, UsageError):
        print(f"error: UsageError: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    name = exc.type_name if isinstance(exc, _Failure) else type(exc).__name__
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    print(f"error: {name}: {_one_line(message) or name}", file=sys.stderr)
    return 1


_LOG_LEVELS = {"off": None, "error": LogLevel.Error, "warn": LogLevel.Warn,
               "info": LogLevel.Info, "debug": LogLevel.Debug, "trace": LogLevel.Trace}


def _build_runtime(log: Any, log_level: Optional[LogLevel], hot_reload: bool = False,
                   on_reload: Any = None) -> Runtime:
    config = RuntimeConfig(hot_reload_enabled=hot_reload, on_reload=on_reload, log=log,
                           log_max_level=log_level if log_level is not None else LogLevel.Warn)
    return RuntimeBuilder().config(config).loader(LuaLoader()).build()


# ── call ─────────────────────────────────────────────────────────────────────

_INT_RANGES = {t: ((0, 2 ** int(t[1:]) - 1) if t[0] == "u" else
                   (-(2 ** (int(t[1:]) - 1)), 2 ** (int(t[1:]) - 1) - 1))
               for t in TYPES if t[0] in "ui"}
_F32_MAX = 3.4028234663852886e38
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_FN_ID = re.compile(r"^(0|[1-9][0-9]*|0[xX][0-9a-fA-F]+)$")


def convert_arg(type_name: str, text: str, where: str) -> Any:
    """The Python value for command-line argument ``text`` of type ``type_name``.

    Integers are decimal (or ``0x``/``0o``/``0b`` prefixed, ``_`` separators allowed)
    and range-checked; floats are anything ``float()`` reads (``1.5``, ``1e-3``,
    ``inf``); booleans are ``true``/``false``/``1``/``0``; strings pass as they are
    (bytes the file system encoding cannot decode are passed through unchanged).
    Raises :class:`InvalidArgument` naming ``where``.
    """
    if type_name == "string":
        return text.encode("utf-8", "surrogateescape")
    if type_name == "bool":
        try:
            return _BOOLS[text.strip().lower()]
        except KeyError:
            raise _errors.InvalidArgument(
                f"{where}: {text!r} is not a bool (use true, false, 1 or 0)") from None
    if type_name in ("f32", "f64"):
        try:
            value = float(text)
        except ValueError:
            raise _errors.InvalidArgument(f"{where}: {text!r} is not a number") from None
        if type_name == "f32" and math.isfinite(value) and abs(value) > _F32_MAX:
            raise _errors.InvalidArgument(f"{where}: {text} is out of range for f32")
        return value
    lo, hi = _INT_RANGES[type_name]
    try:
        value = int(text, 10) if text.strip().lstrip("+-").isdigit() else int(text, 0)
    except ValueError:
        raise _errors.InvalidArgument(
            f"{where}: {text!r} is not an integer literal") from None
    if not lo <= value <= hi:
        raise _errors.InvalidArgument(
            f"{where}: {value} is out of range for {type_name} ({lo}..{hi})")
    return value


def _format_result(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse_contract(spec: str) -> tuple[str, Optional[int]]:
    name, sep, major = spec.partition("@")
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"bad contract {spec!r}: expected <name> or <name>@<major>")
    if not sep:
        return name, None
    if not re.fullmatch(r"0|[1-9][0-9]{0,9}", major) or int(major) > 0xFFFFFFFF:
        raise UsageError(f"bad contract {spec!r}: the major after '@' must be an integer "
                         "0..4294967295")
    return name, int(major)


def _pick_major(name: str, reports: Sequence[BundleReport]) -> int:
    """The highest major of ``name`` among the contracts the bundles registered."""
    majors = [int(c["contract"].rpartition("@")[2]) for r in reports for c in r.contracts
              if c["contract"].rpartition("@")[0] == name]
    if not majors:
        raise _errors.PluginNotFound(f"no loaded bundle provides contract {name!r}"
                                     + _load_failures(reports))
    return max(majors)


def _load_failures(reports: Sequence[BundleReport]) -> str:
    failed = [r for r in reports if r.error]
    if not failed:
        return ""
    return (f" ({len(failed)} bundle(s) failed to load: " + "; ".join(
        f"{r.name or r.path}: {r.error_type}: {(r.error or '').splitlines()[0]}"
        for r in failed) + ")")


def _resolve_function(contract: Any, fn: str, types: Optional[Sequence[str]],
                      returns: Optional[str]) -> tuple[FunctionSig, bool]:
    """The signature to call: declared by name or id, or built from --args/--returns.

    The flag is False for a numeric id that nothing describes (then it is called with
    no arguments and no result).
    """
    declared = contract.functions
    explicit = types is not None or returns is not None
    if not _FN_ID.match(fn):
        if explicit:
            raise UsageError("--args/--returns describe a function given by numeric id; "
                             f"{fn!r} is a name (its types come from the signature table)")
        if fn not in declared:
            raise _Failure("UnknownFunction",
                           f"{contract.name}@{contract.major} declares no function {fn!r} "
                           f"(declared: {', '.join(sorted(declared)) or 'none'})")
        return declared[fn], True
    fn_id = int(fn, 0)
    if fn_id > 0xFFFFFFFF:
        raise UsageError(f"function id {fn} is out of range (0..4294967295)")
    if explicit:
        try:
            return signature(f"fn{fn_id}", fn_id, tuple(types or ()), returns), True
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    for sig in declared.values():
        if sig.id == fn_id:
            return sig, True
    return signature(f"fn{fn_id}", fn_id), False


def _type_list(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [normalize_type(t) for t in names]
    except ValueError as exc:
        raise UsageError(f"--args: {exc}") from None


def _normalize_returns(text: Optional[str]) -> Optional[str]:
    if text is None or text in ("", "void", "none"):
        return None
    try:
        return normalize_type(text)
    except ValueError as exc:
        raise UsageError(f"--returns: {exc}") from None


def cmd_call(args: argparse.Namespace) -> int:
    try:
        return _call(args)
    except (UsageError, _Failure, _errors.PolyplugError, TypeError, ValueError,
            AttributeError, UnicodeError, OSError) as exc:
        return _fail(exc)


def _invoke(rt: Runtime, root: Path, args: argparse.Namespace, name: str,
            major: Optional[int], types: Optional[list[str]], returns: Optional[str],
            records: list[tuple[LogLevel, str, str]]) -> Any:
    """Load the bundles under ``root`` into ``rt`` and make the call; returns its result."""
    reports = load_all(rt, root)
    if major is None:
        major = _pick_major(name, reports)
    try:
        contract = rt.contract(name, major)
    except _errors.PluginNotFound as exc:
        raise _errors.PluginNotFound(f"no loaded bundle provides {name}@{major} ({exc})"
                                     + _load_failures(reports)) from None
    sig, described = _resolve_function(contract, args.fn, types, returns)
    if len(args.values) != len(sig.args):
        if not described:
            raise UsageError(
                f"function {sig.id} has no entry in the signature table of "
                f"{name}@{major}; give its types with --args TYPE,... [--returns TYPE]")
        raise TypeError(f"{sig.describe()} takes {len(sig.args)} argument(s), "
                        f"got {len(args.values)}")
    values = [convert_arg(t, text, f"argument {i + 1} ({t}) of {sig.name}")
              for i, (t, text) in enumerate(zip(sig.args, args.values))]
    try:
        if args.instance:
            with contract.instance() as inst:
                return inst.function(sig.id, sig.args, sig.returns)(*values)
        return contract.function(sig.id, sig.args, sig.returns)(*values)
    except _errors.GuestError as exc:
        if "see the runtime log" in str(exc):  # the factory's message went to the log
            detail = [m for lvl, _, m in records if lvl == LogLevel.Error]
            if detail:
                raise _errors.GuestError(detail[-1].splitlines()[0]) from None
        raise


def _call(args: argparse.Namespace) -> int:
    name, major = _parse_contract(args.contract)
    types, returns = _type_list(args.args), _normalize_returns(args.returns)
    if args.returns is not None and returns is None and types is None:
        types = []  # `--returns void`: an explicit "no arguments, no result"
    records: list[tuple[LogLevel, str, str]] = []
    level = _LOG_LEVELS[args.log]

    def log(lvl: LogLevel, scope: str, message: str) -> None:
        if level is not None and lvl <= level:
            print(f"[{lvl.name.lower()}] {scope}: {message}", file=sys.stderr)
        records.append((lvl, scope, message))

    root = Path(args.dir)
    if not find_bundles(root) or not root.exists():
        raise UsageError(f"no bundle (directory with {MANIFEST_NAME}) found in {root}")
    with _build_runtime(log, level if level is not None else LogLevel.Warn) as rt:
        result = _invoke(rt, root, args, name, major, types, returns, records)
    if args.json:
        print(json.dumps({"result": result}, ensure_ascii=False))
    elif result is not None:
        print(_format_result(result))
    return 0


# ── watch ────────────────────────────────────────────────────────────────────
#
# Change detection polls: every --interval seconds each bundle directory is walked
# with os.scandir and its files' (mtime, size) compared with the last snapshot.  That
# is portable and needs no dependency (inotify / FSEvents / ReadDirectoryChangesW
# would each need a third-party package or platform code); bundles are a handful of
# small files, so a walk costs microseconds.


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (mtime_ns, size)`` of every file under ``root``.

    Hidden entries (editor swap files, ``.git``) and ``__pycache__`` are skipped;
    symlinked directories are not followed (no loops).  Unreadable entries are
    left out rather than failing the watch.
    """
    out: dict[str, tuple[int, int]] = {}
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name == "__pycache__":
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file():
                        st = entry.stat()
                        out[os.path.relpath(entry.path, root)] = (st.st_mtime_ns, st.st_size)
                except OSError:
                    continue
    return out


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _say(label: str, text: str) -> None:
    """Print ``[HH:MM:SS] <label>: <text>``, extra lines of ``text`` indented."""
    first, *rest = str(text).splitlines() or [""]
    print(f"[{_stamp()}] {label}: {first}", flush=True)
    for line in rest:
        print(f"    {line}", flush=True)


class _Watcher:
    """The state of ``watch``: the runtime, the bundles, and what to print.

    The runtime's callbacks only queue their lines; the main loop prints them.  So a
    Ctrl-C never lands inside a callback (where it would be swallowed), and a
    callback running on another thread never interleaves with the main loop's output.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.current: Optional[str] = None  # label of the bundle being (re)loaded
        self.saw_failed = False
        self.stop = False  # set by SIGINT / SIGTERM
        self._lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        level = _LOG_LEVELS[args.log]
        self.rt = _build_runtime(self._log if level is not None else None,
                                 level, hot_reload=True, on_reload=self._on_reload)
        self.names: dict[Path, str] = {}
        self.ids: dict[Path, int] = {}

    def _queue(self, label: str, text: str) -> None:
        with self._lock:
            self._lines.append((label, text))

    def flush(self) -> None:
        """Print the queued lines."""
        with self._lock:
            lines, self._lines = self._lines, []
        for label, text in lines:
            _say(label, text)

    def _log(self, level: LogLevel, scope: str, message: str) -> None:
        self._queue(f"log {level.name.lower()} {scope}", message)

    def _on_reload(self, phase: ReloadPhase) -> None:
        label = phase.bundle_name or self.current or f"0x{phase.bundle_id:016x}"
        if phase.type == ReloadPhaseType.Failed:
            self.saw_failed = True
            self._queue(label, f"Failed: {phase.reason or 'unknown reason'}")
        else:
            self._queue(label, phase.type.name)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.stop = True

    def sleep(self, seconds: float) -> None:
        """Sleep, waking up early when a stop was requested."""
        end = time.monotonic() + seconds
        while not self.stop:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def load(self, root: Path) -> list[Path]:
        bundles = find_bundles(root)
        reports = load_all(self.rt, root)
        self.flush()
        for report in reports:
            path = Path(report.path)
            label = report.name or path.name
            self.names[path] = label
            if report.error:
                _say(label, f"Failed: {report.error_type}: {report.error}")
            else:
                self.ids[path] = bundle_id(report.name)
                provides = ", ".join(c["contract"] for c in report.contracts) or "no contracts"
                _say(label, f"Loaded {report.version} ({provides})")
        return bundles

    def reload(self, path: Path) -> bool:
        """Reload (or, if it never loaded, load) the bundle at ``path``; True on success."""
        label = self.current = self.names.get(path, path.name)
        self.saw_failed = False
        loaded = self.ids.get(path) in self.rt.list_bundles()
        try:
            if loaded:
                self.rt.reload_bundle(path)
            else:
                _say(label, "Loading")
                manifest = self.rt.load_bundle(path)
                self.ids[path] = manifest.id
                self.names[path] = manifest.name
                self._queue(manifest.name, "Loaded")
            return True
        except _errors.PolyplugError as exc:
            if not self.saw_failed:
                self._queue(label, f"Failed: {type(exc).__name__}: {exc}")
            if loaded:
                self._queue(label, "keeping the previous version")
            return False
        finally:
            self.current = None
            self.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.debounce < 0:
        return _fail(UsageError("--interval must be > 0 and --debounce >= 0"))
    root = Path(args.dir)
    if not root.exists() or not find_bundles(root):
        return _fail(UsageError(f"no bundle (directory with {MANIFEST_NAME}) found in {root}"))
    watcher = _Watcher(args)
    # Ctrl-C (SIGINT, even when the parent shell ignored it for a background job) and
    # SIGTERM ask the loop to stop; it finishes a reload in progress, then exits 0.
    previous = {sig: signal.signal(sig, watcher.request_stop)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bundles = watcher.load(root)
        snaps = {b: snapshot(b) for b in bundles}
        print(f"[{_stamp()}] watching {len(bundles)} bundle(s) in {root} (every "
              f"{args.interval:g} s, debounce {args.debounce:g} s); Ctrl-C to stop", flush=True)
        pending: dict[Path, float] = {}  # bundle -> when its files last changed
        attempts = 0
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while not watcher.stop:
            watcher.sleep(args.interval)
            watcher.flush()  # log records or phases from other threads
            if watcher.stop:
                break
            now = time.monotonic()
            for b in bundles:
                snap = snapshot(b)
                if snap != snaps[b]:
                    snaps[b] = snap
                    pending[b] = now
            for b in [b for b, t in pending.items() if now - t >= args.debounce]:
                del pending[b]
                watcher.reload(b)
                attempts += 1
                if args.max_reloads and attempts >= args.max_reloads:
                    print(f"[{_stamp()}] stopping after {attempts} reload(s)", flush=True)
                    return 0
            if deadline is not None and now >= deadline:
                print(f"[{_stamp()}] stopping: --timeout reached", flush=True)
                return 0
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        watcher.rt.close()
    print(f"[{_stamp()}] stopped", flush=True)
    return 0


# ── new ──────────────────────────────────────────────────────────────────────

_BUNDLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")

_SCAFFOLD_MANIFEST = '''\
# The {name} bundle.  `python -m polyplug load .` checks it; `python -m pytest` tests it.
name = "{name}"
id = {id}   # bundle_id("{name}"): FNV-1a 64 of the name; must match `name`
version = "0.1.0"
loader = "lua"
file = "{name}.lua"
provides = ["{contract}@1"]

# How many functions each provided contract registers (ids 0..n-1).
[function_count]
"{contract}@1" = 1

# Argument and result types, so `rt.contract("{contract}", 1).hello("you")` and
# `python -m polyplug call . {contract}@1 hello you` can marshal values.
# Types: u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 bool string.
[contracts."{contract}@1".functions]
hello = {{ id = 0, args = ["string"], returns = "string" }}
'''

_SCAFFOLD_LUA = '''\
-- {contract}@1
--   fn 0  hello(name: string) -> string     "Hello, <name>!"
-- Every function is called as fn(self, args_ptr, out_ptr, arena_ptr, arena_alloc):
-- `self` is what the factory returned, the pointers are numbers (pg.ptr makes them
-- typed), and a Lua error fails the call with its message.
local pg = require("polyplug_guest")

local function hello(self, args_ptr, out_ptr, arena_ptr, arena_alloc)
    -- A string argument is a StringView {{ ptr, len }} in the argument block.
    local name = pg.read_string(pg.ptr(args_ptr, "const StringView *")[0])
    if name == "" then
        name = "world"
    end
    pg.log(self.host, pg.LogLevel.Debug, "guest.{name}", "hello " .. name)
    -- A string result must outlive the call: copy it into the caller's arena.
    pg.ptr(out_ptr, "StringView *")[0] =
        pg.alloc_string_arena(arena_alloc, arena_ptr, "Hello, " .. name .. "!")
end

function polyplug_init(_host, _ctx)
    return {{
        ["{contract}"] = {{
            contract_version = 1,
            plugin_name = "{name}",
            -- Builds the default instance at load, and one per created instance.
            factory = function(host) return {{ host = host }} end,
            functions = {{ [0] = hello }},
        }},
    }}, {{ code = 0 }}
end
'''

_SCAFFOLD_TEST = '''\
"""Tests of the {name} bundle: `python -m pytest` in this directory."""

from pathlib import Path

import pytest

import polyplug

BUNDLE = Path(__file__).resolve().parent


@pytest.fixture
def greet():
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        rt.load_bundle(BUNDLE)
        yield rt.contract("{contract}", 1)


def test_hello(greet):
    assert greet.hello("polyplug") == "Hello, polyplug!"


def test_hello_defaults_to_world(greet):
    assert greet.hello("") == "Hello, world!"


def test_hello_on_an_instance(greet):
    with greet.instance() as inst:
        assert inst.hello("instance") == "Hello, instance!"
'''


def cmd_new(args: argparse.Namespace) -> int:
    name = args.name
    if not _BUNDLE_NAME.match(name) or keyword.iskeyword(name):
        return _fail(UsageError(
            f"bad bundle name {name!r}: use a letter followed by letters, digits or '_' "
            "(at most 64 characters); it names the contract <name>.greet@1, the Lua file and "
            "the test module"))
    parent = Path(args.dir) if args.dir else Path.cwd()
    target = parent / name
    if target.exists() or target.is_symlink():
        return _fail(_Failure("FileExistsError", f"{target} already exists; not overwriting it"))
    contract = f"{name}.greet"
    fields = {"name": name, "id": bundle_id(name), "contract": contract}
    files = {
        MANIFEST_NAME: _SCAFFOLD_MANIFEST.format(**fields),
        f"{name}.lua": _SCAFFOLD_LUA.format(**fields),
        f"test_{name}.py": _SCAFFOLD_TEST.format(**fields),
    }
    try:
        parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
    except OSError as exc:
        return _fail(exc)
    try:
        for filename, text in files.items():
            (target / filename).write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)  # we created it: leave nothing half-made
        return _fail(exc)
    print(f"created {target}/")
    for filename in files:
        print(f"  {filename}")
    print(f"try:  python -m polyplug call {target} {contract}@1 hello you")
    print(f"test: python -m pytest {target}")
    return 0


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
    p = sub.add_parser("call", help="load bundles and call one function",
                       description="Load the bundle(s) at DIR and call one function of "
                       "CONTRACT.  Arguments are converted by the manifest's signature table "
                       "(u32 '7', f64 '1.5', bool true/false/1/0, string as-is); for a numeric "
                       "function id without a table entry give the types with --args/--returns. "
                       "Use -- before arguments that start with '-'.")
    p.add_argument("dir", help="a bundle directory, or a directory of bundles")
    p.add_argument("contract", help="contract name, optionally @major (default: the highest "
                   "major loaded)")
    p.add_argument("fn", help="function name (from the signature table) or numeric id")
    p.add_argument("values", nargs="*", metavar="arg", help="the function's arguments")
    p.add_argument("--args", metavar="TYPES", help="argument types for a numeric id, "
                   "comma-separated (e.g. u32,u32)")
    p.add_argument("--returns", metavar="TYPE", help="result type for a numeric id "
                   "(or void)")
    p.add_argument("--instance", action="store_true",
                   help="call on a fresh instance instead of the default one")
    p.add_argument("--json", action="store_true", help='print {"result": ...}')
    p.add_argument("--log", choices=list(_LOG_LEVELS), default="off",
                   help="print runtime and guest log records up to this level to stderr")
    p.set_defaults(func=cmd_call)
    p = sub.add_parser("watch", help="hot-reload bundles when their files change",
                       description="Load the bundle(s) at DIR and reload each one when its "
                       "files change (polling).  A failed reload keeps the previous version "
                       "serving; a bundle that failed its first load is loaded once its files "
                       "change.  Bundles added to DIR later are not picked up.  Ctrl-C stops.")
    p.add_argument("dir", help="a bundle directory, or a directory of bundles")
    p.add_argument("--interval", type=float, default=0.25, metavar="S",
                   help="seconds between polls (default 0.25)")
    p.add_argument("--debounce", type=float, default=0.3, metavar="S",
                   help="reload once the files were unchanged for this long (default 0.3)")
    p.add_argument("--max-reloads", type=int, default=0, metavar="N",
                   help="exit after N reload attempts (default: no limit)")
    p.add_argument("--once", dest="max_reloads", action="store_const", const=1,
                   help="exit after the first reload attempt (--max-reloads 1)")
    p.add_argument("--timeout", type=float, default=0, metavar="S",
                   help="exit after S seconds (default: run until Ctrl-C)")
    p.add_argument("--log", choices=list(_LOG_LEVELS), default="warn",
                   help="print runtime and guest log records up to this level (default warn)")
    p.set_defaults(func=cmd_watch)
    p = sub.add_parser("new", help="scaffold a new bundle directory")
    p.add_argument("name", help="bundle name; the contract is <name>.greet@1")
    p.add_argument("--dir", metavar="PATH", help="where to create <name>/ (default: .)")
    p.set_defaults(func=cmd_new)
    signing.add_cli_commands(sub)
    p = sub.add_parser("version", help="print versions")
    p.set_defaults(func=cmd_version)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m polyplug`` and the ``polyplug`` script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
