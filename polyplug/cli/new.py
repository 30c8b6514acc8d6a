"""``new NAME``: scaffold a bundle directory ``NAME/`` (manifest, Lua entry file, pytest
test) from the templates in ``polyplug/cli/templates``; ``new --native NAME`` scaffolds a
C bundle instead (source, Makefile, the ABI header, manifest, pytest test)."""

from __future__ import annotations

import argparse
import re
import shutil
import string
from importlib import resources
from pathlib import Path
from typing import Any

from polyplug import get_include
from polyplug.cli._common import Failure, UsageError, fail
from polyplug.ids import bundle_id, guest_contract_id
from polyplug.manifest import MANIFEST_NAME

_BUNDLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("new", help="scaffold a new bundle directory")
    p.add_argument("name", help="bundle name (letters, digits, '_' and '-'); the contract is "
                   "<name>.greet@1 with '-' written as '_'")
    p.add_argument("--dir", metavar="PATH", help="where to create <name>/ (default: .)")
    p.add_argument("--native", action="store_true",
                   help="a C bundle (loader = \"native\"): <name>.c, a Makefile and "
                   "polyplug_abi.h; build it with make")
    p.set_defaults(func=run)


def identifier(name: str) -> str:
    """The Lua/contract identifier for a bundle name: ``my-plugin`` -> ``my_plugin``."""
    return name.replace("-", "_")


def _template(filename: str) -> string.Template:
    text = resources.files("polyplug.cli").joinpath(f"templates/{filename}").read_text("utf-8")
    return string.Template(text)


def scaffold(name: str, native: bool = False) -> dict[str, str]:
    """``file name -> text`` of a new bundle called ``name`` (a C bundle with ``native``)."""
    module = identifier(name)
    contract = f"{module}.greet"
    fields = {"name": name, "id": str(bundle_id(name)), "module": module,
              "contract": contract, "contract_id": str(guest_contract_id(contract, 1))}
    if native:
        header = Path(get_include()) / "polyplug_abi.h"
        return {
            MANIFEST_NAME: _template("native_manifest.toml").substitute(fields),
            f"{module}.c": _template("native.c").substitute(fields),
            "Makefile": _template("native.Makefile").substitute(fields),
            "polyplug_abi.h": header.read_text("utf-8"),  # self-contained: builds anywhere
            ".gitignore": _template("native.gitignore").substitute(fields),
            f"test_{module}.py": _template("test_native.py").substitute(fields),
        }
    return {
        MANIFEST_NAME: _template("manifest.toml").substitute(fields),
        f"{module}.lua": _template("bundle.lua").substitute(fields),
        f"test_{module}.py": _template("test_bundle.py").substitute(fields),
    }


def run(args: argparse.Namespace) -> int:
    name = args.name
    if not _BUNDLE_NAME.match(name):
        return fail(UsageError(
            f"bad bundle name {name!r}: use a letter followed by letters, digits, '_' or '-' "
            "(at most 64 characters); it names the directory, the contract <name>.greet@1, "
            "the source file and the test module ('-' becomes '_' in the last three)"))
    parent = Path(args.dir) if args.dir else Path.cwd()
    target = parent / name
    if target.exists() or target.is_symlink():
        return fail(Failure("FileExistsError", f"{target} already exists; not overwriting it"))
    files = scaffold(name, native=args.native)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        target.mkdir()
    except OSError as exc:
        return fail(exc)
    try:
        for filename, text in files.items():
            (target / filename).write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)  # we created it: leave nothing half-made
        return fail(exc)
    contract = f"{identifier(name)}.greet"
    print(f"created {target}/")
    for filename in files:
        print(f"  {filename}")
    if args.native:
        print(f"build: make -C {target}   (needs a C compiler)")
    print(f"try:  python -m polyplug call {target} {contract}@1 hello you")
    print(f"test: python -m pytest {target}   (needs pytest: python -m pip install pytest)")
    return 0
