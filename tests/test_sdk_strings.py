"""The guest SDK's string results (csrc/lua/polyplug_guest.lua): alloc_string_arena and
write_string bump the arena's free region from Lua and leave everything else to
arena_alloc (overflow blocks, host->alloc without an arena), so the memory a result
lands in is exactly what CallArena::alloc would have handed out.

Driven with raw calls (``lib.pp_call``) and arenas made here, so the tests see where
every byte went."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_typed_bundle

import polyplug
from polyplug import ffi, lib

HEADER = 24  # ArenaOverflowBlock

GUEST = r"""
local ffi = require("ffi")
local pg = require("polyplug_guest")

local function arg(a) return pg.read_string(pg.ptr(a, "const StringView *")[0]) end

local F = {}
F[0] = function(_, a, o, ap, aa)      -- write_string
    pg.write_string(o, ap, aa, arg(a))
end
F[1] = function(_, a, o, ap, aa)      -- alloc_string_arena into the out slot
    pg.ptr(o, "StringView *")[0] = pg.alloc_string_arena(aa, ap, arg(a))
end
F[2] = function(_, a, o, ap, aa)      -- both helpers with the arena pointer as cdata
    local p = ffi.cast("CallArena *", ffi.cast("uintptr_t", ap))
    local s = arg(a)
    local v = pg.alloc_string_arena(aa, p, s)
    local out = pg.ptr(o, "StringView *")
    pg.write_string(out + 1, p, aa, s .. s)
    out[0] = v
end
F[3] = function(_, a, o, ap, aa)      -- two results, then arena_alloc in C: one bump order
    local s = arg(a)
    local out = pg.ptr(o, "StringView *")
    out[0] = pg.alloc_string_arena(aa, ap, s)
    pg.write_string(out + 1, ap, aa, s)
    pg.ptr(o, "uint64_t *")[4] = aa(1, ap)
end
local MISUSE = {
    function(o, ap, aa) pg.write_string(o, ap, aa, 42) end,
    function(o, ap, aa) pg.write_string(0, ap, aa, "x") end,
    function(o, ap, aa) pg.write_string(o, ap, nil, "x") end,
    function(o, ap, aa) pg.alloc_string_arena(aa, ap, {}) end,
    function(o, ap, aa) pg.alloc_string_arena(nil, ap, "x") end,
}
F[4] = function(_, a, o, ap, aa)      -- misuse n: the error text is the result
    local n = pg.ptr(a, "const uint32_t *")[0]
    local ok, msg = pcall(MISUSE[n], o, ap, aa)
    pg.write_string(o, ap, aa, ok and "no error" or msg)
end
function polyplug_init()
    return { ["test.sdk"] = { contract_version = 1, factory = function() return {} end,
                              functions = F } }, { code = 0 }
end
"""


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[polyplug.Runtime]:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as runtime:
        runtime.load_bundle(write_typed_bundle(tmp_path, "sdk", GUEST, "test.sdk", 5))
        yield runtime


@pytest.fixture
def iface(rt: polyplug.Runtime) -> Any:
    return rt.contract("test.sdk", 1).interface


@pytest.fixture
def arenas(rt: polyplug.Runtime) -> Iterator[Any]:
    made: list[Any] = []

    def make(cap: int) -> Any:
        arena = lib.pp_arena_new(rt.host_api, cap)
        made.append(arena)
        return arena

    yield make
    for arena in made:
        lib.pp_arena_free(arena)


def addr(p: Any) -> int:
    return int(ffi.cast("uintptr_t", p))


def call(iface: Any, fn: int, data: bytes, arena: Any, slots: int = 1) -> Any:
    keep = ffi.from_buffer(data)
    arg = ffi.new("StringView *", (ffi.cast("const uint8_t *", keep), len(data)))
    out = ffi.new("StringView[]", slots + 2)
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, fn, arg, out, arena, err)
    assert err.code == 0, ffi.string(err.message.ptr, err.message.len)
    return out


def text(view: Any) -> bytes:
    return ffi.buffer(view.ptr, view.len)[:] if view.len else b""


@pytest.mark.parametrize("fn", [0, 1])
def test_a_result_that_fits_is_bumped_from_the_arena(iface: Any, arenas: Any, fn: int) -> None:
    arena = arenas(64)
    base = addr(arena.base)
    out = call(iface, fn, b"hello, world", arena)
    assert text(out[0]) == b"hello, world"
    assert addr(out[0].ptr) == base and addr(arena.cur) == base + 12
    assert arena.first_overflow == ffi.NULL
    lib.pp_arena_reset(arena)
    out = call(iface, fn, b"x" * 64, arena)  # an exact fit
    assert addr(out[0].ptr) == base and addr(arena.cur) == addr(arena.end)


@pytest.mark.parametrize("fn", [0, 1])
def test_a_result_that_does_not_fit_goes_to_an_overflow_block(iface: Any, arenas: Any,
                                                              fn: int) -> None:
    arena = arenas(64)
    data = bytes(range(256)) * 40
    out = call(iface, fn, data, arena)
    block = arena.first_overflow
    assert block != ffi.NULL and text(out[0]) == data
    assert addr(out[0].ptr) == addr(block) + HEADER
    assert arena.cur == arena.base  # the bump region was left alone


def test_bump_order_and_alignment_match_arena_alloc(iface: Any, arenas: Any) -> None:
    arena = arenas(256)
    base = addr(arena.base)
    out = call(iface, 3, b"abc", arena, slots=2)
    # "abc" at base, the second copy 8-aligned after it, then C's 1-byte allocation
    assert [addr(out[0].ptr), addr(out[1].ptr)] == [base, base + 8]
    assert text(out[0]) == text(out[1]) == b"abc"
    assert int(ffi.cast("uint64_t *", out)[4]) == base + 16
    assert addr(arena.cur) == base + 17


def test_an_arena_pointer_given_as_cdata(iface: Any, arenas: Any) -> None:
    arena = arenas(256)
    out = call(iface, 2, b"pq", arena, slots=2)
    assert text(out[0]) == b"pq" and text(out[1]) == b"pqpq"
    assert addr(arena.base) <= addr(out[0].ptr) < addr(arena.end)


def test_without_an_arena_results_come_from_host_alloc(rt: polyplug.Runtime,
                                                       iface: Any) -> None:
    host = rt.host_api
    for fn in (0, 1):
        out = call(iface, fn, b"owned by the caller", ffi.NULL)
        assert text(out[0]) == b"owned by the caller"
        host.free(host, ffi.cast("uint8_t *", out[0].ptr), out[0].len, 1)


@pytest.mark.parametrize("fn", [0, 1])
def test_the_empty_string_is_the_null_view(iface: Any, arenas: Any, fn: int) -> None:
    arena = arenas(64)
    out = call(iface, fn, b"", arena)
    assert out[0].ptr == ffi.NULL and out[0].len == 0
    assert arena.cur == arena.base


@pytest.mark.parametrize("n, message", [
    (1, "write_string: expected a string, got a number"),
    (2, "write_string: out_ptr is 0 (the function has no result slot)"),
    (3, "write_string: arena_alloc is nil (pass the 5th argument of the contract function)"),
    (4, "alloc_string_arena: expected a string, got a table"),
    (5, "alloc_string_arena: arena_alloc is nil (pass the 5th argument of the contract "
        "function)"),
])
def test_misuse_is_a_clear_error(iface: Any, arenas: Any, n: int, message: str) -> None:
    arg = ffi.new("uint32_t *", n)
    out = ffi.new("StringView *")
    err = ffi.new("AbiError *")
    arena = arenas(256)
    lib.pp_call(iface, ffi.NULL, 0, 4, arg, out, arena, err)
    assert err.code == 0
    # the error points at the guest's line that misused the helper (MISUSE[n])
    assert re.fullmatch(rf"sdk/bundle\.lua:{29 + n}: " + re.escape(message),
                        text(out[0]).decode())
