"""Log records of the C host and the guests, delivered to the standard :mod:`logging` module.

A runtime built without a ``log`` callback hands every record at or below its
``RuntimeConfig.log_max_level`` (Warn by default) to the logger ``polyplug.<scope>``:
``polyplug.runtime``, ``polyplug.registry``, ``polyplug.reload``,
``polyplug.loader.lua``, and whatever scope a guest logs under (``polyplug.guest.counter``
for the example bundle).  Applications configure them like any other library's::

    logging.getLogger("polyplug").setLevel(logging.ERROR)        # quieter
    logging.getLogger("polyplug.guest").addHandler(my_handler)   # the guests' records

Levels map Error→ERROR, Warn→WARNING, Info→INFO, Debug→DEBUG and Trace→``TRACE`` (5,
below DEBUG).  A Lua traceback is not part of the message: it travels as the record's
``stack_info`` (which every standard formatter prints after the message) and as the
``lua_traceback`` attribute.  So does the Python traceback of a host function that
raised (scope ``host.<contract>``), as ``stack_info`` and ``python_traceback``.  Each record also carries ``polyplug_scope`` (the scope
as the C host saw it) and ``polyplug_level`` (a :class:`LogLevel`).
"""

from __future__ import annotations

import logging
from typing import Optional

from polyplug._abi import LogLevel

__all__ = ["LOGGER_NAME", "TRACE", "emit", "logger_for", "python_level"]

LOGGER_NAME = "polyplug"
#: the :mod:`logging` level of Trace records (below ``logging.DEBUG``)
TRACE = 5
if logging.getLevelName(TRACE) == f"Level {TRACE}":
    logging.addLevelName(TRACE, "TRACE")

_PY_LEVELS = {
    LogLevel.Error: logging.ERROR,
    LogLevel.Warn: logging.WARNING,
    LogLevel.Info: logging.INFO,
    LogLevel.Debug: logging.DEBUG,
    LogLevel.Trace: TRACE,
}
_TRACEBACK = "\nstack traceback:"
_PY_TRACEBACK = "\nTraceback (most recent call last):"
# Scopes are chosen by guests; past this many distinct ones, records of new scopes go
# to the `polyplug` logger itself (their scope stays in `polyplug_scope`), so a guest
# cannot grow logging's registry of loggers without bound.
_MAX_LOGGERS = 512
_loggers: dict[str, logging.Logger] = {}


def python_level(level: int) -> int:
    """The :mod:`logging` level for a polyplug :class:`LogLevel` (out of range → ERROR)."""
    return _PY_LEVELS.get(level, logging.ERROR)  # type: ignore[call-overload]


def logger_for(scope: str) -> logging.Logger:
    """The logger of records whose scope is ``scope`` (``polyplug.<scope>``)."""
    found = _loggers.get(scope)
    if found is None:
        parts = [p for p in scope.strip().split(".") if p]
        if parts[:1] == [LOGGER_NAME]:
            parts = parts[1:]
        name = ".".join([LOGGER_NAME, *parts])
        if len(_loggers) >= _MAX_LOGGERS:
            return logging.getLogger(LOGGER_NAME)
        found = _loggers[scope] = logging.getLogger(name)
    return found


def emit(level: int, scope: str, message: str) -> None:
    """Deliver one record of the C log funnel to :mod:`logging`."""
    logger = logger_for(scope)
    py_level = python_level(level)
    if not logger.isEnabledFor(py_level):
        return
    traceback: Optional[str] = None
    python = False
    cut = message.find(_TRACEBACK)
    if cut < 0:
        cut = message.find(_PY_TRACEBACK)
        python = cut >= 0
    if cut >= 0:
        message, traceback = message[:cut], message[cut + 1:]
    extra = {"polyplug_scope": scope, "polyplug_level": LogLevel(level),
             "lua_traceback": None if python else traceback,
             "python_traceback": traceback if python else None}
    record = logger.makeRecord(logger.name, py_level, "<polyplug>", 0, message, (), None,
                               extra=extra, sinfo=traceback)
    logger.handle(record)
