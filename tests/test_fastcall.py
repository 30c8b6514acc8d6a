"""The Pythonic call layer's C path (polyplug._fastcall, csrc/python/fastcall.c).

What the functions of ``rt.contract(...)`` do beyond the typed round trips of
test_call_layer.py: the ``bytes`` type, hostile inputs (huge strings, invalid UTF-8,
NUL bytes, NULL views, wrong types), calls that nest on one thread through a host
callback, many threads sharing one function, and the GIL released while a guest runs.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import write_typed_bundle

import polyplug
from polyplug import GuestError, InvalidArgument, LogLevel, ffi
from polyplug.signature import FunctionSig

LUA = r"""
local CONTRACT = ...
local ffi = require("ffi")
local pg = require("polyplug_guest")
local VIEW = ffi.typeof("const StringView *")

local function text(a) return pg.read_string(pg.ptr(a, VIEW)[0]) end

local F = {}
F[0] = function(_, a, o, ap, aa)            -- echo_bytes(bytes) -> bytes
    pg.write_string(o, ap, aa, text(a))
end
F[1] = function(_, a, o, ap, aa)            -- echo(string) -> string
    pg.write_string(o, ap, aa, text(a))
end
F[2] = function(_, a, o, ap, aa)            -- bad_utf8() -> string
    pg.write_string(o, ap, aa, "ok \255\254 no")
end
F[3] = function(_, a, o, ap, aa)            -- bad_utf8_bytes() -> bytes
    pg.write_string(o, ap, aa, "ok \255\254 no")
end
F[4] = function(_, a, o)                    -- null_view() -> string
    local v = pg.ptr(o, "StringView *")
    v.ptr, v.len = nil, 5
end
F[5] = function(_, a, o)                    -- size(bytes) -> u64
    pg.ptr(o, "uint64_t *")[0] = #text(a)
end
F[6] = function(self, a, o, ap, aa)         -- nest(string) -> string
    local s = text(a)
    -- arena memory of this call, written before the host callback runs nested calls
    local early = pg.alloc_string_arena(aa, ap, "early:" .. s)
    pg.log(self.host, pg.LogLevel.Info, "nest", s)
    pg.ptr(o, "StringView *")[0] = early
end
F[7] = function(_, a, o)                    -- wait_flag(u64 address, u32 ms) -> bool
    local x = pg.ptr(a, "const struct { uint64_t addr; uint32_t ms; } *")[0]
    local flag = ffi.cast("volatile uint32_t *", x.addr)
    local stop = os.clock() + x.ms / 1000
    while flag[0] == 0 do
        if os.clock() > stop then
            pg.ptr(o, "bool *")[0] = false
            return
        end
    end
    pg.ptr(o, "bool *")[0] = true
end
F[8] = function(_, a, o, ap, aa)            -- pair(string, bytes) -> string
    local x = pg.ptr(a, "const struct { StringView s; StringView b; } *")[0]
    pg.write_string(o, ap, aa, pg.read_string(x.s) .. "|" .. pg.read_string(x.b))
end
F[9] = function(_, a, o, ap, aa)            -- large_views(u32 n, u32 which) -> bytes
    local x = pg.ptr(a, "const struct { uint32_t n; uint32_t which; } *")[0]
    local first = pg.alloc_string_arena(aa, ap, string.rep("a", x.n))
    local second = pg.alloc_string_arena(aa, ap, string.rep("b", x.n))
    local v = pg.ptr(o, "StringView *")
    if x.which == 0 then
        v[0] = first
    elseif x.which == 1 then
        v[0] = second
    elseif x.which == 3 then                -- the first, starting with its own address
        ffi.cast("uint64_t *", first.ptr)[0] = ffi.cast("uint64_t", first.ptr)
        v[0] = first
    else
        v.ptr, v.len = first.ptr + 1, first.len - 1
    end
end
F[10] = function(_, a, o, ap, aa)           -- large_then_fail(u32 n) -> bytes
    pg.alloc_string_arena(aa, ap, string.rep("x", pg.ptr(a, "const uint32_t *")[0]))
    error("failed after a large allocation")
end
function polyplug_init()
    return { [CONTRACT] = { contract_version = 1,
                               factory = function(host) return { host = host } end,
                               functions = F } }, { code = 0 }
end
"""

FUNCTIONS = """\
echo_bytes = { id = 0, args = ["bytes"], returns = "bytes" }
echo = { id = 1, args = ["string"], returns = "string" }
bad_utf8 = { id = 2, returns = "string" }
bad_utf8_bytes = { id = 3, returns = "bytes" }
null_view = { id = 4, returns = "string" }
size = { id = 5, args = ["bytes"], returns = "u64" }
nest = { id = 6, args = ["string"], returns = "string" }
wait_flag = { id = 7, args = ["u64", "u32"], returns = "bool" }
pair = { id = 8, args = ["string", "bytes"], returns = "string" }
large_views = { id = 9, args = ["u32", "u32"], returns = "bytes" }
large_then_fail = { id = 10, args = ["u32"], returns = "bytes" }
"""


def lua_for(contract: str) -> str:
    return LUA.replace("local CONTRACT = ...", f"local CONTRACT = {contract!r}")


class Nesting:
    """A log callback that makes calls of its own (into another bundle: the VM that is
    running the call refuses re-entry) while a guest call is running."""

    def __init__(self) -> None:
        self.peer: Any = None
        self.seen: list[bool] = []

    def __call__(self, level: LogLevel, scope: str, message: str) -> None:
        if scope != "nest" or self.peer is None:
            return
        big = message * 3000  # past the stack arena: an overflow block
        self.seen.append(self.peer.echo(big) == big and self.peer.echo(message) == message
                         and self.peer.echo_bytes(big.encode()) == big.encode())


@pytest.fixture
def nesting() -> Nesting:
    return Nesting()


@pytest.fixture
def fast(tmp_path: Path, nesting: Nesting) -> Iterator[Any]:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(nesting).build() as rt:
        for name in ("fast", "peer"):
            rt.load_bundle(write_typed_bundle(tmp_path, name, lua_for(f"test.{name}"),
                                              f"test.{name}", 11, FUNCTIONS))
        nesting.peer = rt.contract("test.peer", 1)
        yield rt.contract("test.fast", 1)
        nesting.peer = None


# ── bytes ────────────────────────────────────────────────────────────────────


def test_bytes_carry_every_byte_value_both_ways(fast: Any) -> None:
    data = bytes(range(256)) * 3
    out = fast.echo_bytes(data)
    assert out == data and type(out) is bytes
    assert fast.echo_bytes(b"") == b""
    assert fast.echo_bytes(b"\0") == b"\0"
    assert fast.echo_bytes(bytearray(b"a\0b")) == b"a\0b"
    assert fast.echo_bytes(memoryview(b"xyz")[1:]) == b"yz"


def test_a_str_is_not_bytes(fast: Any) -> None:
    with pytest.raises(TypeError) as info:
        fast.echo_bytes("text")
    assert str(info.value) == ("echo_bytes(bytes) -> bytes: argument 1 (bytes): a bytes "
                               "argument must be bytes, bytearray or memoryview, not str")
    for bad in (5, None, [1, 2]):
        with pytest.raises(TypeError, match="must be bytes, bytearray or memoryview"):
            fast.echo_bytes(bad)


def test_bytes_signature_in_the_manifest(fast: Any) -> None:
    assert fast.functions["echo_bytes"] == FunctionSig("echo_bytes", 0, ("bytes",), "bytes")
    assert fast.echo_bytes.signature.describe() == "echo_bytes(bytes) -> bytes"
    assert fast.function(0, ["bytes"], "bytes")(b"\xff") == b"\xff"


def test_string_and_bytes_arguments_together(fast: Any) -> None:
    assert fast.pair("añ", b"b\x00c") == "añ|b\x00c"
    with pytest.raises(GuestError, match="not UTF-8"):
        fast.pair("añ", b"\xff")  # the guest joins them: the result is not UTF-8
    assert fast.pair(b"raw", bytearray(b"x")) == "raw|x"


# ── large bytes results (written straight into the returned object) ─────────


@pytest.mark.parametrize("size", [16383, 16384, 16385, 65536, 3 << 20])
def test_a_large_bytes_result_is_exact_and_owned_by_the_caller_alone(fast: Any,
                                                                     size: int) -> None:
    data = bytes(i * 13 % 256 for i in range(size))
    out = fast.echo_bytes(data)
    assert type(out) is bytes and out == data
    assert sys.getrefcount(out) == 2  # `out` and the argument: nothing else holds it
    assert fast.echo_bytes(b"small") == b"small"  # the next call starts clean
    assert out == data


def test_every_view_into_large_arena_memory_reads_right(fast: Any) -> None:
    """The guest makes two 100 KB allocations in one call (the first may be the result
    object, the second is ordinary overflow memory) and returns the first, the second,
    or a view into the middle of the first: each result is what the guest wrote."""
    n = 100_000
    for _ in range(3):
        assert fast.large_views(n, 0) == b"a" * n
        assert fast.large_views(n, 1) == b"b" * n
        assert fast.large_views(n, 2) == b"a" * (n - 1)
        assert fast.large_views(10, 2) == b"a" * 9


def test_a_large_bytes_result_is_not_copied(fast: Any) -> None:
    """The guest writes the address of the memory it got from its arena into the
    result: a result of 16 KiB and more is the very object it wrote; smaller ones are
    copies out of the arena."""
    import struct

    for n, direct in ((20_000, True), (1 << 20, True), (16 * 1024, True), (8000, False)):
        out = fast.large_views(n, 3)
        written = struct.unpack("<Q", out[:8])[0]
        buffer = int(ffi.cast("uintptr_t", ffi.from_buffer(out)))
        assert (written == buffer) is direct, n
        assert out[8:] == b"a" * (n - 8)


def test_large_bytes_results_leak_nothing(fast: Any) -> None:
    """Python's own allocator tracing: 300 calls with 1 MiB results, dropped at once,
    and 300 calls that fail after a 1 MiB allocation leave no bytes object behind."""
    import tracemalloc

    blob = bytes(1 << 20)
    fast.echo_bytes(blob)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            fast.echo_bytes(blob)
            with pytest.raises(GuestError, match="failed after a large allocation"):
                fast.large_then_fail(1 << 20)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024, f"{grown} bytes still allocated after 600 calls"


LATE_LUA = r"""
local ffi = require("ffi")
local pg = require("polyplug_guest")
local function late_large(_, a, o, ap, aa)   -- (u64 flag address, u32 ms) -> bytes
    local x = pg.ptr(a, "const struct { uint64_t flag; uint32_t ms; } *")[0]
    local stop = os.clock() + x.ms / 1000
    while os.clock() < stop do end
    pg.write_string(o, ap, aa, string.rep("p", 100000))  -- a large result: the GIL
    if x.flag ~= 0 then ffi.cast("volatile uint32_t *", x.flag)[0] = 1 end
end
function polyplug_init()
    return { ["t.late"] = { factory = function() return {} end,
                            functions = { [0] = late_large } } }, { code = 0 }
end
"""

LATE_MAIN = r"""
import sys, threading, time
import polyplug
from polyplug import ffi
from polyplug._ffi import fastcall

rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
rt.load_bundle(sys.argv[1])
fn = rt.contract("t.late", 1).late_large
flag = ffi.new("uint32_t *")
started = threading.Event()

def call():
    started.set()
    fn(int(ffi.cast("uintptr_t", flag)), 300)

sys.setswitchinterval(100)  # this thread keeps the GIL while it runs Python code
threading.Thread(target=call, daemon=True).start()
started.wait()
end = time.monotonic() + 1.0
while time.monotonic() < end:  # meanwhile the guest's large result waits for the GIL
    pass
fastcall.mark_finalizing()  # what interpreter exit runs, before Python ends such waits
end = time.monotonic() + 3.0
while flag[0] == 0 and time.monotonic() < end:  # still holding the GIL
    pass
print("the waiting call got its buffer:", flag[0] == 1)
print("after:", fn(0, 0) == b"p" * 100000)
"""


def test_interpreter_exit_lets_a_call_waiting_for_the_gil_finish_its_take(
        tmp_path: Path) -> None:
    """A daemon thread whose guest asked for its large result just before interpreter
    exit waits for the GIL inside the call; Python ends a thread that takes the GIL
    once it finalizes, so mark_finalizing (atexit) lets every such take finish first
    instead of leaving it to be ended mid-call, holding its bundle's lock."""
    d = write_typed_bundle(tmp_path, "late", LATE_LUA, "t.late", 1,
                           'late_large = { id = 0, args = ["u64", "u32"], returns = "bytes" }\n')
    proc = subprocess.run([sys.executable, "-c", LATE_MAIN, str(d)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "the waiting call got its buffer: True" in proc.stdout, proc.stdout
    assert "after: True" in proc.stdout, proc.stdout


# ── hostile inputs ───────────────────────────────────────────────────────────


def test_nul_bytes_in_strings(fast: Any) -> None:
    s = "\0a\0\0b\0"
    assert fast.echo(s) == s
    assert fast.echo(s.encode()) == s
    assert fast.size(b"\0" * 1000) == 1000


@pytest.mark.parametrize("size", [4095, 4096, 4097, 1 << 20, 32 << 20])
def test_huge_strings_and_bytes(fast: Any, size: int) -> None:
    data = bytes(i * 7 % 256 for i in range(251)) * (size // 251 + 1)
    data = data[:size]
    assert fast.echo_bytes(data) == data
    text = ("ü😀x" * (size // 7 + 1)).encode()[:size].decode("utf-8", "ignore")
    assert fast.echo(text) == text
    assert fast.size(data) == size


def test_invalid_utf8_results_raise_guest_error(fast: Any) -> None:
    for _ in range(3):  # and the function stays usable
        with pytest.raises(GuestError) as info:
            fast.bad_utf8()
        assert str(info.value).startswith("the guest returned a string that is not UTF-8 (")
        assert "can't decode byte 0xff in position 3" in str(info.value)
        assert fast.echo("fine") == "fine"
    assert fast.bad_utf8_bytes() == b"ok \xff\xfe no"  # bytes are not decoded


def test_a_null_view_with_a_length_is_a_guest_error(fast: Any) -> None:
    with pytest.raises(GuestError, match="StringView with a null pointer"):
        fast.null_view()


def test_a_lone_surrogate_cannot_be_sent(fast: Any) -> None:
    with pytest.raises(UnicodeEncodeError):
        fast.echo("a\ud800b")
    assert fast.echo("after") == "after"


def test_wrong_argument_types(fast: Any) -> None:
    for bad in (None, 3, 2.5, object(), ["x"]):
        with pytest.raises(TypeError, match="must be str or bytes"):
            fast.echo(bad)
    with pytest.raises(InvalidArgument, match=r"argument 1 \(u64\): -1 is out of range"):
        fast.wait_flag(-1, 0)
    with pytest.raises(InvalidArgument, match=r"argument 2 \(u32\): 'x' is not an integer"):
        fast.wait_flag(0, "x")
    with pytest.raises(InvalidArgument, match=r"argument 1 \(u64\): 2.0 is not an integer"):
        fast.wait_flag(2.0, 0)


def test_arity_and_keywords_are_type_errors(fast: Any) -> None:
    with pytest.raises(TypeError, match=r"test\.fast@1\.echo.* takes 1 argument \(0 given\)"):
        fast.echo()
    with pytest.raises(TypeError, match=r"takes 2 arguments \(3 given\)"):
        fast.pair("a", b"b", "c")
    with pytest.raises(TypeError, match="no keyword arguments"):
        fast.echo(s="x")
    with pytest.raises(TypeError, match="no keyword arguments"):
        fast.echo(*["x"], **{"extra": 1})
    assert fast.echo(*["x"]) == "x"  # through tp_call as well as vectorcall


def test_function_objects_describe_themselves(fast: Any) -> None:
    assert repr(fast.echo) == "<polyplug function test.fast@1.echo>"
    assert fast.echo.__name__ == "echo"
    assert fast.echo.__doc__ == "test.fast@1: echo(string) -> string"


# ── nesting and threads ──────────────────────────────────────────────────────


def test_calls_nested_in_a_host_callback_keep_their_own_arena(fast: Any,
                                                             nesting: Nesting) -> None:
    """A guest call allocates in its arena, then a host callback on the same thread makes
    calls whose results overflow their own arenas; the outer result is intact."""
    for i in range(50):
        s = f"call {i} ü"
        assert fast.nest(s) == "early:" + s
    assert nesting.seen == [True] * 50


def test_threads_share_functions_with_strings_of_every_size(fast: Any) -> None:
    echo, echo_bytes = fast.echo, fast.echo_bytes
    failures: list[str] = []
    start = threading.Barrier(4)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(400):
                s = f"{k}:{i}:" + "é" * (i * 37 % 5000)
                b = bytes([k]) * (i * 211 % 40_000)  # both sides of 16 KiB
                if echo(s) != s or echo_bytes(b) != b:
                    failures.append(f"thread {k} call {i}")
                    return
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"thread {k}: {exc!r}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert failures == []


def test_the_gil_is_released_while_a_guest_runs(fast: Any) -> None:
    """The guest spins until a flag in memory is set; only Python code in another thread
    sets it, which it can do only while the call has released the GIL (otherwise the
    guest gives up after 20 s and returns False)."""
    flag = ffi.new("uint32_t *")
    address = int(ffi.cast("uintptr_t", flag))
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(fast.wait_flag(address, 20_000)))
    t.start()
    time.sleep(0.05)  # let the call start (setting the flag earlier is fine too)
    flag[0] = 1
    t.join(timeout=60)
    assert result == [True]


def test_threads_with_small_stacks_can_call(fast: Any) -> None:
    """Calls keep little on the C stack (the arena is on the heap): a 32 KiB thread may
    still make them, with results that overflow the arena."""
    results: list[bool] = []

    def work() -> None:
        results.append(fast.echo("x" * 10_000) == "x" * 10_000 and fast.echo("y") == "y")

    old = threading.stack_size(32768)
    try:
        t = threading.Thread(target=work)
        t.start()
        t.join(timeout=60)
    finally:
        threading.stack_size(old)
    assert results == [True]


def test_a_thread_s_arenas_are_freed_when_it_exits(tmp_path: Path) -> None:
    """Each thread keeps its call arenas (and their overflow blocks, up to 256 KiB) for
    its next calls and frees them when it exits: 200 short-lived threads leave no 200
    copies behind.  In a child process, so that RSS is this test's alone."""
    d = write_typed_bundle(tmp_path, "fast", lua_for("test.fast"), "test.fast", 11, FUNCTIONS)
    code = f"""
import threading, polyplug
rt = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
rt.load_bundle({str(d)!r})
fast = rt.contract("test.fast", 1)
blob = bytes(100_000)
def work():
    for _ in range(3):
        assert fast.echo_bytes(blob) == blob
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def threads(n):
    for _ in range(n):
        t = threading.Thread(target=work); t.start(); t.join()
threads(20)
before = rss()
threads(200)
print((rss() - before) // 1024)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    growth_kib = int(proc.stdout)
    assert growth_kib < 8 * 1024, f"RSS grew by {growth_kib} KiB over 200 threads"


def test_the_cli_passes_and_prints_bytes(tmp_path: Path) -> None:
    import base64
    import json

    d = write_typed_bundle(tmp_path, "fast", lua_for("test.fast"), "test.fast", 11, FUNCTIONS)
    text = "héllo wörld"

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "polyplug", "call", str(d), "test.fast",
                               *args], capture_output=True, timeout=60)

    proc = cli("echo_bytes", text)
    assert (proc.returncode, proc.stdout) == (0, text.encode() + b"\n"), proc.stderr
    proc = cli("echo_bytes", text, "--json")
    assert proc.returncode == 0, proc.stderr
    assert base64.b64decode(json.loads(proc.stdout)["result"]) == text.encode()
    proc = cli("bad_utf8_bytes")  # not UTF-8: written as it is
    assert (proc.returncode, proc.stdout) == (0, b"ok \xff\xfe no\n"), proc.stderr
