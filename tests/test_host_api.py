"""The HostApi table, field by field (abi-runtime.md §5, §11.3, §13), called directly
through the ``const HostApi *`` of a real runtime with real LuaJIT bundles.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import polyplug
from polyplug import LogLevel, ffi, guest_contract_id, host_contract_id, lib

# ── helpers (self-contained on purpose: no conftest dependency) ───────────────

_counter = itertools.count()


def make_bundle(root: Path, name: str, contracts: str, manifest_extra: str = "") -> Path:
    """A Lua bundle dir whose polyplug_init returns the Lua table expression ``contracts``."""
    d = root / f"{name}-{next(_counter)}"
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\n'
        f'file = "bundle.lua"\n{manifest_extra}'
    )
    (d / "bundle.lua").write_text(
        "local ffi = require('ffi')\n"
        "function polyplug_init(host, ctx)\n"
        f"    return {contracts}, {{ code = 0 }}\n"
        "end\n"
    )
    return d


def simple_contract(contract: str = "test.x", major: int = 1, value: int = 7,
                    plugin: str = "p") -> str:
    """A registrations-table entry whose fn 0 writes ``value`` into a uint32 out slot."""
    return (
        f'["{contract}"] = {{ contract_version = {major}, plugin_name = "{plugin}", '
        "factory = function(h) return {} end, "
        "functions = { [0] = function(inst, args, out, arena, arena_alloc) "
        f'ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = {value} end }} }}'
    )


def simple_bundle(root: Path, name: str, contract: str = "test.x", major: int = 1,
                  value: int = 7) -> Path:
    return make_bundle(root, name, "{ " + simple_contract(contract, major, value) + " }")


def call_u32(iface: Any, fn_id: int = 0) -> int:
    out = ffi.new("uint32_t *")
    err = ffi.new("AbiError *")
    lib.pp_call(iface, ffi.NULL, 0, fn_id, ffi.NULL, out, ffi.NULL, err)
    assert err.code == 0
    return int(out[0])


def sv_text(view: Any) -> str | None:
    """A StringView as text; None for the null view."""
    if view.ptr == ffi.NULL:
        assert view.len == 0
        return None
    return bytes(ffi.buffer(view.ptr, view.len)).decode()


def new_err(code: int = 0xDEAD) -> Any:
    """An AbiError pre-filled with garbage, to prove the callee writes every field."""
    err = ffi.new("AbiError *")
    err.code = code
    err.message.ptr = ffi.cast("uint8_t *", 1)
    err.message.len = 99
    return err


def last_error(host: Any) -> str:
    """Read (and thereby clear) the runtime's last_error."""
    n = host.get_error_len(host)
    buf = ffi.new("uint8_t[]", max(n, 1))
    got = host.get_last_error(host, buf, n)
    assert got == n
    return bytes(ffi.buffer(buf, got)).decode()


class Keep(list):
    """Keeps cdata alive for as long as the test needs it."""

    def view(self, data: bytes) -> Any:
        v = ffi.new("StringView *")
        if data:
            buf = ffi.new("uint8_t[]", data)
            self.append(buf)
            v.ptr = buf
            v.len = len(data)
        self.append(v)
        return v[0]


@pytest.fixture
def records() -> list[tuple[LogLevel, str, str]]:
    return []


@pytest.fixture
def rt(records: list[tuple[LogLevel, str, str]]) -> Iterator[polyplug.Runtime]:
    runtime = (polyplug.RuntimeBuilder().loader(polyplug.LuaLoader())
               .logger(lambda lvl, scope, msg: records.append((lvl, scope, msg))).build())
    yield runtime
    runtime.close()


@pytest.fixture
def host(rt: polyplug.Runtime) -> Any:
    return rt.host_api


@pytest.fixture
def lua_iface(rt: polyplug.Runtime, tmp_path: Path) -> Any:
    """A resolved Lua interface (test.x@1, fn 0 writes 7) to borrow function pointers from."""
    rt.load_bundle(simple_bundle(tmp_path, "donor", "test.x", 1, 7))
    return rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("test.x", 1), 1))


def copy_iface(src: Any, contract_id: int | None = None) -> Any:
    iface = ffi.new("GuestContractInterface *")
    ffi.memmove(iface, src, ffi.sizeof("GuestContractInterface"))
    if contract_id is not None:
        iface.contract_id = contract_id
    return iface


def descriptor(keep: Keep, contract_name: bytes, name: bytes = b"host-plugin",
               major: int = 1) -> Any:
    d = ffi.new("PluginDescriptor *")
    keep.append(d)
    d.name = keep.view(name)
    d.contract_name = keep.view(contract_name)
    d.version.major = major
    return d


# ── alloc / free ─────────────────────────────────────────────────────────────


@pytest.mark.parametrize("size,align", [(0, 1), (0, 8), (8, 0), (8, 3), (8, 6), (8, 12),
                                        (8, 24), (8, 4097)])
def test_alloc_rejects_bad_layouts(host: Any, size: int, align: int) -> None:
    assert host.alloc(host, size, align) == ffi.NULL


@pytest.mark.parametrize("align", [1, 2, 4, 8, 16, 64, 4096])
@pytest.mark.parametrize("size", [1, 3, 24, 4096, 100_000])
def test_alloc_honours_alignment_and_memory_is_usable(host: Any, size: int, align: int) -> None:
    ptrs = []
    for _ in range(4):  # several, so a lucky alignment is unlikely to hide a bug
        p = host.alloc(host, size, align)
        assert p != ffi.NULL
        assert int(ffi.cast("uintptr_t", p)) % align == 0
        ffi.memmove(p, b"\xab" * size, size)
        assert ffi.buffer(p, size)[:] == b"\xab" * size
        ptrs.append(p)
    assert len({int(ffi.cast("uintptr_t", p)) for p in ptrs}) == len(ptrs)
    for p in ptrs:
        host.free(host, p, size, align)


def test_free_tolerates_null_and_invalid_layouts(host: Any) -> None:
    assert host.free(host, ffi.NULL, 16, 8) is None
    assert host.free(host, ffi.NULL, 0, 0) is None
    p = host.alloc(host, 16, 8)
    assert p != ffi.NULL
    pattern = bytes(range(1, 17))
    ffi.memmove(p, pattern, 16)
    host.free(host, p, 0, 8)   # invalid layout: a no-op (leaks, never crashes)
    host.free(host, p, 16, 3)  # invalid layout: a no-op
    # still allocated: a real free would have written the allocator's list pointers
    # over the first bytes of the block
    assert bytes(ffi.buffer(p, 16)) == pattern
    host.free(host, p, 16, 8)  # the real free
    q = host.alloc(host, 16, 8)  # and the allocator is intact
    assert q != ffi.NULL
    host.free(host, q, 16, 8)


def test_alloc_ignores_self(host: Any) -> None:
    """`self` is ignored by alloc/free: a NULL HostApi still allocates."""
    p = host.alloc(ffi.NULL, 32, 64)
    assert p != ffi.NULL and int(ffi.cast("uintptr_t", p)) % 64 == 0
    host.free(ffi.NULL, p, 32, 64)


# ── the error channel ────────────────────────────────────────────────────────

UNKNOWN_ID = 12345


def produce_error(host: Any) -> str:
    """Set last_error through a real failure: unloading an unknown bundle id."""
    err = new_err()
    host.unload_bundle(host, UNKNOWN_ID, err)
    assert err.code == 1
    assert sv_text(err.message) is None  # detail travels through last_error only
    n = host.get_error_len(host)
    assert n > 0
    return f"{n}"


def test_unload_unknown_id_sets_code_1_and_a_last_error_naming_the_id(host: Any) -> None:
    err = new_err()
    host.unload_bundle(host, UNKNOWN_ID, err)
    assert err.code == 1
    text = last_error(host)
    assert f"{UNKNOWN_ID:#018x}" in text or str(UNKNOWN_ID) in text, text
    assert "not found" in text


def test_no_error_initially(host: Any) -> None:
    assert host.get_error_len(host) == 0
    assert host.get_last_error(host, ffi.NULL, 0) == 0


def test_get_error_len_does_not_clear(host: Any) -> None:
    produce_error(host)
    n = host.get_error_len(host)
    assert host.get_error_len(host) == n
    assert host.get_error_len(host) == n


def test_get_last_error_full_copy_then_clears(host: Any) -> None:
    produce_error(host)
    n = host.get_error_len(host)
    buf = ffi.new("uint8_t[]", n + 10)
    ffi.memmove(buf, b"\xff" * (n + 10), n + 10)
    assert host.get_last_error(host, buf, n + 10) == n
    text = bytes(ffi.buffer(buf, n))
    assert b"bundle not found" in text
    assert bytes(ffi.buffer(buf, n + 10))[n:] == b"\xff" * 10  # no NUL, nothing past len
    assert host.get_error_len(host) == 0
    assert host.get_last_error(host, buf, n) == 0


def test_get_last_error_null_buffer_returns_full_length_and_clears(host: Any) -> None:
    produce_error(host)
    n = host.get_error_len(host)
    assert host.get_last_error(host, ffi.NULL, 0) == n
    assert host.get_error_len(host) == 0


def test_get_last_error_null_buffer_ignores_buf_len(host: Any) -> None:
    produce_error(host)
    n = host.get_error_len(host)
    assert host.get_last_error(host, ffi.NULL, 3) == n
    assert host.get_error_len(host) == 0


def test_get_last_error_zero_length_returns_0_and_clears(host: Any) -> None:
    produce_error(host)
    buf = ffi.new("uint8_t[]", 8)
    assert host.get_last_error(host, buf, 0) == 0
    assert host.get_error_len(host) == 0
    assert bytes(buf) == b"\0" * 8


def test_get_last_error_truncates_and_still_clears(host: Any) -> None:
    produce_error(host)
    full_len = host.get_error_len(host)
    # read the full text once to know the prefix, then produce the same error again
    full = last_error(host)
    assert len(full) == full_len
    produce_error(host)
    buf = ffi.new("uint8_t[]", 5)
    assert host.get_last_error(host, buf, 5) == 5
    assert bytes(buf) == full.encode()[:5]
    assert host.get_error_len(host) == 0


def test_success_does_not_clear_last_error(host: Any, rt: polyplug.Runtime,
                                           tmp_path: Path) -> None:
    produce_error(host)
    n = host.get_error_len(host)
    # a few successful operations through the HostApi and the Python API
    p = host.alloc(host, 8, 8)
    host.free(host, p, 8, 8)
    path = str(simple_bundle(tmp_path, "ok_bundle")).encode()
    err = new_err()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 0
    h = host.find_guest_contract(host, guest_contract_id("test.x", 1), 1)
    assert h.index != 0xFFFFFFFF
    assert host.resolve_guest_contract(host, h) != ffi.NULL
    assert host.get_error_len(host) == n


def test_failed_lookups_do_not_set_last_error(host: Any, lua_iface: Any) -> None:
    h = host.find_guest_contract(host, guest_contract_id("no.such", 1), 0)
    assert (h.index, h.generation) == (0xFFFFFFFF, 0)
    bogus = ffi.new("GuestContractHandle *", (12345, 0))[0]
    assert host.resolve_guest_contract(host, bogus) == ffi.NULL
    stale = ffi.new("GuestContractHandle *", (0, 77))[0]
    assert host.resolve_guest_contract(host, stale) == ffi.NULL
    arr = host.find_all_guest_contracts(host, guest_contract_id("no.such", 1), 0)
    assert arr.items == ffi.NULL and arr.len == 0
    assert host.get_error_len(host) == 0


def test_newer_error_replaces_older(host: Any) -> None:
    produce_error(host)
    err = new_err()
    host.load_bundle(host, ffi.NULL, 0, err)
    assert last_error(host) == "null path pointer in load_bundle"


# ── log ──────────────────────────────────────────────────────────────────────


def host_log(host: Any, level: int, scope: bytes, message: bytes) -> None:
    keep = Keep()
    host.log(host, level, keep.view(scope), keep.view(message))


@pytest.mark.parametrize("level,expected", [(0, 1), (6, 1), (99, 1), (0xFFFFFFFF, 1),
                                            (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)])
def test_log_clamps_out_of_range_levels_to_error(
    host: Any, records: list[Any], level: int, expected: int,
) -> None:
    host_log(host, level, b"guest.test", b"hello")
    assert records == [(LogLevel(expected), "guest.test", "hello")]
    assert isinstance(records[0][0], LogLevel)


def test_log_delivers_scope_and_message_verbatim(host: Any, records: list[Any]) -> None:
    message = "ünïcödé ✓ with  spaces, 100% {braces} %s %d\ttab\nnewline"
    host_log(host, 3, "guest.ß".encode(), message.encode())
    assert records == [(LogLevel.Info, "guest.ß", message)]


def test_log_embedded_nul_is_delivered_verbatim(host: Any, records: list[Any]) -> None:
    """Views are (ptr, len): a NUL inside them is data, not a terminator."""
    host_log(host, 2, b"a\x00b", b"before\x00after")
    assert records == [(LogLevel.Warn, "a\x00b", "before\x00after")]


def test_log_long_message_is_not_truncated(host: Any, records: list[Any]) -> None:
    message = "x" * 20_000 + "END"
    host_log(host, 2, b"s", message.encode())
    assert records == [(LogLevel.Warn, "s", message)]


def test_log_null_views_read_as_empty(host: Any, records: list[Any]) -> None:
    null = ffi.new("StringView *")[0]
    dangling = ffi.new("StringView *")
    dangling.len = 5  # NULL ptr with a length: still ""
    host.log(host, 1, null, dangling[0])
    assert records == [(LogLevel.Error, "", "")]


def test_log_with_null_self_is_a_noop(host: Any, records: list[Any]) -> None:
    keep = Keep()
    host.log(ffi.NULL, 1, keep.view(b"a"), keep.view(b"b"))
    assert records == []


def test_log_filtering_by_log_max_level() -> None:
    got: list[tuple[LogLevel, str, str]] = []
    cfg = polyplug.RuntimeConfig(log=lambda *r: got.append(r), log_max_level=LogLevel.Warn)
    with polyplug.RuntimeBuilder().config(cfg).build() as runtime:
        host = runtime.host_api
        for level in (1, 2, 3, 4, 5, 0, 42):
            host_log(host, level, b"f", f"L{level}".encode())
    assert got == [(LogLevel.Error, "f", "L1"), (LogLevel.Warn, "f", "L2"),
                   (LogLevel.Error, "f", "L0"), (LogLevel.Error, "f", "L42")]


def test_log_max_level_error_only() -> None:
    got: list[Any] = []
    cfg = polyplug.RuntimeConfig(log=lambda *r: got.append(r), log_max_level=LogLevel.Error)
    with polyplug.Runtime(cfg) as runtime:
        host = runtime.host_api
        for level in (5, 4, 3, 2, 1):
            host_log(host, level, b"f", b"m")
    assert got == [(LogLevel.Error, "f", "m")]


def test_default_log_max_level_is_warn() -> None:
    got: list[Any] = []
    with polyplug.Runtime(polyplug.RuntimeConfig(log=lambda *r: got.append(r))) as runtime:
        host = runtime.host_api
        for level in (5, 4, 3, 2, 1):
            host_log(host, level, b"f", b"m")
    assert [r[0] for r in got] == [LogLevel.Warn, LogLevel.Error]


def test_without_a_callback_records_go_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1, logger="polyplug")
    with polyplug.Runtime(polyplug.RuntimeConfig(log_max_level=LogLevel.Info)) as runtime:
        host = runtime.host_api
        for level in (5, 4):
            host_log(host, level, b"quiet", b"not shown")
        host_log(host, 3, b"scope.i", b"some info")
        host_log(host, 2, b"scope.w", b"a warning")
        host_log(host, 1, b"scope.e", b"an error")
        host_log(host, 0, b"scope.z", b"clamped")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("polyplug.scope.i", "INFO", "some info"),
        ("polyplug.scope.w", "WARNING", "a warning"),
        ("polyplug.scope.e", "ERROR", "an error"),
        ("polyplug.scope.z", "ERROR", "clamped"),
    ]


def test_guest_can_log_through_host_api(rt: polyplug.Runtime, records: list[Any],
                                        tmp_path: Path) -> None:
    """A Lua guest calling HostApi.log through the FFI reaches the same logger."""
    bundle = make_bundle(tmp_path, "logger_guest", """{
        ["test.log"] = { contract_version = 1, plugin_name = "lg",
            factory = function(h) return {} end,
            functions = { [0] = function(inst, a, o, ar, aa)
                local pg = require("polyplug_guest")
                pg.log(HOST, 3, "guest.lg", "from lua: " .. tostring(1 + 1))
                pg.log(HOST, 0, "guest.lg", "clamped")
            end } } }""")
    lua = (bundle / "bundle.lua").read_text().replace(
        "function polyplug_init(host, ctx)\n", "function polyplug_init(host, ctx)\n    HOST = host\n")
    (bundle / "bundle.lua").write_text(lua)
    rt.load_bundle(bundle)
    iface = rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("test.log", 1)))
    records.clear()
    call_u32(iface)
    assert (LogLevel.Info, "guest.lg", "from lua: 2") in records
    assert (LogLevel.Error, "guest.lg", "clamped") in records


# ── register_guest_contract ──────────────────────────────────────────────────


def register(host: Any, desc: Any, iface: Any) -> Any:
    err = new_err()
    host.register_guest_contract(host, desc, iface, err)
    return err


def test_register_null_descriptor(host: Any, lua_iface: Any) -> None:
    err = register(host, ffi.NULL, copy_iface(lua_iface))
    assert err.code == 8
    assert sv_text(err.message) == "register_guest_contract: descriptor pointer is null"


def test_register_null_interface(host: Any) -> None:
    keep = Keep()
    err = register(host, descriptor(keep, b"x@1"), ffi.NULL)
    assert err.code == 8
    assert sv_text(err.message) == "register_guest_contract: interface pointer is null"


def test_register_null_create_instance(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    iface.create_instance = ffi.NULL
    err = register(host, descriptor(keep, b"test.x@1"), iface)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_guest_contract: create_instance is null — the field is required; "
        "signal create failure by returning a null instance handle instead")


def test_register_null_destroy_instance(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    iface.destroy_instance = ffi.NULL
    err = register(host, descriptor(keep, b"test.x@1"), iface)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_guest_contract: destroy_instance is null — the field is required; "
        "use a no-op function for stateless contracts")


def test_register_null_vm_call(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    iface.dispatch.vm.call = ffi.NULL
    err = register(host, descriptor(keep, b"test.x@1"), iface)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_guest_contract: dispatch.vm.call is null — required for "
        "VirtualMachine dispatch")


def test_register_native_null_function_table(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    iface.dispatch_type = lib.DispatchType_Native
    iface.dispatch.native.function_count = 2
    iface.dispatch.native.functions = ffi.NULL
    err = register(host, descriptor(keep, b"test.x@1"), iface)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_guest_contract: dispatch.native.functions is null while function_count > 0")


def test_register_native_null_entry(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    table = ffi.new("void *[]", [ffi.cast("void *", lua_iface.dispatch.vm.call), ffi.NULL])
    iface.dispatch_type = lib.DispatchType_Native
    iface.dispatch.native.function_count = 2
    iface.dispatch.native.functions = ffi.cast("const void * const *", table)
    err = register(host, descriptor(keep, b"test.x@1"), iface)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_guest_contract: dispatch.native.functions contains a null entry within "
        "function_count")


def test_register_validation_order_descriptor_before_interface(host: Any) -> None:
    err = register(host, ffi.NULL, ffi.NULL)
    assert err.code == 8
    assert sv_text(err.message) == "register_guest_contract: descriptor pointer is null"


def test_register_pointer_checks_come_before_the_name_check(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface)
    iface.create_instance = ffi.NULL
    err = register(host, descriptor(keep, b""), iface)
    assert err.code == 8


@pytest.mark.parametrize("null_ptr", [False, True])
def test_register_empty_contract_name(host: Any, lua_iface: Any, null_ptr: bool) -> None:
    keep = Keep()
    desc = descriptor(keep, b"")
    if null_ptr:
        desc.contract_name.len = 4  # NULL pointer with a length
    err = register(host, desc, copy_iface(lua_iface, guest_contract_id("e", 1)))
    assert err.code == 1
    assert sv_text(err.message) == "PluginDescriptor.contract_name is null or empty"
    assert host.get_error_len(host) == 0  # static message only, last_error untouched


def test_register_invalid_utf8_contract_name(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    err = register(host, descriptor(keep, b"bad\xff\xfe@1"),
                   copy_iface(lua_iface, guest_contract_id("bad", 1)))
    assert err.code == 1
    assert sv_text(err.message) is None
    assert last_error(host) == (
        "invalid UTF-8 in plugin-provided data: context=PluginDescriptor.contract_name")


def test_register_invalid_utf8_plugin_name(host: Any, lua_iface: Any) -> None:
    keep = Keep()
    err = register(host, descriptor(keep, b"ok.name@1", name=b"\xc3("),
                   copy_iface(lua_iface, guest_contract_id("ok.name", 1)))
    assert err.code == 1
    assert last_error(host) == "invalid UTF-8 in plugin-provided data: context=PluginDescriptor.name"


def test_register_bad_dispatch_type(host: Any, lua_iface: Any, records: list[Any]) -> None:
    keep = Keep()
    iface = copy_iface(lua_iface, guest_contract_id("bad.dispatch", 1))
    iface.dispatch_type = 7
    records.clear()
    err = register(host, descriptor(keep, b"bad.dispatch@1"), iface)
    assert err.code == 1
    assert sv_text(err.message) is None
    text = "invalid dispatch_type 7 in guest contract interface (untrusted plugin)"
    assert last_error(host) == text
    assert (LogLevel.Error, "registry", text) in records  # also logged at Error


def test_register_bad_dispatch_type_registers_nothing(host: Any, rt: polyplug.Runtime,
                                                      lua_iface: Any) -> None:
    keep = Keep()
    cid = guest_contract_id("bad.dispatch", 1)
    iface = copy_iface(lua_iface, cid)
    iface.dispatch_type = 2
    before = rt.revision()
    assert register(host, descriptor(keep, b"bad.dispatch@1"), iface).code == 1
    assert rt.revision() == before
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract(cid)


def test_host_side_registration_is_copied_and_attributed_to_bundle_0(
    host: Any, rt: polyplug.Runtime, lua_iface: Any,
) -> None:
    keep = Keep()
    cid = guest_contract_id("host.reg", 1)
    iface = copy_iface(lua_iface, cid)
    before = rt.revision()
    err = register(host, descriptor(keep, b"host.reg@1"), iface)
    assert err.code == 0
    assert sv_text(err.message) is None  # success writes {0, {NULL, 0}}
    assert rt.revision() == before + 1

    handle = rt.find_guest_contract_by_bundle(0, cid, 1)
    assert handle == rt.find_guest_contract(cid, 1)
    resolved = rt.resolve_guest_contract(handle)
    assert resolved != iface  # the runtime's copy, not our struct
    assert ffi.buffer(resolved, 56)[:] == ffi.buffer(iface, 56)[:]
    # our struct can go away: the copy keeps serving (it runs the donor's Lua function)
    ffi.memmove(iface, b"\0" * 56, 56)
    assert call_u32(resolved) == 7
    # not attributed to the donor bundle
    with pytest.raises(polyplug.PluginNotFound):
        rt.find_guest_contract_by_bundle(polyplug.bundle_id("donor"), cid, 1)


def test_host_side_native_registration_succeeds(host: Any, rt: polyplug.Runtime,
                                                lua_iface: Any) -> None:
    keep = Keep()
    cid = guest_contract_id("host.native", 3)
    iface = copy_iface(lua_iface, cid)
    table = ffi.new("void *[]", [ffi.cast("void *", lua_iface.dispatch.vm.call)])
    iface.dispatch_type = lib.DispatchType_Native
    iface.contract_version.major = 3
    iface.dispatch.native.function_count = 1
    iface.dispatch.native.functions = ffi.cast("const void * const *", table)
    assert register(host, descriptor(keep, b"host.native@3", major=3), iface).code == 0
    resolved = rt.resolve_guest_contract(rt.find_guest_contract_by_bundle(0, cid, 3))
    assert resolved.dispatch_type == lib.DispatchType_Native
    assert resolved.dispatch.native.function_count == 1
    # fn_id >= function_count -> FunctionNotAvailable without calling anything
    err = ffi.new("AbiError *")
    lib.pp_call(resolved, ffi.NULL, 0, 1, ffi.NULL, ffi.NULL, ffi.NULL, err)
    assert err.code == lib.AbiErrorCode_FunctionNotAvailable


def test_host_side_duplicate_provider(host: Any, rt: polyplug.Runtime, lua_iface: Any,
                                      records: list[Any]) -> None:
    keep = Keep()
    cid = guest_contract_id("host.dup", 1)
    assert register(host, descriptor(keep, b"host.dup@1", b"first"), copy_iface(lua_iface, cid)).code == 0
    records.clear()
    err = register(host, descriptor(keep, b"host.dup@1", b"second"), copy_iface(lua_iface, cid))
    assert err.code == lib.AbiErrorCode_DuplicateProvider
    text = "duplicate provider for contract `host.dup@1`: `first` already registered"
    assert last_error(host) == text
    assert any(r[0] == LogLevel.Error and r[2] == text for r in records)
    assert len(rt.find_all_by_contract(cid)) == 1


def test_host_side_contract_id_collision(host: Any, rt: polyplug.Runtime,
                                         lua_iface: Any) -> None:
    """Two different contract names claiming one id (an untrusted plugin lying about its id)."""
    keep = Keep()
    cid = guest_contract_id("claim.a", 1)
    assert register(host, descriptor(keep, b"claim.a@1"), copy_iface(lua_iface, cid)).code == 0
    err = register(host, descriptor(keep, b"claim.b@1"), copy_iface(lua_iface, cid))
    assert err.code == 1
    assert last_error(host) == (
        f"contract ID collision: hash=0x{cid:016X} claimed by both `claim.a@1` and `claim.b@1`")


def test_unloading_bundle_0_removes_host_registrations(host: Any, rt: polyplug.Runtime,
                                                       lua_iface: Any) -> None:
    keep = Keep()
    cid = guest_contract_id("host.reg", 1)
    assert register(host, descriptor(keep, b"host.reg@1"), copy_iface(lua_iface, cid)).code == 0
    handle = rt.find_guest_contract(cid)
    err = new_err()
    host.unload_bundle(host, 0, err)
    assert err.code == 0
    assert host.resolve_guest_contract(host, ffi.new("GuestContractHandle *", tuple(handle))[0]) == ffi.NULL
    # the donor bundle is untouched
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("test.x", 1)))) == 7


# ── revision_counter ─────────────────────────────────────────────────────────


def test_revision_counter_starts_at_zero_and_pointer_is_stable(host: Any) -> None:
    p1 = host.revision_counter(host)
    p2 = host.revision_counter(host)
    assert p1 != ffi.NULL and p1 == p2
    assert p1[0] == 0


def test_revision_counter_null_self(host: Any) -> None:
    assert host.revision_counter(ffi.NULL) == ffi.NULL


def test_revision_counter_changes_on_load_unload_and_registration(
    host: Any, rt: polyplug.Runtime, tmp_path: Path,
) -> None:
    counter = host.revision_counter(host)
    seen = [int(counter[0])]

    def bumped() -> None:
        now = int(counter[0])
        assert now > seen[-1]
        seen.append(now)

    manifest = rt.load_bundle(simple_bundle(tmp_path, "rev_a"))
    bumped()
    rt.load_bundle(make_bundle(tmp_path, "rev_b", "{ " + simple_contract("r.one") + ", "
                               + simple_contract("r.two") + " }"))
    bumped()
    keep = Keep()
    iface = copy_iface(rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("r.one", 1))),
                       guest_contract_id("host.side", 1))
    assert register(host, descriptor(keep, b"host.side@1"), iface).code == 0
    bumped()
    rt.unload_bundle(manifest.id)
    bumped()
    # the same pointer still reads the live counter
    assert host.revision_counter(host) == counter
    assert int(counter[0]) == rt.revision()
    # failures do not count as mutations
    before = int(counter[0])
    host.unload_bundle(host, UNKNOWN_ID, new_err())
    with pytest.raises(polyplug.InitFailed):
        rt.load_bundle(make_bundle(tmp_path, "rev_bad", "nil"))
    assert int(counter[0]) >= before  # may bump while registering, but never go back


# ── host contracts ───────────────────────────────────────────────────────────


class HostContract:
    """A real HostContractInterface with C callbacks made by cffi (ffi.callback)."""

    def __init__(self, name: str, major: int, minor: int, singleton: bool,
                 make_null: Callable[[], bool] = lambda: False) -> None:
        self.created: list[int] = []
        self.destroyed: list[int] = []
        self._next = 0x1000

        def create(iface: Any, args: Any, out: Any) -> None:
            if make_null():
                out.data = ffi.NULL
                return
            self._next += 0x10
            self.created.append(self._next)
            out.data = ffi.cast("void *", self._next)

        def destroy(iface: Any, inst: Any) -> None:
            self.destroyed.append(int(ffi.cast("uintptr_t", inst.data)))

        self._create = ffi.callback("HostCreateInstanceFn", create)
        self._destroy = ffi.callback("HostDestroyInstanceFn", destroy)
        self.iface = ffi.new("HostContractInterface *")
        self.iface.contract_id = host_contract_id(name, major)
        self.iface.contract_version.major = major
        self.iface.contract_version.minor = minor
        self.iface.singleton = singleton
        self.iface.dispatch_type = lib.DispatchType_Native
        self.iface.create_instance = self._create
        self.iface.destroy_instance = self._destroy

    @property
    def id(self) -> int:
        return int(self.iface.contract_id)


@pytest.fixture
def hc_keep() -> Iterator[list[Any]]:
    """Host contracts must outlive the runtime: this list is torn down after `rt`."""
    keep: list[Any] = []
    yield keep


@pytest.fixture
def hrt(hc_keep: list[Any]) -> Iterator[polyplug.Runtime]:
    runtime = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
    yield runtime
    runtime.close()


def register_hc(host: Any, hc: HostContract) -> Any:
    err = new_err()
    host.register_host_contract(host, hc.iface, err)
    return err


def test_register_host_contract_success_and_resolve(hrt: polyplug.Runtime,
                                                    hc_keep: list[Any]) -> None:
    host = hrt.host_api
    hc = HostContract("svc", 1, 3, singleton=True)
    hc_keep.append(hc)
    err = register_hc(host, hc)
    assert err.code == 0 and sv_text(err.message) is None
    assert host.resolve_host_contract_interface(host, hc.id, 0x10003) == hc.iface  # by pointer
    assert host.get_error_len(host) == 0


def test_register_host_contract_duplicate(hrt: polyplug.Runtime, hc_keep: list[Any]) -> None:
    host = hrt.host_api
    a, b = HostContract("svc", 1, 0, True), HostContract("svc", 1, 5, False)
    hc_keep += [a, b]
    assert register_hc(host, a).code == 0
    err = register_hc(host, b)
    assert err.code == 1
    assert sv_text(err.message) == "duplicate host contract registration"
    assert host.get_error_len(host) == 0  # last_error not set
    assert host.resolve_host_contract_interface(host, a.id, 0) == a.iface


def test_register_host_contract_null_checks(hrt: polyplug.Runtime, hc_keep: list[Any]) -> None:
    host = hrt.host_api
    err = new_err()
    host.register_host_contract(host, ffi.NULL, err)
    assert err.code == 8 and sv_text(err.message) == "null pointer in register_host_contract"
    hc = HostContract("svc", 1, 0, True)
    hc_keep.append(hc)
    err = new_err()
    host.register_host_contract(ffi.NULL, hc.iface, err)
    assert err.code == 8 and sv_text(err.message) == "null pointer in register_host_contract"

    hc.iface.create_instance = ffi.NULL
    err = register_hc(host, hc)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_host_contract: create_instance is null — the field is required; "
        "signal create failure by returning a null instance handle instead")
    hc.iface.create_instance = hc._create
    hc.iface.destroy_instance = ffi.NULL
    err = register_hc(host, hc)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_host_contract: destroy_instance is null — the field is required; "
        "use a no-op function for singleton/stateless contracts")
    hc.iface.destroy_instance = hc._destroy
    hc.iface.dispatch_type = lib.DispatchType_VirtualMachine
    err = register_hc(host, hc)
    assert err.code == 8
    assert sv_text(err.message).startswith("register_host_contract: dispatch.vm.call is null")
    # none of the rejected attempts registered anything
    assert host.resolve_host_contract_interface(host, hc.id, 0) == ffi.NULL


def test_register_host_contract_native_null_function_table(hrt: polyplug.Runtime,
                                                          hc_keep: list[Any]) -> None:
    """Host contracts get the same fn-pointer validation as guest contracts (spec §5.2)."""
    host = hrt.host_api
    hc = HostContract("native.table", 1, 0, singleton=False)
    hc_keep.append(hc)
    hc.iface.dispatch_type = lib.DispatchType_Native
    hc.iface.dispatch.native.function_count = 3
    hc.iface.dispatch.native.functions = ffi.NULL
    err = register_hc(host, hc)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_host_contract: dispatch.native.functions is null while function_count > 0")
    assert host.resolve_host_contract_interface(host, hc.id, 0) == ffi.NULL


def test_register_host_contract_native_null_entry(hrt: polyplug.Runtime,
                                                  hc_keep: list[Any]) -> None:
    host = hrt.host_api
    hc = HostContract("native.entry", 1, 0, singleton=False)
    table = ffi.new("void *[]", [ffi.cast("void *", hc._create), ffi.NULL])
    hc_keep += [hc, table]
    hc.iface.dispatch_type = lib.DispatchType_Native
    hc.iface.dispatch.native.function_count = 2
    hc.iface.dispatch.native.functions = ffi.cast("const void * const *", table)
    err = register_hc(host, hc)
    assert err.code == 8
    assert sv_text(err.message) == (
        "register_host_contract: dispatch.native.functions contains a null entry within "
        "function_count")
    assert host.resolve_host_contract_interface(host, hc.id, 0) == ffi.NULL


def test_register_host_contract_native_table_ok(hrt: polyplug.Runtime,
                                                hc_keep: list[Any]) -> None:
    host = hrt.host_api
    hc = HostContract("native.ok", 1, 0, singleton=False)
    table = ffi.new("void *[]", [ffi.cast("void *", hc._create)])
    hc_keep += [hc, table]
    hc.iface.dispatch.native.function_count = 1
    hc.iface.dispatch.native.functions = ffi.cast("const void * const *", table)
    assert register_hc(host, hc).code == 0
    assert host.resolve_host_contract_interface(host, hc.id, 0) == hc.iface


def test_get_host_contract_miss_sets_last_error(hrt: polyplug.Runtime) -> None:
    host = hrt.host_api
    cid = host_contract_id("missing", 1)
    inst = host.get_host_contract(host, cid, 0x10002)
    assert inst.data == ffi.NULL
    assert last_error(host) == f"host contract not found: id={cid}, min_version={0x10002}"
    assert host.resolve_host_contract_interface(host, cid, 7) == ffi.NULL
    assert last_error(host) == f"host contract interface not found: id={cid}, min_version=7"


@pytest.mark.parametrize("packed,ok", [(0, True), (0x10000, True), (0x10001, True),
                                       (0x10003, True), (0x10004, False), (0x20000, False),
                                       (0x00003, False), (1, False), (0x1FFFF, False)])
def test_host_contract_packed_version_rule(hrt: polyplug.Runtime, hc_keep: list[Any],
                                           packed: int, ok: bool) -> None:
    host = hrt.host_api
    hc = HostContract("svc", 1, 3, singleton=False)
    hc_keep.append(hc)
    assert register_hc(host, hc).code == 0
    resolved = host.resolve_host_contract_interface(host, hc.id, packed)
    assert (resolved == hc.iface) if ok else (resolved == ffi.NULL)
    inst = host.get_host_contract(host, hc.id, packed)
    assert (inst.data != ffi.NULL) == ok
    assert len(hc.created) == (1 if ok else 0)


def test_singleton_host_contract_is_created_once(hrt: polyplug.Runtime,
                                                 hc_keep: list[Any]) -> None:
    host = hrt.host_api
    hc = HostContract("single", 2, 0, singleton=True)
    hc_keep.append(hc)
    assert register_hc(host, hc).code == 0
    first = host.get_host_contract(host, hc.id, 0x20000)
    again = host.get_host_contract(host, hc.id, 0)
    assert first.data != ffi.NULL and first.data == again.data
    assert hc.created == [int(ffi.cast("uintptr_t", first.data))]


def test_singleton_host_contract_never_caches_null(hrt: polyplug.Runtime,
                                                   hc_keep: list[Any]) -> None:
    host = hrt.host_api
    fail = [True]
    hc = HostContract("flaky", 1, 0, singleton=True, make_null=lambda: fail[0])
    hc_keep.append(hc)
    assert register_hc(host, hc).code == 0
    assert host.get_host_contract(host, hc.id, 0).data == ffi.NULL
    fail[0] = False
    inst = host.get_host_contract(host, hc.id, 0)
    assert inst.data != ffi.NULL
    assert host.get_host_contract(host, hc.id, 0).data == inst.data
    assert len(hc.created) == 1


def test_non_singleton_host_contract_is_fresh_each_time(hrt: polyplug.Runtime,
                                                        hc_keep: list[Any]) -> None:
    host = hrt.host_api
    hc = HostContract("multi", 1, 0, singleton=False)
    hc_keep.append(hc)
    assert register_hc(host, hc).code == 0
    a = host.get_host_contract(host, hc.id, 0)
    b = host.get_host_contract(host, hc.id, 0)
    assert a.data != b.data
    assert len(hc.created) == 2


def test_destroy_does_not_destroy_cached_singletons(hc_keep: list[Any]) -> None:
    hc = HostContract("single", 1, 0, singleton=True)
    hc_keep.append(hc)
    with polyplug.Runtime() as runtime:
        host = runtime.host_api
        assert register_hc(host, hc).code == 0
        assert host.get_host_contract(host, hc.id, 0).data != ffi.NULL
    assert hc.destroyed == []


# ── bundles through the HostApi ──────────────────────────────────────────────


def read_u64_array(host: Any, arr: Any) -> list[int]:
    out = [int(arr.items[i]) for i in range(arr.len)]
    if arr.items != ffi.NULL:
        host.free(host, ffi.cast("uint8_t *", arr.items), arr.len * 8, arr.align)
    return out


def test_list_bundles(host: Any, rt: polyplug.Runtime, tmp_path: Path) -> None:
    empty = host.list_bundles(host)
    assert empty.items == ffi.NULL and empty.len == 0 and empty.align == 8
    a = rt.load_bundle(simple_bundle(tmp_path, "list_a", "l.a"))
    b = rt.load_bundle(simple_bundle(tmp_path, "list_b", "l.b"))
    arr = host.list_bundles(host)
    assert arr.align == 8
    assert sorted(read_u64_array(host, arr)) == sorted([a.id, b.id])
    assert sorted(rt.list_bundles()) == sorted([a.id, b.id])
    rt.unload_bundle(a.id)
    assert read_u64_array(host, host.list_bundles(host)) == [b.id]
    rt.unload_bundle(b.id)
    # deliberate fix of upstream quirk 15: unloaded bundles are no longer listed
    arr = host.list_bundles(host)
    assert arr.items == ffi.NULL and arr.len == 0
    assert rt.list_bundles() == []


def test_list_bundles_excludes_host_registrations(host: Any, rt: polyplug.Runtime,
                                                  lua_iface: Any) -> None:
    keep = Keep()
    assert register(host, descriptor(keep, b"host.reg@1"),
                    copy_iface(lua_iface, guest_contract_id("host.reg", 1))).code == 0
    assert read_u64_array(host, host.list_bundles(host)) == [polyplug.bundle_id("donor")]


def test_find_all_guest_contracts_two_providers_in_load_order(
    host: Any, rt: polyplug.Runtime, tmp_path: Path,
) -> None:
    cid = guest_contract_id("multi.x", 1)
    rt.load_bundle(simple_bundle(tmp_path, "prov_z_first", "multi.x", 1, 11))
    rt.load_bundle(simple_bundle(tmp_path, "prov_a_second", "multi.x", 1, 22))
    arr = host.find_all_guest_contracts(host, cid, 1)
    assert arr.len == 2
    assert arr.align == ffi.alignof("GuestContractHandle") == 4
    handles = [arr.items[i] for i in range(arr.len)]
    values = [call_u32(host.resolve_guest_contract(host, h)) for h in handles]
    assert values == [11, 22]
    first = host.find_guest_contract(host, cid, 1)
    assert (first.index, first.generation) == (handles[0].index, handles[0].generation)
    host.free(host, ffi.cast("uint8_t *", arr.items), arr.len * 8, arr.align)
    # min_major filter and misses give the empty array with align 4
    for miss in (host.find_all_guest_contracts(host, cid, 2),
                 host.find_all_guest_contracts(host, guest_contract_id("nope", 1), 0)):
        assert miss.items == ffi.NULL and miss.len == 0 and miss.align == 4


def test_get_dependencies_outside_init_is_empty(host: Any, lua_iface: Any) -> None:
    arr = host.get_dependencies(host)
    assert arr.items == ffi.NULL and arr.len == 0 and arr.align == 8


def test_load_bundle_through_host_api(host: Any, rt: polyplug.Runtime, tmp_path: Path) -> None:
    path = str(simple_bundle(tmp_path, "via_host", "h.load", 1, 5)).encode()
    err = new_err()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 0 and sv_text(err.message) is None
    assert rt.list_bundles() == [polyplug.bundle_id("via_host")]
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("h.load", 1)))) == 5


def test_load_bundle_through_host_api_uses_path_len(host: Any, rt: polyplug.Runtime,
                                                    tmp_path: Path) -> None:
    """path is (ptr, len), not NUL-terminated: trailing garbage beyond len is ignored."""
    path = str(simple_bundle(tmp_path, "via_len", "h.len")).encode()
    buf = ffi.new("uint8_t[]", path + b"/does/not/exist")
    err = new_err()
    host.load_bundle(host, buf, len(path), err)
    assert err.code == 0
    assert rt.list_bundles() == [polyplug.bundle_id("via_len")]


def test_load_bundle_through_host_api_with_entry_file_path(host: Any, rt: polyplug.Runtime,
                                                           tmp_path: Path) -> None:
    path = str(simple_bundle(tmp_path, "via_file", "h.file") / "bundle.lua").encode()
    err = new_err()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 0
    assert rt.list_bundles() == [polyplug.bundle_id("via_file")]


def test_load_bundle_null_path(host: Any) -> None:
    err = new_err()
    host.load_bundle(host, ffi.NULL, 10, err)
    assert err.code == 8
    assert sv_text(err.message) == "null path pointer in load_bundle"
    assert last_error(host) == "null path pointer in load_bundle"


def test_load_bundle_null_self(host: Any) -> None:
    err = new_err()
    host.load_bundle(ffi.NULL, b"x", 1, err)
    assert err.code == 8 and sv_text(err.message) == "null HostApi in load_bundle"
    err = new_err()
    host.reload_bundle(ffi.NULL, b"x", 1, err)
    assert err.code == 8 and sv_text(err.message) == "null HostApi in reload_bundle"
    err = new_err()
    host.unload_bundle(ffi.NULL, 1, err)
    assert err.code == 8 and sv_text(err.message) == "null HostApi in unload_bundle"


def test_reload_bundle_null_path(host: Any) -> None:
    err = new_err()
    host.reload_bundle(host, ffi.NULL, 0, err)
    assert err.code == 8
    assert sv_text(err.message) == "null path pointer in reload_bundle"


def test_reload_bundle_through_host_api_disabled(host: Any, tmp_path: Path) -> None:
    path = str(tmp_path).encode()
    err = new_err()
    host.reload_bundle(host, path, len(path), err)
    assert err.code == 1
    assert last_error(host) == "hot-reload is disabled in runtime config"


def test_reload_bundle_through_host_api(tmp_path: Path) -> None:
    bundle = simple_bundle(tmp_path, "reload_via_host", "h.reload", 1, 1)
    with polyplug.Runtime(polyplug.RuntimeConfig(hot_reload_enabled=True),
                          [polyplug.LuaLoader()]) as runtime:
        host = runtime.host_api
        runtime.load_bundle(bundle)
        handle = runtime.find_guest_contract(guest_contract_id("h.reload", 1))
        (bundle / "bundle.lua").write_text((bundle / "bundle.lua").read_text().replace("= 1 end", "= 2 end"))
        path = str(bundle).encode()
        err = new_err()
        host.reload_bundle(host, path, len(path), err)
        assert err.code == 0
        assert call_u32(runtime.resolve_guest_contract(handle)) == 2


def test_load_bundle_non_utf8_path(host: Any) -> None:
    path = b"/tmp/\xff\xfe-bundle"
    err = new_err()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 1
    assert "UTF-8" in last_error(host)


def test_load_bundle_failure_reports_through_last_error(host: Any, rt: polyplug.Runtime,
                                                        tmp_path: Path) -> None:
    missing = str(tmp_path / "nope").encode()
    err = new_err()
    host.load_bundle(host, missing, len(missing), err)
    assert err.code == 1 and sv_text(err.message) is None
    assert "nope" in last_error(host)

    bad = make_bundle(tmp_path, "bad_init", "{}")  # registers no contracts
    path = str(bad).encode()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 1
    assert "registered no contracts" in last_error(host)
    assert rt.list_bundles() == []


def test_load_same_bundle_twice_through_host_api(host: Any, rt: polyplug.Runtime,
                                                 tmp_path: Path) -> None:
    path = str(simple_bundle(tmp_path, "twice", "t.twice", 1, 3)).encode()
    err = new_err()
    host.load_bundle(host, path, len(path), err)
    assert err.code == 0
    host.load_bundle(host, path, len(path), err)
    assert err.code == 1
    assert "already loaded" in last_error(host)
    assert call_u32(rt.resolve_guest_contract(rt.find_guest_contract(guest_contract_id("t.twice", 1)))) == 3


def test_unload_through_host_api(host: Any, rt: polyplug.Runtime, tmp_path: Path) -> None:
    m = rt.load_bundle(simple_bundle(tmp_path, "unl", "u.x"))
    handle = host.find_guest_contract(host, guest_contract_id("u.x", 1), 0)
    err = new_err()
    host.unload_bundle(host, m.id, err)
    assert err.code == 0 and sv_text(err.message) is None
    assert host.resolve_guest_contract(host, handle) == ffi.NULL
    host.unload_bundle(host, m.id, err)
    assert err.code == 1
    assert f"{m.id:016x}" in last_error(host)


def test_register_loader_null(host: Any) -> None:
    err = new_err()
    host.register_loader(host, ffi.NULL, err)
    assert err.code == 8 and sv_text(err.message) == "null pointer in register_loader"
    assert host.get_error_len(host) == 0


def test_register_loader_duplicate_name(host: Any) -> None:
    """register_loader takes ownership of one reference, success or not."""
    loader = lib.pp_lua_loader_new(ffi.NULL)
    err = new_err()
    host.register_loader(host, loader, err)
    assert err.code == 1
    assert last_error(host) == (
        'duplicate loader "lua": a loader with this name is already registered')


def test_register_loader_through_host_api(tmp_path: Path) -> None:
    with polyplug.Runtime() as runtime:  # no loader registered yet
        host = runtime.host_api
        bundle = simple_bundle(tmp_path, "late_loader", "late.x", 1, 9)
        with pytest.raises(polyplug.NoLoaderForName):
            runtime.load_bundle(bundle)
        err = new_err()
        host.register_loader(host, lib.pp_lua_loader_new(ffi.NULL), err)
        assert err.code == 0
        runtime.load_bundle(bundle)
        assert call_u32(runtime.resolve_guest_contract(
            runtime.find_guest_contract(guest_contract_id("late.x", 1)))) == 9


# ── guest instances ──────────────────────────────────────────────────────────


def test_create_and_destroy_guest_instance(host: Any, rt: polyplug.Runtime, lua_iface: Any,
                                           records: list[Any]) -> None:
    out = ffi.new("GuestContractInstance *")
    host.create_guest_instance(host, lua_iface, ffi.NULL, out)
    assert out.data != ffi.NULL
    assert out.contract_id == guest_contract_id("test.x", 1)
    second = ffi.new("GuestContractInstance *")
    host.create_guest_instance(host, lua_iface, ffi.NULL, second)
    assert second.data != out.data
    # a live instance is counted: unloading warns about it
    host.destroy_guest_instance(host, lua_iface, second[0])
    records.clear()
    rt.unload_bundle(polyplug.bundle_id("donor"))
    warnings = [r for r in records if r[0] == LogLevel.Warn and r[1] == "runtime"]
    assert len(warnings) == 1
    assert "still has 1 live guest instance(s)" in warnings[0][2]
    # (destroying `out` now would be a use-after-free, as the warning says: not done)


def test_create_guest_instance_null_arguments(host: Any, lua_iface: Any) -> None:
    out = ffi.new("GuestContractInstance *")
    out.data = ffi.cast("void *", 1)
    out.contract_id = 5
    host.create_guest_instance(host, ffi.NULL, ffi.NULL, out)
    assert out.data == ffi.NULL and out.contract_id == 0
    out.data = ffi.cast("void *", 1)
    host.create_guest_instance(ffi.NULL, lua_iface, ffi.NULL, out)
    assert out.data == ffi.NULL
    host.create_guest_instance(host, lua_iface, ffi.NULL, ffi.NULL)  # no crash
    inst = ffi.new("GuestContractInstance *")[0]
    host.destroy_guest_instance(host, ffi.NULL, inst)
    host.destroy_guest_instance(ffi.NULL, lua_iface, inst)
