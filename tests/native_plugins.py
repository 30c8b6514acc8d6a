"""The native test plugins (tests/native/plug.c and its variants) and bundles made of them.

Each variant is the same source with other -D switches (see the comment at the top of
tests/native/plug.c); :func:`build` compiles one with tests/cbuild.py into
``build/cbuild/native/<variant>.so`` (cached), :func:`bundle` writes a bundle directory
around a copy of it.  The parity drivers find the built variants there by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import cbuild

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "native" / "plug.c"

VARIANTS: dict[str, tuple[str, ...]] = {
    "plug": (),
    "plug_v2": ("-DPLUG_TAG=2", "-DPLUG_EXTRA"),
    "plug_v3": ("-DPLUG_TAG=3",),
    "plug_no_abi_symbol": ("-DPLUG_NO_ABI_SYMBOL",),
    "plug_abi_v2": ("-DPLUG_ABI_VERSION=2",),
    "plug_no_init": ("-DPLUG_NO_INIT",),
    "plug_init_code": ("-DPLUG_INIT_CODE=5",),
    "plug_init_msg": ("-DPLUG_INIT_CODE=300", '-DPLUG_INIT_MSG="the plugin refused to start"'),
    "plug_null_entry": ("-DPLUG_NULL_ENTRY",),
    "plug_undefined": ("-DPLUG_UNDEFINED",),
    "plug_no_contracts": ("-DPLUG_NO_CONTRACTS",),
}

NATIVE_DIR = cbuild.BUILD / "cbuild" / "native"
MATH = "native.math"  # the contract every working variant provides (fns 0..8)
MATH_FUNCTIONS = 9


def build(variant: str = "plug", sanitize: bool = False) -> Path:
    """The shared library of ``variant`` (built if needed)."""
    return cbuild.build_shared(variant, [SOURCE], cflags=VARIANTS[variant], sanitize=sanitize,
                               out_dir=NATIVE_DIR)


def build_all(sanitize: bool = False) -> dict[str, Path]:
    """Every variant, built (the parity scenarios copy them from NATIVE_DIR)."""
    return {name: build(name, sanitize) for name in VARIANTS}


def manifest_text(name: str, file: str = "libplug.so", extra: str = "") -> str:
    from polyplug import bundle_id

    return (f'name = "{name}"\nid = {bundle_id(name)}\nversion = "1.0.0"\nloader = "native"\n'
            f'file = "{file}"\nprovides = ["{MATH}@1"]\n\n[function_count]\n'
            f'"{MATH}@1" = {MATH_FUNCTIONS}\n{extra}')


def bundle(root: Path, name: str = "nplug", variant: Optional[str] = "plug",
           file: str = "libplug.so", extra: str = "") -> Path:
    """``root/name/`` with a manifest and (unless ``variant`` is None) the variant's
    library copied to ``file``; returns the bundle directory."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(manifest_text(name, file, extra), encoding="utf-8")
    if variant is not None:
        dest = d / file
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build(variant), dest)
    return d


def install(variant: str, dest: Path) -> None:
    """Replace the library at ``dest`` with ``variant`` (a new file, as a build writes)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(build(variant), tmp)
    tmp.replace(dest)
