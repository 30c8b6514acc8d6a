"""``version``: print polyplug's and LuaJIT's versions."""

from __future__ import annotations

import argparse
from typing import Any

from polyplug._version import __version__


def add_parser(sub: Any) -> None:
    p = sub.add_parser("version", help="print versions")
    p.set_defaults(func=run)


def run(_: argparse.Namespace) -> int:
    from polyplug import luajit_version

    print(f"polyplug {__version__} ({luajit_version()})")
    return 0
