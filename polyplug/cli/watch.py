"""Load the bundle(s) at DIR and reload each one when its files change (polling).

A failed reload keeps the previous version serving; a bundle that failed its first load
is loaded once its files change.  Bundles added to DIR later are not picked up.  Ctrl-C
stops.  Exits 1 when the last reload attempt failed (the bundle on disk is broken).
"""

# Change detection polls: every --interval seconds each bundle directory is walked with
# os.scandir and its files' (mtime, size) compared with the last snapshot.  That is
# portable and needs no dependency (inotify / FSEvents / ReadDirectoryChangesW would each
# need a third-party package or platform code); bundles are a handful of small files, so
# a walk costs microseconds.

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

from polyplug import _errors
from polyplug._abi import LogLevel, ReloadPhase, ReloadPhaseType
from polyplug.cli._common import (
    LOG_LEVELS,
    UsageError,
    bundle_command,
    build_runtime,
    fail,
    find_bundles,
    load_all,
    no_bundle,
)
from polyplug.ids import bundle_id


def add_parser(sub: Any) -> None:
    p = bundle_command(sub, "watch", run, help="hot-reload bundles when their files change",
                       description=__doc__, log_default="warn")
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


class Watcher:
    """The state of ``watch``: the runtime, the bundles, and what to print.

    The runtime's callbacks only queue their lines; the main loop prints them.  So a
    Ctrl-C never lands inside a callback (where it would be swallowed), and a
    callback running on another thread never interleaves with the main loop's output.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.current: Optional[str] = None  # label of the bundle being (re)loaded
        self.saw_failed = False
        self.last_failed = False  # did the last reload attempt fail?
        self.stop = False  # set by SIGINT / SIGTERM
        self._lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.level = LOG_LEVELS[args.log]
        self.rt = build_runtime(self._log, self.level, hot_reload=True,
                                on_reload=self._on_reload)
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
        if self.level is not None and level <= self.level:
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
            self.last_failed = False
            return True
        except _errors.PolyplugError as exc:
            self.last_failed = True
            if not self.saw_failed:
                self._queue(label, f"Failed: {type(exc).__name__}: {exc}")
            if loaded:
                self._queue(label, "keeping the previous version")
            return False
        finally:
            self.current = None
            self.flush()

    def exit_code(self, why: str) -> int:
        """Print why the watch stops; 1 when the last reload attempt failed."""
        if self.last_failed:
            why += "; the last reload failed"
        print(f"[{_stamp()}] {why}", flush=True)
        return 1 if self.last_failed else 0


def run(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.debounce < 0:
        return fail(UsageError("--interval must be > 0 and --debounce >= 0"))
    root = Path(args.dir)
    if not root.exists() or not find_bundles(root):
        return fail(no_bundle(root))
    watcher = Watcher(args)
    # Ctrl-C (SIGINT, even when the parent shell ignored it for a background job) and
    # SIGTERM ask the loop to stop; it finishes a reload in progress, then exits.
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
                    return watcher.exit_code(f"stopping after {attempts} reload(s)")
            if deadline is not None and now >= deadline:
                return watcher.exit_code("stopping: --timeout reached")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        watcher.rt.close()
    return watcher.exit_code("stopped")
