"""Build small C programs against the polyplug host core and the static LuaJIT.

Used by the C-host parity and sanitizer tests and by the benchmarks; it has no pytest
dependency, so load it by path from anywhere::

    spec = importlib.util.spec_from_file_location("cbuild", "tests/cbuild.py")
    cbuild = importlib.util.module_from_spec(spec); spec.loader.exec_module(cbuild)
    exe = cbuild.build_program("parity_driver", ["tests/c/parity_driver.c"])
    exe_san = cbuild.build_program("parity_driver", ["tests/c/parity_driver.c"],
                                   sanitize=True)

What it does:

* ``build_core(sanitize)`` runs ``make -C csrc OUT=build/core PP_VERSION=<version>
  WERROR=1`` (or ``OUT=build/core-san ... SAN=1``): the tests allow no warning in our C.
  make is incremental, so this is cheap when nothing changed, and the program never
  links a library older than ``csrc/``.
* ``build_program(name, sources, ...)`` compiles and links the sources with
  ``-Icsrc/include`` against ``libpolyplug_core.a`` and ``csrc/luajit/lib/libluajit.a``
  (``-lm -ldl -pthread``); ``sanitize=True`` adds ``-fsanitize=address,undefined``
  to the compile and the link, against the sanitized core.
* ``build_shared(name, sources, ...)`` compiles a shared library (``-shared -fPIC``,
  ``-Icsrc/include``, nothing linked in): a native plugin bundle's artifact.
* Outputs are cached under ``build/cbuild/``: a program is rebuilt only when its
  sources, flags, compiler, or either library changed (a key file sits next to it).

The version passed to make is ``polyplug.__version__``, read from
``polyplug/_version.py`` without importing the compiled extension.

Builds are serialised with a lock file (``build/.cbuild.lock``) so parallel callers
(pytest-xdist, benchmarks) do not run two makes over one output directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

__all__ = [
    "ROOT",
    "CSRC",
    "LUAJIT_LIB",
    "CBuildError",
    "build_core",
    "build_program",
    "build_shared",
    "compiler",
    "core_dir",
    "pp_version",
]

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
BUILD = ROOT / "build"
LUAJIT_LIB = CSRC / "luajit" / "lib" / "libluajit.a"
LUAJIT_INCLUDE = CSRC / "luajit" / "include"

SAN_FLAGS = ("-fsanitize=address,undefined", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=undefined")
WARN_FLAGS = ("-Wall", "-Wextra", "-Werror")
# --wrap: LuaJIT's CPU detection asked once per process (csrc/pp_lua_vm.c, "CPU detection")
LINK_LIBS = ("-lm", "-ldl", "-pthread", "-Wl,--wrap=lj_vm_cpuid")

PathLike = Union[str, "os.PathLike[str]"]


class CBuildError(RuntimeError):
    """A make or compiler invocation failed; the message holds the command and its output."""


def pp_version() -> str:
    """``polyplug.__version__``, read from ``polyplug/_version.py``."""
    text = (ROOT / "polyplug" / "_version.py").read_text(encoding="utf-8")
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not match:
        raise CBuildError("cannot find __version__ in polyplug/_version.py")
    return match.group(1)


def compiler() -> list[str]:
    """The C compiler command: ``$CC`` or ``cc``."""
    return shlex.split(os.environ.get("CC") or "cc")


def core_dir(sanitize: bool = False) -> Path:
    """Where ``build_core`` puts the library: ``build/core`` or ``build/core-san``."""
    return BUILD / ("core-san" if sanitize else "core")


@contextmanager
def _build_lock() -> Iterator[None]:
    BUILD.mkdir(parents=True, exist_ok=True)
    with open(BUILD / ".cbuild.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], what: str) -> None:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise CBuildError(
            f"{what} failed (exit {proc.returncode}):\n$ {shlex.join(cmd)}\n"
            f"{proc.stdout}{proc.stderr}"
        )


def _require_luajit() -> None:
    if not LUAJIT_LIB.is_file() or not (LUAJIT_INCLUDE / "lua.h").is_file():
        raise CBuildError(
            f"LuaJIT is not built ({LUAJIT_LIB} missing); run `pip install -e .` or "
            "`bash scripts/build_luajit.sh` first"
        )


def _make_core(out: Path, sanitize: bool, csrc: Path) -> Path:
    cmd = ["make", "-C", str(csrc), f"-j{os.cpu_count() or 2}", f"OUT={out}",
           f"PP_VERSION={pp_version()}", f"PYTHON={sys.executable}", "WERROR=1"]
    cc = os.environ.get("CC")
    if cc:
        cmd.append(f"CC={cc}")
    if sanitize:
        cmd.append("SAN=1")
    if csrc.resolve() != CSRC.resolve():
        cmd.append(f"LUAJIT_DIR={CSRC / 'luajit'}")  # a copied csrc/ shares our LuaJIT
    _run(cmd, f"building the {'sanitized ' if sanitize else ''}host core")
    lib = out / "libpolyplug_core.a"
    if not lib.is_file():
        raise CBuildError(f"make succeeded but {lib} is missing")
    return lib


def build_core(sanitize: bool = False, *, csrc: Optional[PathLike] = None,
               out: Optional[PathLike] = None) -> Path:
    """Bring ``libpolyplug_core.a`` up to date with ``csrc/``; returns its path.

    ``csrc``/``out`` build another source tree (e.g. a patched copy) into another
    directory; by default it is this checkout's ``csrc/`` into :func:`core_dir`.
    """
    _require_luajit()
    src = Path(csrc) if csrc is not None else CSRC
    dest = Path(out) if out is not None else core_dir(sanitize)
    with _build_lock():
        return _make_core(dest.resolve(), sanitize, src.resolve())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _compiler_id(cc: list[str]) -> str:
    proc = subprocess.run([*cc, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else " ".join(cc)


def build_program(
    name: str,
    sources: Sequence[PathLike],
    *,
    sanitize: bool = False,
    cflags: Sequence[str] = (),
    ldflags: Sequence[str] = (),
    opt: str = "-O2",
    core_lib: Optional[PathLike] = None,
    out_dir: Optional[PathLike] = None,
) -> Path:
    """Compile and link ``sources`` into an executable; returns its path.

    ``sanitize`` builds with ASan+UBSan against the sanitized core (rebuilt with
    ``make ... SAN=1`` into ``build/core-san``).  ``core_lib`` links another core
    library instead of (re)building the default one.  The result lives in
    ``out_dir`` (default ``build/cbuild``) as ``<name>`` or ``<name>-san`` and is
    reused while nothing it depends on changed.
    """
    _require_luajit()
    srcs = _sources(sources)
    cc = compiler()
    flags = ["-std=c11", "-D_GNU_SOURCE", "-g", opt, *WARN_FLAGS,
             f"-I{CSRC / 'include'}", *cflags]
    if sanitize:
        flags += SAN_FLAGS
    links = [*ldflags, *LINK_LIBS]
    if sanitize:
        links = ["-fsanitize=address,undefined", *links]
    dest_dir = Path(out_dir) if out_dir is not None else BUILD / "cbuild"
    exe = (dest_dir / (f"{name}-san" if sanitize else name)).resolve()
    with _build_lock():
        lib = Path(core_lib).resolve() if core_lib is not None else \
            _make_core(core_dir(sanitize).resolve(), sanitize, CSRC.resolve())
        key = [*cc, _compiler_id(cc), *flags, *links, str(lib), _file_digest(lib),
               _file_digest(LUAJIT_LIB)]
        return _compile_cached(name, exe, srcs, key, lambda tmp: [
            *cc, *flags, *map(str, srcs), "-o", str(tmp), str(lib), str(LUAJIT_LIB), *links])


def _sources(sources: Sequence[PathLike]) -> list[Path]:
    srcs = [Path(s).resolve() for s in sources]
    for s in srcs:
        if not s.is_file():
            raise CBuildError(f"source file not found: {s}")
    return srcs


def _compile_cached(name: str, target: Path, srcs: Sequence[Path], key_parts: Sequence[str],
                    command: Callable[[Path], list[str]]) -> Path:
    """Run ``command(tmp)`` and move ``tmp`` to ``target``, unless the key file beside
    ``target`` says the key parts, the sources, the public headers and the headers
    beside the sources are unchanged.
    The caller holds the build lock."""
    key = hashlib.sha256()
    for part in key_parts:
        key.update(part.encode() + b"\0")
    for s in srcs:
        key.update(str(s).encode() + b"\0" + _file_digest(s).encode() + b"\0")
    # headers the sources may include: the public ones and any beside a source
    local = {h for s in srcs for h in s.parent.glob("*.h")}
    for h in [*sorted((CSRC / "include").glob("*.h")), *sorted(local)]:
        key.update(_file_digest(h).encode())
    digest = key.hexdigest()
    stamp = target.with_name(target.name + ".key")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    _run(command(tmp), f"compiling {name}")
    os.replace(tmp, target)
    stamp.write_text(digest + "\n")
    return target


def build_shared(
    name: str,
    sources: Sequence[PathLike],
    *,
    sanitize: bool = False,
    cflags: Sequence[str] = (),
    opt: str = "-O2",
    out_dir: Optional[PathLike] = None,
) -> Path:
    """Compile ``sources`` into a shared library ``<out_dir>/<name>.so``; returns its path.

    Only the public headers are on the include path (a plugin needs
    ``polyplug_abi.h``); nothing is linked in.  ``sanitize`` instruments it with
    ASan+UBSan (load it only into a sanitized process).  Cached like
    :func:`build_program` (default ``build/cbuild/native``).
    """
    srcs = _sources(sources)
    cc = compiler()
    flags = ["-std=c11", "-D_GNU_SOURCE", "-g", opt, "-fPIC", *WARN_FLAGS,
             f"-I{CSRC / 'include'}", *cflags]
    if sanitize:
        flags += SAN_FLAGS
    dest_dir = Path(out_dir) if out_dir is not None else BUILD / "cbuild" / "native"
    lib = (dest_dir / (f"{name}-san.so" if sanitize else f"{name}.so")).resolve()
    with _build_lock():
        return _compile_cached(name, lib, srcs, [*cc, _compiler_id(cc), *flags],
                               lambda tmp: [*cc, *flags, "-shared", *map(str, srcs), "-o",
                                            str(tmp)])


if __name__ == "__main__":  # python tests/cbuild.py NAME SRC... [--san]
    args = sys.argv[1:]
    san = "--san" in args
    args = [a for a in args if a != "--san"]
    if len(args) < 2:
        raise SystemExit("usage: python tests/cbuild.py NAME SOURCE.c... [--san]")
    print(build_program(args[0], args[1:], sanitize=san))
