"""Python functions the C host calls back (cffi ``extern "Python"``).

The rules: a callback never lets an exception escape into C.  Log and reload
callbacks report their own failures through ``sys.unraisablehook`` (a broken logger
must not break a guest call); the path hooks turn an exception into a filled
``pp_error`` so the C caller reports it like any other failure.

Each runtime passes ``ffi.new_handle(state)`` as user data; ``state`` is a
``_CallbackState`` that holds the user's callables and a weak reference to the
``Runtime`` (no cycle through C).
"""

from __future__ import annotations

import sys
import types
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from polyplug._errors import PolyplugError
from polyplug._ffi import ffi, lib, view_text

if TYPE_CHECKING:
    from polyplug.runtime import ReloadPhase, Runtime


@dataclass
class _CallbackState:
    log: Optional[Callable[[Any, str, str], None]] = None
    on_reload: Optional[Callable[[ReloadPhase], None]] = None
    runtime: Optional[weakref.ref[Runtime]] = None
    handle: Any = field(default=None, repr=False)


def _report(exc: BaseException, what: str) -> None:
    """Hand an exception raised by a user callback to ``sys.unraisablehook``."""
    args = types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                                 exc_traceback=exc.__traceback__,
                                 err_msg=f"Exception ignored in {what}", object=None)
    sys.unraisablehook(args)  # type: ignore[arg-type]


@ffi.def_extern()
def pp_py_log(user_data: Any, level: int, scope: Any, message: Any) -> None:
    state: _CallbackState = ffi.from_handle(user_data)
    if state.log is None:
        return
    try:
        from polyplug.runtime import LogLevel

        state.log(LogLevel(level), view_text(scope), view_text(message))
    except BaseException as exc:  # noqa: BLE001 - must not cross into C
        _report(exc, "polyplug log callback")


@ffi.def_extern()
def pp_py_on_reload(user_data: Any, phase: Any) -> None:
    state: _CallbackState = ffi.from_handle(user_data)
    if state.on_reload is None:
        return
    try:
        from polyplug.runtime import ReloadPhase

        state.on_reload(ReloadPhase._from_c(phase))
    except BaseException as exc:  # noqa: BLE001 - must not cross into C
        _report(exc, "polyplug on_reload callback")


def _path_hook(user_data: Any, path: Any, err: Any, reload: bool) -> int:
    state: _CallbackState = ffi.from_handle(user_data)
    runtime = state.runtime() if state.runtime else None
    try:
        if runtime is None:
            raise PolyplugError("the Python runtime object is gone")
        target = view_text(path)
        if reload:
            runtime.reload_bundle(target)
        else:
            runtime.load_bundle(target)
        return 0
    except BaseException as exc:  # noqa: BLE001 - must not cross into C
        status = getattr(exc, "status", 0) or lib.PP_ERR_HOST_EXCEPTION
        text = str(exc) or type(exc).__name__
        err.status = status
        err.abi_code = 1
        encoded = text.encode("utf-8", "replace")[: ffi.sizeof(err.message) - 1]
        ffi.memmove(err.message, encoded + b"\0", len(encoded) + 1)
        return int(status)


@ffi.def_extern()
def pp_py_load_hook(user_data: Any, rt: Any, path: Any, err: Any) -> int:
    return _path_hook(user_data, path, err, reload=False)


@ffi.def_extern()
def pp_py_reload_hook(user_data: Any, rt: Any, path: Any, err: Any) -> int:
    return _path_hook(user_data, path, err, reload=True)
