"""Access to the compiled extension, with the import-time version check.

Everything else imports ``ffi`` and ``lib`` from here, never from ``_native`` directly,
so a stale build fails once, clearly, at import.
"""

from __future__ import annotations

import atexit
import sys
from typing import Any

from polyplug._version import __version__

try:
    from polyplug import _native
    from polyplug._native import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "polyplug's compiled extension (polyplug._native) is missing. Install the package "
        "with `pip install -e .` from the source checkout (it builds LuaJIT and the C host); "
        f"original error: {exc}"
    ) from exc

_built = ffi.string(lib.pp_version()).decode()
if _built != __version__:
    raise ImportError(
        f"polyplug._native was built for version {_built} but the Python package is "
        f"{__version__}; rebuild with `pip install -e .`"
    )

__all__ = ["ffi", "lib", "fastcall", "new_error", "check", "view_text", "text_view"]


def _load_fastcall() -> Any:
    """``polyplug._fastcall``, the call layer's hot path (csrc/python/fastcall.c).

    It lives in the same shared object as ``_native`` so that it calls the C core
    directly; Python finds only the module named after a library's file, so the second
    one is loaded by its name from that file (PEP 489, "multiple modules in one
    library")."""
    from importlib.machinery import ExtensionFileLoader, ModuleSpec

    name = "polyplug._fastcall"
    if name in sys.modules:
        return sys.modules[name]
    loader = ExtensionFileLoader(name, _native.__file__)
    spec = ModuleSpec(name, loader, origin=_native.__file__)
    module = loader.create_module(spec)
    loader.exec_module(module)
    module.__spec__ = spec
    sys.modules[name] = module
    return module


fastcall = _load_fastcall()
# From interpreter exit on, a call no longer takes the GIL back mid-call (a daemon
# thread that tries to at that point is ended by Python, holding a bundle's lock);
# takes already under way finish first (fastcall.c, "large bytes results").
atexit.register(fastcall.mark_finalizing)


def new_error() -> Any:
    """A fresh ``pp_error`` (zero status) for one C call."""
    return ffi.new("pp_error *")


def check(err: Any) -> None:
    """Raise the typed exception for a failed C call; see ``_errors.raise_from_c``."""
    if err.status:
        from polyplug._errors import raise_from_c

        raise_from_c(ffi, lib, err)


def view_text(view: Any) -> str:
    """Decode a ``StringView`` (empty for a null view)."""
    if view.ptr == ffi.NULL or view.len == 0:
        return ""
    return bytes(ffi.buffer(view.ptr, view.len)).decode("utf-8", "replace")


def _view(data: bytes, keep: list[Any], copy: bool) -> Any:
    view = ffi.new("StringView *")
    if data:
        buf = ffi.new("uint8_t[]", data) if copy else ffi.from_buffer("uint8_t[]", data)
        keep.append(buf)
        view.ptr = buf
        view.len = len(data)
    keep.append(view)
    return view[0]


def bytes_view(data: bytes, keep: list[Any]) -> Any:
    """A ``StringView`` over ``data`` itself (no copy); ``data`` and the view are
    appended to ``keep``, which must outlive every use of the view."""
    return _view(data, keep, copy=False)


def text_view(data: bytes, keep: list[Any]) -> Any:
    """A ``StringView`` over a copy of ``data``; the backing cdata is appended to
    ``keep``."""
    return _view(data, keep, copy=True)
