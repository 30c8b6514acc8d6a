"""Where log records go: the standard ``logging`` module by default, a user callback when
one is set; and how an exception raised by a user's callback is reported."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from conftest import run_child as run_python

import polyplug
from polyplug import LogLevel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class Records(logging.Handler):
    """Collects the records that reach it."""

    def __init__(self) -> None:
        super().__init__(level=1)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured():
    """A handler on the ``polyplug`` logger, letting every level through."""
    logger = logging.getLogger("polyplug")
    handler = Records()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(1)
    logger.propagate = False
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def build(**config: object) -> polyplug.Runtime:
    return polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(**config)).loader(
        polyplug.LuaLoader()).build()


# ── records without a user callback go to logging ────────────────────────────


def test_guest_records_reach_a_child_logger_per_scope(captured) -> None:
    with build(log_max_level=LogLevel.Trace) as rt:
        rt.load_bundle(EXAMPLES / "counter")
        counter = rt.contract("example.counter", 1)
        assert counter.increment(5) == 5
    got = [(r.name, r.levelno, r.getMessage()) for r in captured]
    assert ("polyplug.guest.counter", logging.INFO, "counter #1: +5 -> 5") in got
    assert ("polyplug.guest.counter", logging.DEBUG, "counter #1 created") in got
    info = next(r for r in captured if r.getMessage() == "counter #1: +5 -> 5")
    assert info.polyplug_scope == "guest.counter"
    assert info.polyplug_level is LogLevel.Info


@pytest.mark.parametrize("level, py_level", [
    (LogLevel.Error, logging.ERROR), (LogLevel.Warn, logging.WARNING),
    (LogLevel.Info, logging.INFO), (LogLevel.Debug, logging.DEBUG), (LogLevel.Trace, 5),
])
def test_level_mapping(captured, level: LogLevel, py_level: int) -> None:
    with build(log_max_level=LogLevel.Trace) as rt:
        rt.log(level, "runtime", f"a {level.name} record")
    [record] = captured
    assert (record.name, record.levelno, record.getMessage()) == (
        "polyplug.runtime", py_level, f"a {level.name} record")
    assert logging.getLevelName(5) == "TRACE"


def test_scopes_become_logger_names(captured) -> None:
    with build(log_max_level=LogLevel.Trace) as rt:
        for scope in ("runtime", "loader.lua", "guest.x", "", ".odd..dots.", "polyplug.self"):
            rt.log(LogLevel.Warn, scope, scope)
    assert [r.name for r in captured] == [
        "polyplug.runtime", "polyplug.loader.lua", "polyplug.guest.x", "polyplug",
        "polyplug.odd.dots", "polyplug.self"]


def test_log_max_level_is_honoured(captured) -> None:
    with build() as rt:  # the default: Warn
        assert rt.config.log_max_level == LogLevel.Warn
        for level in LogLevel:
            rt.log(level, "runtime", level.name)
    assert [r.getMessage() for r in captured] == ["Error", "Warn"]
    captured.clear()
    with build(log_max_level=LogLevel.Error) as rt:
        rt.log(LogLevel.Warn, "runtime", "dropped")
        rt.log(LogLevel.Error, "runtime", "kept")
    assert [r.getMessage() for r in captured] == ["kept"]


def test_logging_levels_filter_too(captured) -> None:
    logging.getLogger("polyplug").setLevel(logging.ERROR)
    with build(log_max_level=LogLevel.Trace) as rt:
        rt.log(LogLevel.Info, "runtime", "filtered by logging")
        rt.log(LogLevel.Error, "runtime", "passes")
    assert [r.getMessage() for r in captured] == ["passes"]


def test_a_lua_traceback_is_extra_detail_not_the_message(captured) -> None:
    with build(log_max_level=LogLevel.Trace) as rt:
        rt.load_bundle(EXAMPLES / "arith")
        with pytest.raises(polyplug.GuestError, match="division by zero"):
            rt.contract("example.arith", 1).div(1, 0)
    [record] = [r for r in captured if "division by zero" in r.getMessage()]
    assert record.name == "polyplug.loader.lua"
    # a failure that is raised to the caller is logged at Debug (the exception carries it)
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert message.startswith("Lua function call failed: ")
    assert message.endswith("division by zero")
    assert "\n" not in message and "traceback" not in message
    assert record.stack_info.startswith("stack traceback:\n")
    assert "in function 'error'" in record.stack_info
    assert record.lua_traceback == record.stack_info
    formatted = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    first, rest = formatted.split("\n", 1)
    assert first.endswith("division by zero") and rest.startswith("stack traceback:")


def test_a_user_callback_replaces_logging(captured) -> None:
    seen: list[tuple[LogLevel, str, str]] = []
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
            lambda *rec: seen.append(rec)).build() as rt:
        rt.log(LogLevel.Warn, "runtime", "to the callback")
    assert seen == [(LogLevel.Warn, "runtime", "to the callback")]
    assert captured == []


def test_an_unconfigured_program_sees_warnings_on_stderr() -> None:
    proc = run_python("""
        import polyplug
        with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
            rt.log(polyplug.LogLevel.Warn, "runtime", "something to know")
            rt.log(polyplug.LogLevel.Info, "runtime", "not shown")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "something to know\n"


def test_an_application_configures_polyplug_like_any_library() -> None:
    proc = run_python("""
        import logging, polyplug
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("polyplug.guest").setLevel(logging.CRITICAL)
        with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
            rt.log(polyplug.LogLevel.Warn, "guest.noisy", "silenced")
            rt.log(polyplug.LogLevel.Error, "runtime", "shown")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "ERROR polyplug.runtime: shown\n"


# ── exceptions raised by user callbacks: the standard unraisable protocol ─────


RAISING_CALLBACKS = {
    "log": ("""
        def broken(level, scope, message):
            raise ValueError("logger exploded")

        config = polyplug.RuntimeConfig(log=broken, log_max_level=polyplug.LogLevel.Trace)
    """, "log callback", "ValueError: logger exploded"),
    "on_reload": ("""
        def broken(phase):
            raise KeyError("reload hook failed for " + phase.bundle_name)

        config = polyplug.RuntimeConfig(on_reload=broken, hot_reload_enabled=True)
    """, "on_reload callback", "KeyError: 'reload hook failed for arith'"),
}


@pytest.mark.parametrize("kind", sorted(RAISING_CALLBACKS))
def test_a_raising_callback_is_reported_with_its_traceback(kind: str) -> None:
    setup, what, error = RAISING_CALLBACKS[kind]
    proc = run_python("import polyplug\n" + textwrap.dedent(setup) + """
with polyplug.RuntimeBuilder().config(config).loader(polyplug.LuaLoader()).build() as rt:
    rt.load_bundle("examples/arith")
    if config.hot_reload_enabled:
        rt.reload_bundle("examples/arith")
    rt.log(polyplug.LogLevel.Error, "test", "a record")
    assert rt.contract("example.arith", 1).add(1, 2) == 3   # calls work all the same
print("done")
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert "TypeError" not in proc.stderr
    assert f"Exception ignored from cffi callback <polyplug {what}>" in proc.stderr
    assert "Traceback (most recent call last):" in proc.stderr
    assert "in broken" in proc.stderr  # the user's own frame
    assert error in proc.stderr


def test_the_unraisable_hook_receives_the_users_exception() -> None:
    proc = run_python("""
        import sys, polyplug
        seen = []
        sys.unraisablehook = lambda args: seen.append(args)

        def broken_logger(level, scope, message):
            raise ValueError("logger exploded")

        config = polyplug.RuntimeConfig(log=broken_logger)
        with polyplug.RuntimeBuilder().config(config).loader(polyplug.LuaLoader()).build() as rt:
            rt.log(polyplug.LogLevel.Error, "x", "y")
        [args] = seen
        assert type(args).__name__ == "UnraisableHookArgs", type(args)
        assert args.exc_type is ValueError and str(args.exc_value) == "logger exploded"
        assert args.exc_traceback is not None
        print(args.err_msg)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Exception ignored from cffi callback <polyplug log callback>\n"


def test_by_default_successful_calls_log_nothing_into_python(captured) -> None:
    """The counter logs at Info on every call; below the default Warn the C host drops
    the record before it would cross into Python."""
    with build() as rt:
        rt.load_bundle(EXAMPLES / "counter")
        counter = rt.contract("example.counter", 1)
        for i in range(1, 201):
            assert counter.increment(1) == i
    assert captured == []


def test_guest_chosen_scopes_cannot_grow_the_logger_registry(captured, monkeypatch) -> None:
    from polyplug import _logging

    monkeypatch.setattr(_logging, "_MAX_LOGGERS", len(_logging._loggers))
    with build() as rt:
        rt.log(LogLevel.Warn, "guest.brand-new-scope", "still delivered")
    [record] = captured
    assert record.name == "polyplug"
    assert record.polyplug_scope == "guest.brand-new-scope"
    assert "guest.brand-new-scope" not in _logging._loggers


def test_the_readme_quick_start_prints_nothing() -> None:
    """A caught GuestError is not printed a second time by the default logging setup."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    proc = run_python(quick)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
