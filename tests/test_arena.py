"""CallArena (abi-runtime.md §2.9, lua-loader.md §2.5, §3.7): the bump region, overflow
blocks with their 24-byte headers, reset, and ``arena_alloc`` as a Lua guest sees it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import polyplug
from polyplug import ffi, guest_contract_id, lib

HEADER = 24
MIN_BLOCK = 4096


def addr(p: Any) -> int:
    return int(ffi.cast("uintptr_t", p))


def align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def blocks(arena: Any) -> list[tuple[int, int, int]]:
    """The overflow chain from the head: (address, capacity, used)."""
    out = []
    b = arena.first_overflow
    while b != ffi.NULL:
        out.append((addr(b), int(b.capacity), int(b.used)))
        b = b.next
    return out


@pytest.fixture
def rt() -> Iterator[polyplug.Runtime]:
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as runtime:
        yield runtime


@pytest.fixture
def host(rt: polyplug.Runtime) -> Any:
    return rt.host_api


@pytest.fixture
def new_arena(host: Any) -> Iterator[Any]:
    made: list[Any] = []

    def make(cap: int, with_host: bool = True) -> Any:
        arena = lib.pp_arena_new(host if with_host else ffi.NULL, cap)
        assert arena != ffi.NULL
        made.append(arena)
        return arena

    yield make
    for arena in made:
        lib.pp_arena_free(arena)


# ── the struct as pp_arena_new builds it ─────────────────────────────────────


def test_new_arena_fields(host: Any, new_arena: Any) -> None:
    arena = new_arena(256)
    assert arena.base != ffi.NULL
    assert arena.cur == arena.base
    assert addr(arena.end) - addr(arena.base) == 256
    assert arena.host == host
    assert arena.first_overflow == ffi.NULL
    assert lib.pp_arena_used(arena) == 0


def test_arena_init_over_caller_memory(host: Any) -> None:
    buf = ffi.new("uint8_t[]", 128)
    arena = ffi.new("CallArena *")
    lib.pp_arena_init(arena, host, buf, 128)
    assert arena.base == buf and arena.cur == buf
    assert addr(arena.end) == addr(buf) + 128
    p = lib.pp_arena_alloc(arena, 10, 1)
    assert addr(p) == addr(buf)
    assert addr(arena.cur) == addr(buf) + 10
    lib.pp_arena_release(arena)


# ── bump allocation ──────────────────────────────────────────────────────────


def test_bump_allocation_is_sequential_and_aligned(new_arena: Any) -> None:
    arena = new_arena(1024)
    base = addr(arena.base)
    expected = base
    for size, align in [(1, 1), (3, 1), (8, 8), (1, 1), (16, 16), (2, 2), (5, 64), (7, 4)]:
        p = lib.pp_arena_alloc(arena, size, align)
        want = align_up(expected, align)
        assert addr(p) == want, (size, align)
        assert addr(p) % align == 0
        expected = want + size
        assert addr(arena.cur) == expected
    assert lib.pp_arena_used(arena) == expected - base
    assert arena.first_overflow == ffi.NULL


def test_bump_memory_is_writable_and_disjoint(new_arena: Any) -> None:
    arena = new_arena(512)
    ptrs = []
    for i in range(10):
        p = lib.pp_arena_alloc(arena, 32, 8)
        ffi.memmove(p, bytes([i]) * 32, 32)
        ptrs.append(p)
    for i, p in enumerate(ptrs):
        assert ffi.buffer(p, 32)[:] == bytes([i]) * 32


def test_exact_fit_then_overflow(new_arena: Any) -> None:
    arena = new_arena(64)
    p = lib.pp_arena_alloc(arena, 64, 1)
    assert addr(p) == addr(arena.base)
    assert arena.cur == arena.end
    assert arena.first_overflow == ffi.NULL
    q = lib.pp_arena_alloc(arena, 1, 1)
    assert q != ffi.NULL
    assert arena.first_overflow != ffi.NULL
    assert not addr(arena.base) <= addr(q) < addr(arena.end)


@pytest.mark.parametrize("size,align", [(0, 1), (0, 8), (1, 0), (1, 3), (8, 6), (8, 12),
                                        (8, 100), (1, (1 << 63) + 1)])
def test_bad_requests_return_null_and_change_nothing(new_arena: Any, size: int,
                                                     align: int) -> None:
    arena = new_arena(64)
    before = (addr(arena.cur), addr(arena.first_overflow))
    assert lib.pp_arena_alloc(arena, size, align) == ffi.NULL
    assert (addr(arena.cur), addr(arena.first_overflow)) == before


def test_null_arena() -> None:
    assert lib.pp_arena_alloc(ffi.NULL, 8, 8) == ffi.NULL
    lib.pp_arena_reset(ffi.NULL)
    lib.pp_arena_release(ffi.NULL)
    lib.pp_arena_free(ffi.NULL)
    assert lib.pp_arena_used(ffi.NULL) == 0


def test_huge_request_fails_cleanly(new_arena: Any) -> None:
    arena = new_arena(64)
    assert lib.pp_arena_alloc(arena, (1 << 64) - 1, 1) == ffi.NULL
    assert lib.pp_arena_alloc(arena, (1 << 64) - 16, 8) == ffi.NULL
    assert lib.pp_arena_alloc(arena, 1 << 62, 1) == ffi.NULL  # host->alloc fails
    assert arena.first_overflow == ffi.NULL
    assert lib.pp_arena_alloc(arena, 8, 8) != ffi.NULL  # still usable


# ── overflow blocks ──────────────────────────────────────────────────────────


def test_first_overflow_block_header(new_arena: Any) -> None:
    arena = new_arena(64)
    p = lib.pp_arena_alloc(arena, 100, 1)
    [(block, capacity, used)] = blocks(arena)
    assert capacity == MIN_BLOCK  # max(24 + 1 + 100, 4096)
    assert addr(p) == block + HEADER  # served right after the header
    assert used == HEADER + 100
    assert block % 8 == 0  # host->alloc(cap, 8)
    assert arena.cur == arena.base  # the bump region was not touched
    assert lib.pp_arena_used(arena) == 100


def test_overflow_block_alignment(new_arena: Any) -> None:
    arena = new_arena(8)
    p = lib.pp_arena_alloc(arena, 40, 64)
    [(block, capacity, used)] = blocks(arena)
    assert addr(p) % 64 == 0
    assert addr(p) == align_up(block + HEADER, 64)
    assert used == addr(p) - block + 40
    assert capacity == MIN_BLOCK


def test_overflow_reuses_the_block_until_full(new_arena: Any) -> None:
    arena = new_arena(16)
    first = lib.pp_arena_alloc(arena, 1000, 1)
    [(block, _, _)] = blocks(arena)
    second = lib.pp_arena_alloc(arena, 1000, 1)
    assert addr(second) == addr(first) + 1000
    assert blocks(arena) == [(block, MIN_BLOCK, HEADER + 2000)]
    # small requests still go to the bump region first
    small = lib.pp_arena_alloc(arena, 16, 1)
    assert addr(small) == addr(arena.base)
    # fill the block: 4096 - 24 - 2000 = 2072 bytes left
    third = lib.pp_arena_alloc(arena, 2072, 1)
    assert addr(third) == addr(second) + 1000
    assert blocks(arena) == [(block, MIN_BLOCK, MIN_BLOCK)]
    # the next one needs a new block, chained at the head
    fourth = lib.pp_arena_alloc(arena, 1, 1)
    chain = blocks(arena)
    assert len(chain) == 2
    assert chain[1] == (block, MIN_BLOCK, MIN_BLOCK)
    new_block, cap, used = chain[0]
    assert addr(fourth) == new_block + HEADER and cap == MIN_BLOCK and used == HEADER + 1
    assert arena.first_overflow.next == ffi.cast("ArenaOverflowBlock *", block)


def test_big_allocation_gets_its_own_block(new_arena: Any) -> None:
    arena = new_arena(64)
    lib.pp_arena_alloc(arena, 100, 1)  # a normal 4096-byte block
    [(small_block, _, _)] = blocks(arena)
    big = lib.pp_arena_alloc(arena, 5000, 8)
    chain = blocks(arena)
    assert len(chain) == 2
    big_block, cap, used = chain[0]
    assert cap == HEADER + 8 + 5000  # max(24 + align + size, 4096)
    assert addr(big) == align_up(big_block + HEADER, 8)
    assert used == addr(big) - big_block + 5000
    assert chain[1][0] == small_block
    ffi.memmove(big, b"\x11" * 5000, 5000)
    assert ffi.buffer(big, 5000)[:] == b"\x11" * 5000


def test_walk_serves_from_an_older_block_with_room(new_arena: Any) -> None:
    arena = new_arena(0)  # no bump region: everything overflows
    assert arena.base == ffi.NULL
    a = lib.pp_arena_alloc(arena, 10, 1)           # block A (4096)
    b = lib.pp_arena_alloc(arena, 6000, 1)         # block B (6025), now the head
    [(block_b, cap_b, used_b), (block_a, _, used_a)] = blocks(arena)
    assert cap_b == HEADER + 1 + 6000 and used_b == HEADER + 6000
    assert addr(a) == block_a + HEADER and addr(b) == block_b + HEADER
    # B has 1 byte left; a 2-byte request walks on to A
    c = lib.pp_arena_alloc(arena, 2, 1)
    assert addr(c) == block_a + used_a
    d = lib.pp_arena_alloc(arena, 1, 1)  # B's last byte (the head is tried first)
    assert addr(d) == block_b + used_b
    assert [u for _, _, u in blocks(arena)] == [cap_b, HEADER + 12]


def test_reset_rewinds_and_keeps_blocks(new_arena: Any) -> None:
    arena = new_arena(64)
    lib.pp_arena_alloc(arena, 60, 1)
    lib.pp_arena_alloc(arena, 100, 1)
    lib.pp_arena_alloc(arena, 5000, 1)
    chain = blocks(arena)
    assert len(chain) == 2 and lib.pp_arena_used(arena) == 5160
    lib.pp_arena_reset(arena)
    assert arena.cur == arena.base
    assert blocks(arena) == [(blk, cap, HEADER) for blk, cap, _ in chain]
    assert lib.pp_arena_used(arena) == 0
    # the retained blocks are reused: no new block for a request that fits one
    p = lib.pp_arena_alloc(arena, 5000, 1)
    assert addr(p) == chain[0][0] + HEADER
    q = lib.pp_arena_alloc(arena, 3000, 1)
    assert addr(q) == chain[1][0] + HEADER
    assert len(blocks(arena)) == 2


def test_release_frees_blocks_but_keeps_the_bump_region(new_arena: Any) -> None:
    arena = new_arena(32)
    lib.pp_arena_alloc(arena, 20, 1)
    lib.pp_arena_alloc(arena, 100, 1)
    lib.pp_arena_release(arena)
    assert arena.first_overflow == ffi.NULL
    assert addr(arena.cur) == addr(arena.base) + 20
    assert lib.pp_arena_alloc(arena, 12, 1) != ffi.NULL


def test_null_host_arena_refuses_overflow(new_arena: Any) -> None:
    arena = new_arena(64, with_host=False)
    assert arena.host == ffi.NULL
    assert lib.pp_arena_alloc(arena, 60, 1) != ffi.NULL
    assert lib.pp_arena_alloc(arena, 8, 1) == ffi.NULL
    assert lib.pp_arena_alloc(arena, 4, 1) != ffi.NULL  # what is left still works
    assert arena.first_overflow == ffi.NULL
    lib.pp_arena_reset(arena)
    assert lib.pp_arena_alloc(arena, 64, 1) != ffi.NULL


def test_null_host_empty_arena_refuses_everything(new_arena: Any) -> None:
    arena = new_arena(0, with_host=False)
    assert lib.pp_arena_alloc(arena, 1, 1) == ffi.NULL


class ArenaModel:
    """upstream's algorithm in Python, checked against the C arena op by op."""

    def __init__(self, arena: Any) -> None:
        self.arena = arena
        self.base = addr(arena.base)
        self.end = addr(arena.end)
        self.cur = self.base
        self.blocks: list[list[int]] = []  # head first: [address, capacity, used]

    def alloc(self, size: int, align: int) -> int | None:
        if size == 0 or align & (align - 1) or align == 0:
            return None
        if self.base:
            a = align_up(self.cur, align)
            if a + size <= self.end:
                self.cur = a + size
                return a
        for blk in self.blocks:
            a = align_up(blk[0] + blk[2], align)
            if a + size <= blk[0] + blk[1]:
                blk[2] = a - blk[0] + size
                return a
        cap = max(HEADER + align + size, MIN_BLOCK)
        head = addr(self.arena.first_overflow)  # the C side just allocated it
        self.blocks.insert(0, [head, cap, HEADER])
        return self.alloc_in_head(size, align)

    def alloc_in_head(self, size: int, align: int) -> int:
        blk = self.blocks[0]
        a = align_up(blk[0] + blk[2], align)
        blk[2] = a - blk[0] + size
        return a

    def reset(self) -> None:
        self.cur = self.base
        for blk in self.blocks:
            blk[2] = HEADER

    def used(self) -> int:
        return self.cur - self.base + sum(b[2] - HEADER for b in self.blocks)


@pytest.mark.parametrize("seed", range(12))
def test_arena_matches_the_reference_algorithm(new_arena: Any, seed: int) -> None:
    rng = random.Random(seed)
    arena = new_arena(rng.choice([0, 16, 100, 1000, 4096]))
    model = ArenaModel(arena)
    for _ in range(300):
        r = rng.random()
        if r < 0.05:
            lib.pp_arena_reset(arena)
            model.reset()
            continue
        size = rng.choice([0, 1, 2, 3, 7, 8, 24, 100, 1000, 3000, 4095, 4096, 9000])
        align = rng.choice([0, 1, 2, 4, 8, 16, 64, 256, 3, 12])
        p = lib.pp_arena_alloc(arena, size, align)
        want = model.alloc(size, align)
        if want is None:
            assert p == ffi.NULL
        else:
            assert addr(p) == want, (size, align)
            assert addr(p) % align == 0
            ffi.memmove(p, b"\xcd" * size, size)  # every byte handed out is writable
        assert addr(arena.cur) == model.cur
        assert [list(b) for b in blocks(arena)] == model.blocks
        assert lib.pp_arena_used(arena) == model.used()


# ── arena_alloc from a Lua guest ─────────────────────────────────────────────

GUEST = """
local ffi = require("ffi")

-- args: { uint32 size, uint32 count }; out: uint64[count] addresses
local function alloc_n(inst, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local args = ffi.cast("const uint32_t *", ffi.cast("uintptr_t", args_ptr))
    local out = ffi.cast("uint64_t *", ffi.cast("uintptr_t", out_ptr))
    for i = 0, args[1] - 1 do
        local p = arena_alloc(args[0], arena_ptr)
        out[i] = p
        if p ~= 0 then
            ffi.fill(ffi.cast("uint8_t *", ffi.cast("uintptr_t", p)), args[0], 0x5A)
        end
    end
end

-- out: uint64 { type(arena_ptr) == "number" and 1 or 0, arena_ptr }
local function show_arena(inst, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local out = ffi.cast("uint64_t *", ffi.cast("uintptr_t", out_ptr))
    out[0] = (type(arena_ptr) == "number" and type(arena_alloc) == "function") and 1 or 0
    out[1] = arena_ptr
end

local function bad_size(inst, args_ptr, out_ptr, arena_ptr, arena_alloc)
    arena_alloc(-1, arena_ptr)
end

function polyplug_init(host, ctx)
    return {
        ["test.arena"] = {
            contract_version = 1,
            plugin_name = "arena",
            factory = function(h) return {} end,
            functions = { [0] = alloc_n, [1] = show_arena, [2] = bad_size },
        },
    }, { code = 0 }
end
"""


@pytest.fixture
def guest(rt: polyplug.Runtime, tmp_path: Path) -> Any:
    d = tmp_path / "arena_guest"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "arena_guest"\nid = {polyplug.bundle_id("arena_guest")}\n'
        'loader = "lua"\nfile = "bundle.lua"\n')
    (d / "bundle.lua").write_text(GUEST)
    rt.load_bundle(d)
    return rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("test.arena", 1)))


def lua_alloc(iface: Any, size: int, count: int, arena: Any) -> list[int]:
    args = ffi.new("uint32_t[2]", [size, count])
    out = ffi.new("uint64_t[]", count)
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, 0, args, out, arena, err)
    assert err.code == 0
    return [int(x) for x in out]


def test_lua_receives_the_arena_pointer(guest: Any, new_arena: Any) -> None:
    arena = new_arena(64)
    out = ffi.new("uint64_t[2]")
    err = ffi.new("AbiError *")
    lib.pp_call(guest, ffi.NULL, 0, 1, ffi.NULL, out, arena, err)
    assert err.code == 0
    assert list(out) == [1, addr(arena)]
    lib.pp_call(guest, ffi.NULL, 0, 1, ffi.NULL, out, ffi.NULL, err)
    assert list(out) == [1, 0]  # NULL arrives as 0, never nil


def test_lua_arena_alloc_serves_from_the_arena(guest: Any, new_arena: Any) -> None:
    arena = new_arena(256)
    base, end = addr(arena.base), addr(arena.end)
    ptrs = lua_alloc(guest, 24, 5, arena)
    for p in ptrs:
        assert base <= p and p + 24 <= end
    # 8-byte aligned, so 24-byte blocks sit back to back
    assert ptrs == [base + 24 * i for i in range(5)]
    assert addr(arena.cur) == base + 120
    assert ffi.buffer(arena.base, 120)[:] == b"\x5a" * 120


def test_lua_arena_alloc_overflows_into_blocks(guest: Any, new_arena: Any) -> None:
    arena = new_arena(32)
    [p] = lua_alloc(guest, 100, 1, arena)
    [(block, cap, used)] = blocks(arena)
    assert p == block + HEADER and cap == MIN_BLOCK and used == HEADER + 100
    assert ffi.buffer(ffi.cast("uint8_t *", p), 100)[:] == b"\x5a" * 100
    # the caller resets between calls; the block is reused
    lib.pp_arena_reset(arena)
    [q] = lua_alloc(guest, 100, 1, arena)
    assert q == p
    assert len(blocks(arena)) == 1


def test_lua_arena_alloc_without_arena_uses_host_alloc(guest: Any, host: Any,
                                                       new_arena: Any) -> None:
    arena = new_arena(256)  # exists, but is not passed
    ptrs = lua_alloc(guest, 40, 3, ffi.NULL)
    assert len(set(ptrs)) == 3
    for p in ptrs:
        assert p != 0
        assert not addr(arena.base) <= p < addr(arena.end)
        mem = ffi.cast("uint8_t *", p)
        assert ffi.buffer(mem, 40)[:] == b"\x5a" * 40
        host.free(host, mem, 40, 1)
    assert arena.cur == arena.base


def test_lua_arena_alloc_zero_size_gives_0(guest: Any, new_arena: Any) -> None:
    arena = new_arena(64)
    assert lua_alloc(guest, 0, 2, arena) == [0, 0]
    assert lua_alloc(guest, 0, 1, ffi.NULL) == [0]
    assert arena.cur == arena.base


def test_lua_arena_alloc_null_host_arena_exhausted_gives_0(guest: Any, new_arena: Any) -> None:
    arena = new_arena(16, with_host=False)
    assert lua_alloc(guest, 10, 2, arena)[1] == 0


def test_lua_arena_alloc_bad_size_is_a_guest_error(guest: Any, new_arena: Any) -> None:
    err = ffi.new("AbiError *")
    lib.pp_call(guest, ffi.NULL, 0, 2, ffi.NULL, ffi.NULL, new_arena(16), err)
    assert err.code == lib.AbiErrorCode_Generic


def test_lua_arena_alloc_threads_use_their_own_arena(guest: Any, new_arena: Any) -> None:
    """Concurrent calls never misattribute allocations (lua-loader.md §3.5, bug 8.3)."""
    arenas = [new_arena(64 * 1024), new_arena(64 * 1024)]
    failures: list[str] = []

    def worker(arena: Any) -> None:
        base, end = addr(arena.base), addr(arena.end)
        for i in range(500):
            lib.pp_arena_reset(arena)
            ptrs = lua_alloc(guest, 16, 4, arena)
            if not all(base <= p and p + 16 <= end for p in ptrs):
                failures.append(f"iteration {i}: {ptrs} outside [{base:#x}, {end:#x})")
                return

    threads = [threading.Thread(target=worker, args=(a,)) for a in arenas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_lua_arena_alloc_keeps_8_byte_alignment_after_odd_sizes(guest: Any,
                                                                new_arena: Any) -> None:
    """A struct placed after an odd-length string stays aligned (upstream used align 1)."""
    arena = new_arena(256)
    [odd] = lua_alloc(guest, 3, 1, arena)
    [nxt] = lua_alloc(guest, 8, 1, arena)
    [big] = lua_alloc(guest, 24, 1, arena)
    assert odd % 8 == 0 and nxt % 8 == 0 and big % 8 == 0
    assert nxt == odd + 8 and big == nxt + 8
