"""Python functions the C host calls back (cffi ``extern "Python"``).

The rules: no exception ever reaches C.  The path hooks turn an exception into a filled
``pp_error``, so the C caller reports it like any other failure.  An exception raised
by a user's log or ``on_reload`` callback is left to cffi, which returns normally to C
and reports it through the standard unraisable-exception protocol
(``sys.unraisablehook``: "Exception ignored from cffi callback <polyplug log
callback>" and the user's own traceback) — a broken logger must not break a guest call.

Each runtime passes ``ffi.new_handle(state)`` as user data; ``state`` is a
``_CallbackState`` that holds the user's callables and a weak reference to the
``Runtime`` (no cycle through C).  With no user log callback, records go to the
standard :mod:`logging` module (see :mod:`polyplug._logging`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from polyplug._abi import AbiErrorCode, LogLevel, ReloadPhase
from polyplug._errors import PolyplugError
from polyplug._ffi import ffi, lib, view_text

if TYPE_CHECKING:
    from polyplug.runtime import Runtime


@dataclass
class _CallbackState:
    log: Optional[Callable[[LogLevel, str, str], None]] = None
    on_reload: Optional[Callable[[ReloadPhase], None]] = None
    runtime: Optional[weakref.ref[Runtime]] = None
    handle: Any = field(default=None, repr=False)


class _Extern:
    """A callback registered with ``ffi.def_extern``; its repr names it in cffi's
    "Exception ignored from cffi callback ..." report."""

    def __init__(self, fn: Callable[..., Any], what: str) -> None:
        self._fn = fn
        self._what = what

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __repr__(self) -> str:
        return f"<polyplug {self._what}>"


def _log(user_data: Any, level: int, scope: Any, message: Any) -> None:
    state: _CallbackState = ffi.from_handle(user_data)
    if state.log is None:
        from polyplug._logging import emit  # logging is imported by the first record

        emit(level, view_text(scope), view_text(message))
    else:
        state.log(LogLevel(level), view_text(scope), view_text(message))


def _on_reload(user_data: Any, phase: Any) -> None:
    state: _CallbackState = ffi.from_handle(user_data)
    if state.on_reload is not None:
        state.on_reload(ReloadPhase._from_c(phase))


ffi.def_extern(name="pp_py_log")(_Extern(_log, "log callback"))
ffi.def_extern(name="pp_py_on_reload")(_Extern(_on_reload, "on_reload callback"))


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
        err.abi_code = AbiErrorCode.Generic
        encoded = text.encode("utf-8", "replace")[: ffi.sizeof(err.message) - 1]
        ffi.memmove(err.message, encoded + b"\0", len(encoded) + 1)
        return int(status)


@ffi.def_extern()
def pp_py_load_hook(user_data: Any, rt: Any, path: Any, err: Any) -> int:
    return _path_hook(user_data, path, err, reload=False)


@ffi.def_extern()
def pp_py_reload_hook(user_data: Any, rt: Any, path: Any, err: Any) -> int:
    return _path_hook(user_data, path, err, reload=True)
