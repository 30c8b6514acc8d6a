"""Build: LuaJIT from source, the C host core, then the cffi extension.

``pip install .`` and ``pip install -e .`` both run ``build_ext``, which first runs
``scripts/build_luajit.sh`` (pinned, checksum-verified LuaJIT source; a no-op when
already built) and ``make -C csrc`` (our C with strict warnings), then lets cffi
compile ``polyplug._native`` against the two static libraries.
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


def build_native() -> None:
    """LuaJIT first (the core includes its headers), then the core library."""
    subprocess.run(["bash", str(ROOT / "scripts" / "build_luajit.sh")], check=True)
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        ["make", "-C", str(ROOT / "csrc"), f"-j{jobs}", f"OUT={ROOT / 'build' / 'core'}",
         f"PP_VERSION={VERSION}", f"PYTHON={sys.executable}"],
        check=True,
    )


class BuildExt(build_ext):
    def run(self) -> None:
        build_native()
        super().run()


setup(
    version=VERSION,
    cmdclass={"build_ext": BuildExt},
    cffi_modules=["polyplug/_build.py:ffibuilder"],
)
