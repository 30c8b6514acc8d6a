"""The command line, run for real: ``python -m polyplug load|call|watch|new|version``."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest
from conftest import C_TYPES, write_typed_bundle

from polyplug import bundle_id, read_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUTF8="1")


def run_cli(*args: Any, cwd: Optional[Path] = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyplug", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", cwd=cwd,
                          env=ENV, timeout=timeout)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line a failed command printed (and nothing else)."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ── temp bundles ─────────────────────────────────────────────────────────────


write_bundle = write_typed_bundle




@pytest.fixture
def echo_dir(tmp_path: Path) -> Path:
    """``test.echo@1``: echo_<type>(T) -> T for every type, and ``concat(string, u8, string)``."""
    lua = ['local pg = require("polyplug_guest")', "local F = {}"]
    sigs = []
    for i, (t, c) in enumerate(C_TYPES.items()):
        lua.append(f'F[{i}] = function(_, a, o) pg.ptr(o, "{c} *")[0] = '
                   f'pg.ptr(a, "const {c} *")[0] end')
        sigs.append(f'echo_{t} = {{ id = {i}, args = ["{t}"], returns = "{t}" }}')
    n = len(C_TYPES)
    lua.append(f"""
F[{n}] = function(_, a, o, ap, aa)
    local s = pg.read_string(pg.ptr(a, "const StringView *")[0])
    pg.ptr(o, "StringView *")[0] = pg.alloc_string_arena(aa, ap, s)
end
F[{n + 1}] = function(_, a, o, ap, aa)
    local x = pg.ptr(a, "const struct {{ StringView a; uint8_t n; StringView b; }} *")[0]
    local s = pg.read_string(x.a) .. string.rep("-", x.n) .. pg.read_string(x.b)
    pg.ptr(o, "StringView *")[0] = pg.alloc_string_arena(aa, ap, s)
end
F[{n + 2}] = function(self) return self end
function polyplug_init()
    return {{ ["test.echo"] = {{ contract_version = 1, factory = function() return {{}} end,
                                functions = F }} }}, {{ code = 0 }}
end""")
    sigs.append(f'echo_string = {{ id = {n}, args = ["string"], returns = "string" }}')
    sigs.append(f'concat = {{ id = {n + 1}, args = ["string", "u8", "string"], '
                'returns = "string" }')
    sigs.append(f"nothing = {{ id = {n + 2} }}")
    return write_bundle(tmp_path, "echo", "\n".join(lua), "test.echo", n + 3,
                        "\n".join(sigs) + "\n")


# ── version and load ─────────────────────────────────────────────────────────


def test_version() -> None:
    proc = run_cli("version")
    assert proc.returncode == 0
    assert re.match(r"polyplug \S+ \(LuaJIT 2\.1", proc.stdout), proc.stdout


def test_load_examples() -> None:
    proc = run_cli("load", EXAMPLES)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for bundle, contract, count in (("arith", "example.arith@1", 3),
                                    ("counter", "example.counter@1", 3),
                                    ("text", "example.text@1", 5)):
        assert re.search(rf"^{bundle}\s+1\.0\.0\s+lua\s+{re.escape(contract)}\s+{count}\s",
                         out, re.M), out
    # examples/notes needs the host contract app.kv@1, which only a host program provides
    assert ("notes: skipped: it needs host contract `app.kv@1`, which only a host program can "
            "provide (Runtime.provide_host_contract)") in out.splitlines()
    assert out.splitlines()[-1] == "3 bundle(s) loaded, 0 failed, 1 skipped (they need host contracts)"
    assert proc.stderr == ""


def test_load_json_structure() -> None:
    proc = run_cli("load", EXAMPLES, "--json")
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert isinstance(reports, list)
    assert sorted(r["name"] for r in reports) == ["arith", "counter", "notes", "text"]
    [notes] = [r for r in reports if r["name"] == "notes"]
    assert notes["error_type"] == "HostContractNotFound" and notes["contracts"] == []
    assert "requires host contract `app.kv@1`" in notes["error"]
    reports.remove(notes)
    for r in reports:
        assert set(r) == {"path", "name", "version", "loader", "contracts", "load_ms",
                          "error", "error_type"}
        assert (r["version"], r["loader"], r["error"], r["error_type"]) == ("1.0.0", "lua",
                                                                            None, None)
        assert Path(r["path"]).name == r["name"]
        assert isinstance(r["load_ms"], float) and r["load_ms"] >= 0
        [c] = r["contracts"]
        assert set(c) == {"contract", "plugin", "contract_id", "functions"}
        assert c["contract"] == f"example.{r['name']}@1"
        assert c["plugin"] == r["name"]
        assert re.fullmatch(r"0x[0-9a-f]{16}", c["contract_id"])
    functions = {r["name"]: r["contracts"][0]["functions"] for r in reports}
    assert functions == {"arith": 3, "counter": 3, "text": 5}


def test_load_one_bundle() -> None:
    proc = run_cli("load", EXAMPLES / "text")
    assert proc.returncode == 0
    assert "example.text@1" in proc.stdout and "arith" not in proc.stdout


def test_a_bad_bundle_among_good_ones(tmp_path: Path) -> None:
    for name in ("arith", "text"):
        shutil.copytree(EXAMPLES / name, tmp_path / name)
    write_bundle(tmp_path, "broken", "this is not lua(")
    bad = write_bundle(tmp_path, "tampered", "function polyplug_init() return {}, {} end")
    text = (bad / "manifest.toml").read_text().replace(str(bundle_id("tampered")), "12345")
    (bad / "manifest.toml").write_text(text)
    proc = run_cli("load", tmp_path)
    assert proc.returncode == 1
    assert "example.arith@1" in proc.stdout and "example.text@1" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "2 bundle(s) loaded, 2 failed"
    # one line per failed bundle, each `error: <Type>: <message>`, the message naming it
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert re.fullmatch(r"error: InitFailed: init failed for bundle `broken`: .*bundle\.lua:1:.*",
                        lines[0])
    assert re.fullmatch(r"error: BundleTampered: .*tampered.*", lines[1])

    proc = run_cli("load", tmp_path, "--json")
    assert proc.returncode == 1
    reports = {r["name"]: r for r in json.loads(proc.stdout)}
    assert reports["arith"]["error"] is None and reports["text"]["error"] is None
    assert reports["broken"]["error_type"] == "InitFailed"
    assert reports["broken"]["contracts"] == []
    assert reports["tampered"]["error_type"] == "BundleTampered"


def test_load_nothing(tmp_path: Path) -> None:
    proc = run_cli("load", tmp_path)
    assert proc.returncode == 2
    assert "no bundle" in proc.stderr
    proc = run_cli("load", tmp_path / "missing")
    assert proc.returncode == 1
    assert "BundleNotADirectory" in proc.stderr


# ── call ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("argv, out", [
    (["example.arith@1", "add", "7", "35"], "42"),
    (["example.arith", "mul", "6", "7"], "42"),  # the major is optional
    (["example.arith@1", "div", "85", "2"], "42"),
    (["example.arith@1", "add", "0x10", "0b11"], "19"),
    (["example.arith@1", "add", "4294967295", "0"], "4294967295"),
    (["example.arith@1", "0", "7", "35"], "42"),  # declared id: typed by the table
    (["example.arith@1", "1", "6", "7", "--args", "u32,u32", "--returns", "u32"], "42"),
    (["example.arith@1", "2", "9", "3", "--args", "uint32_t, uint32_t", "--returns",
      "uint32_t"], "3"),
    (["example.text", "upper", "héllo wörld"], "HÉLLO WÖRLD"),
    (["example.text", "reverse", "añb😀c"], "c😀bña"),
    (["example.text", "count_words", "one two  three"], "3"),
    (["example.text", "length", "añb😀"], "4"),
    (["example.text", "repeat", "ab", "3"], "ababab"),
    (["example.text", "upper", ""], ""),
    (["example.counter", "increment", "5"], "5"),
    (["example.counter", "get"], "0"),
])
def test_call(argv: list[str], out: str) -> None:
    proc = run_cli("call", EXAMPLES, *argv)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout == out + "\n"


def test_call_a_function_without_result_prints_nothing() -> None:
    proc = run_cli("call", EXAMPLES, "example.counter", "reset")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    proc = run_cli("call", EXAMPLES, "example.counter", "reset", "--json")
    assert json.loads(proc.stdout) == {"result": None}


def test_call_json() -> None:
    proc = run_cli("call", EXAMPLES, "example.arith@1", "add", "7", "35", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {"result": 42}
    proc = run_cli("call", EXAMPLES, "example.text@1", "reverse", "grüße", "--json")
    assert json.loads(proc.stdout) == {"result": "eßürg"}


def test_call_one_bundle_directory() -> None:
    proc = run_cli("call", EXAMPLES / "arith", "example.arith@1", "add", "1", "2")
    assert (proc.returncode, proc.stdout) == (0, "3\n")


def test_call_a_large_string() -> None:
    proc = run_cli("call", EXAMPLES, "example.text", "repeat", "ab", "5000")
    assert (proc.returncode, proc.stdout) == (0, "ab" * 5000 + "\n")
    proc = run_cli("call", EXAMPLES, "example.text", "length", "é" * 5000)
    assert (proc.returncode, proc.stdout) == (0, "5000\n")


@pytest.mark.parametrize("t, arg, out", [
    ("u8", "255", "255"), ("u16", "65535", "65535"), ("u32", "7", "7"),
    ("u64", "18446744073709551615", "18446744073709551615"),
    ("i8", "-128", "-128"), ("i16", "-2", "-2"), ("i32", "-2147483648", "-2147483648"),
    ("i64", "-9223372036854775808", "-9223372036854775808"),
    ("f32", "1.5", "1.5"), ("f32", "0.1", "0.10000000149011612"), ("f64", "0.1", "0.1"),
    ("f64", "-1e300", "-1e+300"), ("f64", "inf", "inf"), ("f64", "1_000.5", "1000.5"),
    ("bool", "true", "true"), ("bool", "false", "false"), ("bool", "1", "true"),
    ("bool", "0", "false"), ("bool", "TRUE", "true"),
    ("string", "as-is  text", "as-is  text"), ("string", "-starts-with-dash", None),
])
def test_call_converts_every_type(echo_dir: Path, t: str, arg: str, out: Optional[str]) -> None:
    proc = run_cli("call", echo_dir, "test.echo@1", f"echo_{t}", "--", arg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (out if out is not None else arg) + "\n"


def test_call_json_types(echo_dir: Path) -> None:
    for t, arg, value in (("u64", "18446744073709551615", 2**64 - 1), ("i8", "-5", -5),
                          ("f64", "2.5", 2.5), ("bool", "false", False),
                          ("string", "日本", "日本")):
        proc = run_cli("call", echo_dir, "test.echo", f"echo_{t}", arg, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"result": value}


def test_call_mixed_arguments(echo_dir: Path) -> None:
    proc = run_cli("call", echo_dir, "test.echo", "concat", "a b", "3", "ü")
    assert (proc.returncode, proc.stdout) == (0, "a b---ü\n")
    proc = run_cli("call", echo_dir, "test.echo", "concat", "", "0", "")
    assert (proc.returncode, proc.stdout) == (0, "\n")
    proc = run_cli("call", echo_dir, "test.echo", "nothing")
    assert (proc.returncode, proc.stdout) == (0, "")


def test_call_on_a_fresh_instance() -> None:
    base = ["call", EXAMPLES, "example.counter", "increment", "5", "--log", "debug"]
    proc = run_cli(*base)
    assert proc.returncode == 0 and proc.stdout == "5\n"
    assert "[info] guest.counter: counter #1: +5 -> 5" in proc.stderr
    proc = run_cli(*base, "--instance")
    assert proc.returncode == 0 and proc.stdout == "5\n"
    assert "[debug] guest.counter: counter #2 created" in proc.stderr
    assert "[info] guest.counter: counter #2: +5 -> 5" in proc.stderr


@pytest.mark.parametrize("argv, kind, message", [
    (["example.arith@1", "div", "1", "0"], "GuestError", r"arith\.lua:\d+: division by zero"),
    (["example.text", "repeat", "abcd", "4294967295"], "GuestError",
     "exceeds the 16777216-byte limit"),
    (["example.nope@1", "add", "1", "2"], "PluginNotFound", "example.nope@1"),
    (["example.nope", "add"], "PluginNotFound", "example.nope"),
    (["example.arith@2", "add", "1", "2"], "PluginNotFound", "example.arith@2"),
    (["example.arith@1", "sub", "1", "2"], "UnknownFunction",
     r"declares no function 'sub' \(declared: add, div, mul\)"),
    (["example.arith@1", "add", "1"], "TypeError",
     r"add\(u32, u32\) -> u32 takes 2 argument\(s\), got 1"),
    (["example.arith@1", "add", "1", "2", "3"], "TypeError", "got 3"),
    (["example.arith@1", "add", "x", "1"], "InvalidArgument",
     r"argument 1 \(u32\) of add: 'x' is not an integer literal"),
    (["example.arith@1", "add", "1", "1.5"], "InvalidArgument",
     r"argument 2 \(u32\) of add: '1.5' is not an integer literal"),
    (["example.arith@1", "add", "4294967296", "1"], "InvalidArgument",
     r"4294967296 is out of range for u32 \(0\.\.4294967295\)"),
    (["example.arith@1", "add", "-1", "1"], "InvalidArgument", "out of range for u32"),
    (["example.arith@1", "9", "--returns", "u32"], "FunctionNotAvailable", "id 9"),
])
def test_call_errors(argv: list[str], kind: str, message: str) -> None:
    proc = run_cli("call", EXAMPLES, *argv)
    assert proc.returncode == 1
    assert proc.stdout == ""
    line = error_line(proc)
    assert line.startswith(f"error: {kind}: "), line
    assert re.search(message, line), line


@pytest.mark.parametrize("t, arg, message", [
    ("bool", "maybe", "is not a bool"), ("f64", "abc", "is not a number"),
    ("f32", "1e39", "out of range for f32"), ("i8", "128", r"out of range for i8 \(-128\.\.127\)"),
    ("u64", "18446744073709551616", "out of range for u64"), ("i64", "", "not an integer"),
])
def test_call_bad_literals(echo_dir: Path, t: str, arg: str, message: str) -> None:
    proc = run_cli("call", echo_dir, "test.echo", f"echo_{t}", arg)
    assert proc.returncode == 1
    line = error_line(proc)
    assert line.startswith("error: InvalidArgument: "), line
    assert re.search(message, line), line


def test_call_reports_bundles_that_failed_to_load(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "arith", tmp_path / "arith")
    write_bundle(tmp_path, "broken", "this is not lua(", "example.broken", 1)
    proc = run_cli("call", tmp_path, "example.arith@1", "add", "1", "2")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "3\n", "")
    proc = run_cli("call", tmp_path, "example.broken", "f")
    assert proc.returncode == 1
    line = error_line(proc)
    assert line.startswith("error: PluginNotFound: ")
    assert "1 bundle(s) failed to load: broken: InitFailed: " in line


def test_call_guest_error_inside_a_factory(tmp_path: Path) -> None:
    lua = """
    local made = 0
    function polyplug_init()
        return { ["test.fragile"] = { contract_version = 1,
            factory = function()
                made = made + 1
                if made > 1 then error("no more instances") end
                return {}
            end,
            functions = { [0] = function() end } } }, { code = 0 }
    end"""
    d = write_bundle(tmp_path, "fragile", lua, "test.fragile", 1, "noop = { id = 0 }\n")
    assert run_cli("call", d, "test.fragile", "noop").returncode == 0
    proc = run_cli("call", d, "test.fragile", "noop", "--instance")
    assert proc.returncode == 1
    line = error_line(proc)
    assert line.startswith("error: GuestError: ") and "no more instances" in line, line


@pytest.mark.parametrize("argv, message", [
    (["example.arith@x", "add", "1", "2"], "bad contract 'example.arith@x'"),
    (["example.arith@-1", "add", "1", "2"], "bad contract"),
    (["@1", "add"], "bad contract"),
    (["example.arith", "add", "1", "2", "--args", "u32,u32"], "--args/--returns describe"),
    (["example.arith", "0", "1", "2", "--args", "u33"], "--args: unknown type 'u33'"),
    (["example.arith", "0", "--returns", "float128"], "--returns: unknown type"),
    (["example.arith@1", "7", "1", "2"], "function 7 has no entry in the signature table"),
    (["example.arith@1", "99999999999", "--returns", "u32"], "out of range"),
])
def test_call_usage_errors(argv: list[str], message: str) -> None:
    proc = run_cli("call", EXAMPLES, *argv)
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith("error: UsageError: ") and message in line, line


def test_call_argparse_usage_errors(tmp_path: Path) -> None:
    proc = run_cli("call", EXAMPLES, "example.arith")
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc = run_cli("call", EXAMPLES, "example.arith", "add", "1", "2", "--log", "loud")
    assert proc.returncode == 2
    proc = run_cli("call", tmp_path, "example.arith", "add", "1", "2")
    assert proc.returncode == 2 and "no bundle" in error_line(proc)
    proc = run_cli("call", tmp_path / "missing", "example.arith", "add", "1", "2")
    assert proc.returncode == 2


# ── watch ────────────────────────────────────────────────────────────────────


class Watch:
    """``python -m polyplug watch`` in a subprocess, its stdout read line by line."""

    def __init__(self, *args: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "polyplug", "watch", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            env=ENV)
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: list[str] = []
        self.stderr: list[str] = []
        self.readers = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self.readers:
            t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """The next line matching ``pattern`` (a regex); fails after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = ""
            if line is None:
                raise AssertionError(f"watch exited before {pattern!r}; saw {self.seen}")
            if line:
                self.seen.append(line)
                if re.search(pattern, line):
                    return line
            if time.monotonic() >= deadline:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s; "
                                     f"saw {self.seen}")

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the exit; returns (exit code, stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for t in self.readers:
            t.join(timeout=10)
        while True:  # the rest of stdout, for later assertions
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                break
            self.seen.append(line)
        return self.proc.returncode, "".join(self.stderr)


STAMP = r"^\[\d\d:\d\d:\d\d\] "


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    for name in ("arith", "text"):
        shutil.copytree(EXAMPLES / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_watch_reloads_and_survives_a_broken_edit(watched: Path) -> None:
    w = Watch(watched, "--interval", "0.05", "--debounce", "0.1", "--timeout", "120")
    try:
        w.wait_for(STAMP + r"arith: Loaded 1\.0\.0 \(example\.arith@1\)")
        w.wait_for(STAMP + r"text: Loaded 1\.0\.0 \(example\.text@1\)")
        w.wait_for(STAMP + r"watching 2 bundle\(s\)")
        _edit(watched / "arith" / "arith.lua", "result(out_ptr, a + b)",
              "result(out_ptr, a + b + 1000)")
        w.wait_for(STAMP + "arith: Preparing$")
        w.wait_for(STAMP + "arith: Reloaded$")
        (watched / "arith" / "arith.lua").write_text("this is not lua(\n")
        w.wait_for(STAMP + "arith: Preparing$")
        failed = w.wait_for(STAMP + "arith: Failed: ")
        assert "arith.lua:1:" in failed
        w.wait_for(STAMP + "arith: keeping the previous version$")
        shutil.copy(EXAMPLES / "arith" / "arith.lua", watched / "arith" / "arith.lua")
        w.wait_for(STAMP + "arith: Reloaded$")
        w.proc.send_signal(signal.SIGINT)  # Ctrl-C
        code, err = w.finish()
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert code == 0, err
    assert re.search(STAMP + "stopped$", w.seen[-1])
    # the untouched bundle was left alone
    assert not any(re.search(STAMP + "text: (Preparing|Reloaded)", line) for line in w.seen)
    assert "Traceback" not in err


def test_watch_debounces_a_burst_of_writes(watched: Path) -> None:
    w = Watch(watched / "arith", "--interval", "0.05", "--debounce", "0.5",
              "--max-reloads", "2", "--timeout", "4")
    try:
        w.wait_for("watching 1 bundle")
        lua = watched / "arith" / "arith.lua"
        for i in range(6):  # six writes within ~0.3 s: one reload
            _edit(lua, "a + b" if i == 0 else f"a + b + {i - 1}", f"a + b + {i}")
            time.sleep(0.05)
        code, err = w.finish(timeout=60)
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert code == 0, err
    assert sum("arith: Reloaded" in line for line in w.seen) == 1, w.seen
    assert "stopping: --timeout reached" in w.seen[-1]


def test_watch_loads_a_bundle_that_failed_at_start(tmp_path: Path) -> None:
    d = write_bundle(tmp_path, "late", "this is not lua(", "test.late", 1)
    w = Watch(d, "--interval", "0.05", "--debounce", "0.05", "--once", "--timeout", "60")
    try:
        w.wait_for(STAMP + "late: Failed: InitFailed: ")
        w.wait_for("watching 1 bundle")
        (d / "bundle.lua").write_text(
            "function polyplug_init() return { ['test.late'] = { contract_version = 1, "
            "factory = function() return {} end, functions = { [0] = function() end } } }, "
            "{ code = 0 } end\n")
        w.wait_for(STAMP + "late: Loading$")
        w.wait_for(STAMP + "late: Loaded$")
        code, err = w.finish()
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert code == 0, err


def test_watch_timeout_and_sigterm(watched: Path) -> None:
    w = Watch(watched, "--timeout", "0.5")
    code, err = w.finish()
    assert code == 0, err
    assert "stopping: --timeout reached" in w.seen[-1]

    w = Watch(watched)
    try:
        w.wait_for("watching 2 bundle")
        w.proc.terminate()
        code, err = w.finish()
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert code == 0, err
    assert w.seen[-1].endswith("stopped")


@pytest.mark.parametrize("how", [["--once"], ["--max-reloads", "2"], ["--timeout", "3"]])
def test_watch_exits_1_when_its_last_reload_failed(watched: Path, how: list[str]) -> None:
    lua = watched / "arith" / "arith.lua"
    with Watch(watched / "arith", "--interval", "0.05", "--debounce", "0.05", *how,
               *(["--timeout", "60"] if how[0] != "--timeout" else [])) as w:
        w.wait_for("watching 1 bundle")
        if how[0] == "--max-reloads":  # a good reload first: only the last one counts
            _edit(lua, "a + b", "a + b + 1")
            w.wait_for(STAMP + "arith: Reloaded$")
            time.sleep(0.2)
        lua.write_text("this is not lua(\n")
        w.wait_for(STAMP + "arith: Failed: ")
        code, err = w.finish(timeout=60)
    assert code == 1, (w.seen, err)
    assert w.seen[-1].endswith("; the last reload failed"), w.seen


def test_watch_exits_0_when_a_failed_reload_was_repaired(watched: Path) -> None:
    lua = watched / "arith" / "arith.lua"
    good = lua.read_text()
    with Watch(watched / "arith", "--interval", "0.05", "--debounce", "0.05",
               "--max-reloads", "2", "--timeout", "60") as w:
        w.wait_for("watching 1 bundle")
        lua.write_text("this is not lua(\n")
        w.wait_for(STAMP + "arith: Failed: ")
        lua.write_text(good)
        w.wait_for(STAMP + "arith: Reloaded$")
        code, err = w.finish(timeout=60)
    assert code == 0, (w.seen, err)
    assert w.seen[-1].endswith("stopping after 2 reload(s)")


def test_watch_usage_errors(tmp_path: Path) -> None:
    proc = run_cli("watch", tmp_path)
    assert proc.returncode == 2 and "no bundle" in error_line(proc)
    proc = run_cli("watch", EXAMPLES, "--interval", "0")
    assert proc.returncode == 2 and "--interval" in error_line(proc)
    proc = run_cli("watch", EXAMPLES, "--debounce", "soon")
    assert proc.returncode == 2


# ── new ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name, ident", [("demo", "demo"), ("my-plugin", "my_plugin")])
def test_new_scaffolds_a_working_bundle(tmp_path: Path, name: str, ident: str) -> None:
    proc = run_cli("new", name, "--dir", tmp_path)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    d = tmp_path / name
    assert sorted(p.name for p in d.iterdir()) == sorted([f"{ident}.lua", "manifest.toml",
                                                          f"test_{ident}.py"])
    assert proc.stdout.splitlines() == [
        f"created {d}/", "  manifest.toml", f"  {ident}.lua", f"  test_{ident}.py",
        f"try:  python -m polyplug call {d} {ident}.greet@1 hello you",
        f"test: python -m pytest {d}   (needs pytest: python -m pip install pytest)"]

    m = read_manifest(d)
    assert (m.name, m.id, m.version, m.loader, m.file) == (name, bundle_id(name), "0.1.0",
                                                           "lua", f"{ident}.lua")
    assert m.provides == [f"{ident}.greet@1"]
    assert m.function_count == {f"{ident}.greet@1": 1}
    hello = m.signatures[f"{ident}.greet@1"]["hello"]
    assert (hello.id, hello.args, hello.returns) == (0, ("string",), "string")

    proc = run_cli("load", d)
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"^{name}\s+0\.1\.0\s+lua\s+{ident}\.greet@1\s+1\s", proc.stdout, re.M)
    proc = run_cli("call", d, f"{ident}.greet@1", "hello", "you")
    assert (proc.returncode, proc.stdout) == (0, "Hello, you!\n")
    proc = run_cli("call", tmp_path, f"{ident}.greet", "hello", "", "--json")
    assert json.loads(proc.stdout) == {"result": "Hello, world!"}

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(d)], capture_output=True, text=True, cwd=d, env=ENV,
                           timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_new_in_the_current_directory(tmp_path: Path) -> None:
    proc = run_cli("new", "here", cwd=tmp_path)
    assert proc.returncode == 0
    assert (tmp_path / "here" / "manifest.toml").is_file()


def test_new_refuses_to_overwrite(tmp_path: Path) -> None:
    assert run_cli("new", "twice", "--dir", tmp_path).returncode == 0
    lua = tmp_path / "twice" / "twice.lua"
    lua.write_text("-- edited\n")
    proc = run_cli("new", "twice", "--dir", tmp_path)
    assert proc.returncode == 1
    assert "already exists" in error_line(proc)
    assert lua.read_text() == "-- edited\n"
    (tmp_path / "plain").write_text("a file")
    assert run_cli("new", "plain", "--dir", tmp_path).returncode == 1


@pytest.mark.parametrize("name", ["9lives", "a/b", "dotted.name", "with space", "_x",
                                  "x" * 65, "ünï"])
def test_new_validates_the_name(tmp_path: Path, name: str) -> None:
    proc = run_cli("new", name, "--dir", tmp_path)
    assert proc.returncode == 2
    assert "bad bundle name" in error_line(proc)
    assert list(tmp_path.iterdir()) == []


# ── one error shape ──────────────────────────────────────────────────────────

ERROR_LINE = re.compile(r"error: [A-Z][A-Za-z]*: \S.*")


def _bundle_with_loader(root: Path, loader: str) -> Path:
    d = root / "arith"
    shutil.copytree(EXAMPLES / "arith", d)
    _edit(d / "manifest.toml", 'loader = "lua"', f'loader = "{loader}"')
    return d


@pytest.mark.parametrize("command, loader, kind, message", [
    ("load", "Lua", "NoLoaderForName", 'bundle "arith" declares loader "Lua" but no loader is '
     'registered for "Lua": loader names are case-sensitive; did you mean "lua"? (registered: '
     '"lua", "native")'),
    ("load", "wasm", "NoLoaderForName", 'bundle "arith" declares loader "wasm" but no loader is '
     'registered for "wasm" (registered: "lua", "native"). | Register one first, e.g. '
     "RuntimeBuilder().loader(LuaLoader())."),
    ("call", "wasm", "PluginNotFound", "no loaded bundle provides contract 'example.arith' (1 "
     'bundle(s) failed to load: arith: NoLoaderForName: bundle "arith" declares loader "wasm" '
     'but no loader is registered for "wasm" (registered: "lua", "native"). | Register one '
     "first, e.g. RuntimeBuilder().loader(LuaLoader()).)"),
])
def test_every_failure_is_one_error_line(tmp_path: Path, command: str, loader: str, kind: str,
                                          message: str) -> None:
    d = _bundle_with_loader(tmp_path, loader)
    args = ["example.arith", "add", "1", "2"] if command == "call" else []
    proc = run_cli(command, d, *args)
    assert proc.returncode == 1
    assert error_line(proc) == f"error: {kind}: {message}"


def test_failures_of_every_command_share_the_shape(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_bytes(b"not a key")
    broken = write_bundle(tmp_path, "broken", "this is not lua(", "test.broken", 1)
    runs = [
        run_cli("load", broken),
        run_cli("call", EXAMPLES, "example.arith", "div", "1", "0"),
        run_cli("call", EXAMPLES, "example.arith@7", "add", "1", "2"),
        run_cli("verify", EXAMPLES / "arith"),
        run_cli("verify", EXAMPLES / "arith", "--key", tmp_path / "k.pub"),
        run_cli("sign", EXAMPLES / "arith", "--key", tmp_path / "missing.key"),
        run_cli("new", "arith", "--dir", EXAMPLES),
    ]
    for proc in runs:
        assert proc.returncode == 1, proc.args
        assert ERROR_LINE.fullmatch(error_line(proc)), proc.stderr
    assert error_line(runs[0]).startswith("error: InitFailed: init failed for bundle `broken`")
    assert error_line(runs[2]).startswith("error: PluginNotFound: no plugin found for "
                                          "contract_id=0x")
    assert "no loaded bundle provides `example.arith@7`; loaded: `example.arith@1` (bundle " \
           "`arith`) — ask for that major instead" in error_line(runs[2])


# ── load reports each provider's own function count ──────────────────────────


def test_load_counts_the_functions_of_each_provider(tmp_path: Path) -> None:
    def provider(name: str, count: int) -> None:
        fns = ", ".join(f"[{i}] = function() end" for i in range(count))
        lua = (f"function polyplug_init() return {{ ['shared.c'] = {{ contract_version = 1, "
               f"plugin_name = '{name}', factory = function() return {{}} end, "
               f"functions = {{ {fns} }} }} }}, {{ code = 0 }} end\n")
        write_bundle(tmp_path, name, lua, "shared.c", count)

    provider("first", 1)
    provider("second", 3)
    proc = run_cli("load", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^first\s+1\.0\.0\s+lua\s+shared\.c@1\s+1\s", proc.stdout, re.M)
    assert re.search(r"^second\s+1\.0\.0\s+lua\s+shared\.c@1\s+3\s", proc.stdout, re.M)
    reports = {r["name"]: r for r in json.loads(run_cli("load", tmp_path, "--json").stdout)}
    assert [c["functions"] for c in reports["second"]["contracts"]] == [3]


# ── the console script ───────────────────────────────────────────────────────


def test_the_console_script_and_python_m_run_the_same_cli() -> None:
    from importlib.metadata import entry_points

    eps = entry_points()
    scripts = (eps.select(group="console_scripts") if hasattr(eps, "select")
               else eps["console_scripts"])  # Python 3.9: a dict of groups
    # 3.9 lists a distribution once per path entry that finds it: one target, maybe twice
    [(module, attr)] = {(ep.module, ep.attr) for ep in scripts if ep.name == "polyplug"}
    code = f"import sys; from {module} import {attr}; sys.exit({attr}(['version']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, run_cli("version").stdout)
    assert proc.stdout.startswith("polyplug ")


def test_a_reader_that_goes_away_early_gets_no_traceback(tmp_path: Path) -> None:
    # `python -m polyplug load DIR --json | head -0`: the reader is gone before anything
    # is printed (closing our end before the interpreter has even started)
    proc = subprocess.Popen([sys.executable, "-m", "polyplug", "load", str(EXAMPLES),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 1) and "Traceback" not in err, err
