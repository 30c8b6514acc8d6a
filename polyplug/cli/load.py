"""``load DIR``: load a bundle, or every bundle in a directory (providers first), and
report what each one registered."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from polyplug.cli._common import (
    LOG_LEVELS,
    BundleReport,
    build_runtime,
    bundle_command,
    error_line,
    load_all,
    log_printer,
    needs_host,
    no_bundle,
)


def add_parser(sub: Any) -> None:
    p = bundle_command(sub, "load", run, help="load bundles and report what they register")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def print_table(reports: Sequence[BundleReport]) -> None:
    """The table of loaded bundles, one error line per failed one, and a summary."""
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
        if needs_host(r):
            wanted = re.search(r"host contract `([^`]+)`", r.error or "")
            print(f"{r.name}: skipped: it needs host contract "
                  f"`{wanted.group(1) if wanted else '?'}`, which only a host program can "
                  "provide (Runtime.provide_host_contract)")
        elif r.error:
            print(error_line(r.error_type or "Error", r.error_message()), file=sys.stderr)
    ok = sum(1 for r in reports if not r.error)
    skipped = sum(1 for r in reports if needs_host(r))
    extra = f", {skipped} skipped (they need host contracts)" if skipped else ""
    print(f"{ok} bundle(s) loaded, {len(reports) - ok - skipped} failed{extra}")



def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    level = LOG_LEVELS[args.log]
    with build_runtime(log_printer(level), level) as rt:
        reports = load_all(rt, root)
    if not reports:
        print(error_line("UsageError", str(no_bundle(root))), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{k: v for k, v in r.__dict__.items() if k != "provides"}
                          for r in reports], indent=2))
    else:
        print_table(reports)
    return 1 if any(r.error and not needs_host(r) for r in reports) else 0
