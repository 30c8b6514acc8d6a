"""Build: LuaJIT from source, the C host core, then the cffi extension.

``pip install .`` and ``pip install -e .`` both run ``build_ext``, which first runs
``scripts/build_luajit.sh`` (pinned, checksum-verified LuaJIT source, cached per
machine; a no-op when ``csrc/luajit/`` is current) and ``make -C csrc`` (our C with
strict warnings; ``POLYPLUG_WERROR=1`` makes them errors, as the project's CI does),
then lets cffi compile ``polyplug._native`` against the two static libraries.  The
extension uses only the limited API, so wheels are tagged ``cp39-abi3``.
"""

import os
import pathlib
import re
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "polyplug" / "_version.py").read_text()).group(1)


def run_step(what: str, cmd: list, **kwargs) -> None:
    """Run one build step; on failure stop with one line instead of a traceback."""
    try:
        subprocess.run(cmd, check=True, **kwargs)
    except FileNotFoundError as exc:
        sys.exit(f"error: {what}: {exc.filename} is not installed")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"error: {what} failed (exit {exc.returncode}; its output is above)")


def build_native() -> None:
    """LuaJIT first (the core includes its headers), then the core library."""
    run_step("building LuaJIT (scripts/build_luajit.sh)",
             ["bash", str(ROOT / "scripts" / "build_luajit.sh")],
             env=dict(os.environ, PYTHON=sys.executable))
    werror = "1" if os.environ.get("POLYPLUG_WERROR") == "1" else "0"
    run_step("building the C core (make -C csrc)",
             ["make", "-C", str(ROOT / "csrc"), f"-j{os.cpu_count() or 2}",
              f"OUT={ROOT / 'build' / 'core'}", f"PP_VERSION={VERSION}",
              f"PYTHON={sys.executable}", f"WERROR={werror}"])


class BuildExt(build_ext):
    """Builds the native libraries before cffi's extension, also for editable installs."""

    def run(self) -> None:
        build_native()
        super().run()


setup(
    version=VERSION,
    cmdclass={"build_ext": BuildExt},
    cffi_modules=["polyplug/_build.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
