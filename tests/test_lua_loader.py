"""The Lua loader beyond the seed: instances, arenas, reentrancy, the embedded SDK,
peer calls between bundles, reload under load, and memory over many cycles."""

from __future__ import annotations

import gc
import shutil
import textwrap
import threading
from pathlib import Path

import pytest

import polyplug
from polyplug import ffi, lib

FIXTURE = Path(__file__).parent / "fixtures" / "test_plugin_lua"


def make_bundle(root: Path, name: str, lua: str, extra_files: dict[str, str] | None = None) -> Path:
    """A bundle directory `root/name` with a manifest and `bundle.lua`."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "bundle.lua"\n'
    )
    (d / "bundle.lua").write_text(textwrap.dedent(lua))
    for rel, text in (extra_files or {}).items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return d


def runtime(**config: object) -> polyplug.Runtime:
    return polyplug.RuntimeBuilder().config(polyplug.RuntimeConfig(**config)).loader(
        polyplug.LuaLoader()).build()


def resolve(rt: polyplug.Runtime, contract: str, major: int = 1):
    return rt.resolve_guest_contract(rt.find_guest_contract(polyplug.guest_contract_id(contract, major), major))


def call(iface, fn_id: int, args=ffi.NULL, out=ffi.NULL, instance=None, arena=ffi.NULL):
    err = ffi.new("AbiError *")
    data = ffi.NULL if instance is None else instance.data
    cid = 0 if instance is None else instance.contract_id
    lib.pp_call(iface, data, cid, fn_id, args, out, arena, err)
    msg = ffi.string(err.message.ptr, err.message.len).decode() if err.message.len else ""
    return err.code, msg


COUNTER = """
local pg = require("polyplug_guest")
local function bump(self, _, out_ptr)
    self.n = self.n + 1
    pg.ptr(out_ptr, "uint32_t *")[0] = self.n
end
function polyplug_init()
    return { ["test.counter"] = { factory = function() return { n = 0 } end,
                                  functions = { [0] = bump } } }, { code = 0 }
end
"""


def test_instances_have_independent_state(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "counter", COUNTER))
        iface = resolve(rt, "test.counter")
        host = rt.host_api
        a = ffi.new("GuestContractInstance *")
        b = ffi.new("GuestContractInstance *")
        host.create_guest_instance(host, iface, ffi.NULL, a)
        host.create_guest_instance(host, iface, ffi.NULL, b)
        assert (int(ffi.cast("uintptr_t", a.data)), int(ffi.cast("uintptr_t", b.data))) == (1, 2)
        assert a.contract_id == polyplug.guest_contract_id("test.counter", 1)
        out = ffi.new("uint32_t *")
        for _ in range(3):
            assert call(iface, 0, out=out, instance=a)[0] == 0
        assert out[0] == 3
        assert call(iface, 0, out=out, instance=b) == (0, "")
        assert out[0] == 1
        assert call(iface, 0, out=out) == (0, "")  # the default instance is separate too
        assert out[0] == 1
        host.destroy_guest_instance(host, iface, a[0])
        assert call(iface, 0, out=out, instance=a)[0] == polyplug.AbiErrorCode.FunctionNotAvailable
        assert call(iface, 0, out=out, instance=b)[0] == 0 and out[0] == 2


def test_failing_factory_gives_null_instance_and_logs(tmp_path: Path) -> None:
    lua = """
    local made = 0
    function polyplug_init()
        return { ["test.flaky"] = {
            factory = function()
                made = made + 1
                if made > 1 then error("factory refuses") end
                return {}
            end,
            functions = { [0] = function() end } } }, { code = 0 }
    end
    """
    records: list[tuple[int, str, str]] = []
    with runtime(log=lambda *r: records.append(r), log_max_level=polyplug.LogLevel.Trace) as rt:
        rt.load_bundle(make_bundle(tmp_path, "flaky", lua))
        iface = resolve(rt, "test.flaky")
        inst = ffi.new("GuestContractInstance *")
        rt.host_api.create_guest_instance(rt.host_api, iface, ffi.NULL, inst)
        assert inst.data == ffi.NULL
        assert any(level == 1 and scope == "loader.lua" and "factory refuses" in msg
                   for level, scope, msg in records)


ARENA_TEXT = """
local pg = require("polyplug_guest")
local abi = require("polyplug_abi")
-- fn 0: upper(StringView) -> StringView, the result allocated from the caller's arena
local function upper(_, args_ptr, out_ptr, arena_ptr, arena_alloc)
    local text = abi.to_str(pg.ptr(args_ptr, "const StringView *")[0])
    pg.ptr(out_ptr, "StringView *")[0] = pg.alloc_string_arena(arena_alloc, arena_ptr, text:upper())
end
function polyplug_init()
    return { ["test.text"] = { factory = function() return {} end,
                               functions = { [0] = upper } } }, { code = 0 }
end
"""


def test_arena_strings_in_and_out(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "text", ARENA_TEXT))
        iface = resolve(rt, "test.text")
        arena = ffi.gc(lib.pp_arena_new(lib.pp_detached_host(), 64), lib.pp_arena_free)
        src = ffi.new("char[]", b"hello, arena")
        arg = ffi.new("StringView *", (ffi.cast("uint8_t *", src), 12))
        out = ffi.new("StringView *")
        assert call(iface, 0, arg, out, arena=arena) == (0, "")
        assert ffi.string(ffi.cast("char *", out.ptr), out.len) == b"HELLO, ARENA"
        base = int(ffi.cast("uintptr_t", arena.base))
        assert base <= int(ffi.cast("uintptr_t", out.ptr)) < base + 64
        # a result bigger than the bump region lands in an overflow block
        big = b"x" * 5000
        bsrc = ffi.new("char[]", big)
        arg.ptr, arg.len = ffi.cast("uint8_t *", bsrc), len(big)
        assert call(iface, 0, arg, out, arena=arena) == (0, "")
        assert ffi.string(ffi.cast("char *", out.ptr), out.len) == big.upper()
        assert arena.first_overflow != ffi.NULL
        lib.pp_arena_reset(arena)
        assert arena.cur == arena.base and arena.first_overflow.used == 24
        ffi.release(arena)  # its overflow blocks go back through rt's HostApi: free it first


REENTRANT = """
local ffi = require("ffi")
local abi = require("abi")
local host, self_iface
-- fn 0 calls fn 1 of its own contract through the vtable: must be refused, not run
local function outer(_, _, out_ptr)
    local err = ffi.new("AbiError[1]")
    self_iface.dispatch.vm.call(self_iface.dispatch.vm.loader_data,
        ffi.new("GuestContractInstance"), 1, nil, nil, nil, err)
    ffi.cast("uint32_t *", ffi.cast("uintptr_t", out_ptr))[0] = err[0].code
end
local function resolve_self(_, _, _)
    local id = abi.guest_contract_id("test.reenter", 1)
    self_iface = host.resolve_guest_contract(host, host.find_guest_contract(host, id, 1))
end
function polyplug_init(host_ptr)
    host = ffi.cast("HostApi *", ffi.cast("uintptr_t", host_ptr))
    return { ["test.reenter"] = { factory = function() return {} end,
              functions = { [0] = outer, [1] = function() end, [2] = resolve_self } } }, { code = 0 }
end
"""


def test_same_thread_reentrant_call_is_refused_and_vm_stays_usable(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "reenter", REENTRANT))
        iface = resolve(rt, "test.reenter")
        assert call(iface, 2) == (0, "")
        out = ffi.new("uint32_t *")
        assert call(iface, 0, out=out) == (0, "")
        assert out[0] == polyplug.AbiErrorCode.ReentrantCall
        assert call(iface, 1) == (0, "")  # still usable afterwards


def test_sdk_modules_resolve_without_a_vendored_copy(tmp_path: Path) -> None:
    lua = """
    local pg = require("polyplug_guest")
    local abi = require("abi")
    assert(require("polyplug_abi") == abi)
    function polyplug_init()
        return { ["test.sdk"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out) pg.ptr(out, "uint64_t *")[0] = abi.bundle_id("x") end } } },
            { code = pg.AbiErrorCode.Ok }
    end
    """
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "sdk", lua))
        out = ffi.new("uint64_t *")
        assert call(resolve(rt, "test.sdk"), 0, out=out) == (0, "")
        assert out[0] == polyplug.bundle_id("x")


def test_bundle_copy_of_an_sdk_module_wins(tmp_path: Path) -> None:
    lua = """
    local pg = require("polyplug_guest")
    function polyplug_init()
        return { ["test.own"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out) require("ffi").cast("uint32_t *",
                require("ffi").cast("uintptr_t", out))[0] = pg.MARK end } } }, { code = 0 }
    end
    """
    own = "return { MARK = 4242 }\n"
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "own", lua, {"polyplug_guest.lua": own}))
        out = ffi.new("uint32_t *")
        assert call(resolve(rt, "test.own"), 0, out=out) == (0, "")
        assert out[0] == 4242


def test_package_init_lua_and_upstream_dot_init_both_resolve(tmp_path: Path) -> None:
    lua = """
    local a = require("pkg")        -- pkg/init.lua
    local b = require("legacy")     -- legacy.init.lua (upstream's ?.init.lua entry)
    function polyplug_init()
        return { ["test.pkg"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out) require("ffi").cast("uint32_t *",
                require("ffi").cast("uintptr_t", out))[0] = a + b end } } }, { code = 0 }
    end
    """
    files = {"pkg/init.lua": "return 40\n", "legacy.init.lua": "return 2\n"}
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "pkgs", lua, files))
        out = ffi.new("uint32_t *")
        assert call(resolve(rt, "test.pkg"), 0, out=out) == (0, "")
        assert out[0] == 42


def test_hostile_bundle_directory_name_is_not_code(tmp_path: Path) -> None:
    # package.path is edited through the table API: quotes and newlines in the
    # directory name are data, never Lua source (upstream trap 8.4).
    evil = tmp_path / 'x"]] injected = true --[[\n'
    evil.mkdir()
    lua = """
    function polyplug_init()
        return { ["test.evil"] = { factory = function() return {} end, functions = {
            [0] = function(_, _, out)
                local ffi = require("ffi")
                ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] =
                    (injected == nil and package.path:find("injected", 1, true)) and 1 or 0
            end } } }, { code = 0 }
    end
    """
    with runtime() as rt:
        rt.load_bundle(make_bundle(evil, "evil", lua))
        out = ffi.new("uint32_t *")
        assert call(resolve(rt, "test.evil"), 0, out=out) == (0, "")
        assert out[0] == 1


PROVIDER = """
local pg = require("polyplug_guest")
local function add(_, args_ptr, out_ptr)
    local a = pg.ptr(args_ptr, "const uint32_t *")
    pg.ptr(out_ptr, "uint32_t *")[0] = a[0] + a[1]
end
function polyplug_init()
    return { ["peer.math"] = { factory = function() return {} end,
                               functions = { [0] = add } } }, { code = 0 }
end
"""

CONSUMER = """
local ffi = require("ffi")
local abi = require("abi")
local pg = require("polyplug_guest")
-- fn 0: double(x) = peer.math.add(x, x), called through HostApi and the peer's vtable
local function double(self, args_ptr, out_ptr)
    local host = self.host
    local h = host.find_guest_contract(host, abi.guest_contract_id("peer.math", 1), 1)
    local iface = host.resolve_guest_contract(host, h)
    assert(iface ~= nil, "peer.math is not loaded")
    local x = pg.ptr(args_ptr, "const uint32_t *")[0]
    local args = ffi.new("uint32_t[2]", x, x)
    local out = ffi.new("uint32_t[1]")
    local err = ffi.new("AbiError[1]")
    iface.dispatch.vm.call(iface.dispatch.vm.loader_data, ffi.new("GuestContractInstance"),
                           0, args, out, nil, err)
    assert(err[0].code == 0, "peer call failed")
    pg.ptr(out_ptr, "uint32_t *")[0] = out[0]
end
function polyplug_init()
    return { ["peer.client"] = {
        factory = function(host_ptr) return { host = pg.cast_host_interface(host_ptr) } end,
        functions = { [0] = double } } }, { code = 0 }
end
"""


def test_peer_call_from_one_bundle_into_another(tmp_path: Path) -> None:
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "provider", PROVIDER))
        rt.load_bundle(make_bundle(tmp_path, "consumer", CONSUMER))
        x = ffi.new("uint32_t *", 21)
        out = ffi.new("uint32_t *")
        assert call(resolve(rt, "peer.client"), 0, x, out) == (0, "")
        assert out[0] == 42
        # with the provider gone, the guest's own error reaches the caller
        rt.unload_bundle(polyplug.bundle_id("provider"))
        code, msg = call(resolve(rt, "peer.client"), 0, x, out)
        assert code == polyplug.AbiErrorCode.Generic and "peer.math is not loaded" in msg


VERSIONED = """
local pg = require("polyplug_guest")
function polyplug_init()
    return { ["test.ver"] = { factory = function() return {} end, functions = {
        [0] = function(_, _, out) pg.ptr(out, "uint32_t *")[0] = VALUE end } } }, { code = 0 }
end
"""


def test_reload_under_calls_from_another_thread(tmp_path: Path) -> None:
    d = make_bundle(tmp_path, "ver", VERSIONED.replace("VALUE", "1"))
    with runtime(hot_reload_enabled=True) as rt:
        rt.load_bundle(d)
        iface = resolve(rt, "test.ver")
        stop = threading.Event()
        seen: set[int] = set()
        failures: list[tuple[int, str]] = []

        def caller() -> None:
            out = ffi.new("uint32_t *")
            while not stop.is_set():
                code, msg = call(iface, 0, out=out)
                if code:
                    failures.append((code, msg))
                seen.add(int(out[0]))

        t = threading.Thread(target=caller)
        t.start()
        try:
            for value in range(2, 40):
                (d / "bundle.lua").write_text(textwrap.dedent(VERSIONED.replace("VALUE", str(value))))
                rt.reload_bundle(d)
        finally:
            stop.set()
            t.join()
        assert failures == []
        assert seen and seen <= set(range(1, 40))
        out = ffi.new("uint32_t *")
        assert call(iface, 0, out=out) == (0, "") and out[0] == 39


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_flat_over_1000_reloads_and_1000_load_unload_cycles(tmp_path: Path) -> None:
    d = tmp_path / "b"
    shutil.copytree(FIXTURE, d)
    bid = polyplug.bundle_id("test_plugin_lua")
    manifest = polyplug.read_manifest(d)
    source = polyplug.BundleSource.Path(d)
    with runtime(hot_reload_enabled=True) as rt:
        rt.load_bundle(d)
        for _ in range(100):  # warm-up: allocator pools, Python caches
            rt.reload_bundle(d)
        gc.collect()
        before = _rss_kib()
        for _ in range(1000):
            rt.reload_bundle(d)
        gc.collect()
        reload_growth = _rss_kib() - before
        rt.unload_bundle(bid)
        for _ in range(100):
            rt.load_bundle_from_source(manifest, source)
            rt.unload_bundle(bid)
        gc.collect()
        before = _rss_kib()
        for _ in range(1000):
            rt.load_bundle_from_source(manifest, source)
            rt.unload_bundle(bid)
        gc.collect()
        cycle_growth = _rss_kib() - before
    # Each VM is ~60-90 KiB: a leaked VM per cycle would add tens of MiB.
    assert reload_growth < 2048, f"RSS grew {reload_growth} KiB over 1000 reloads"
    assert cycle_growth < 2048, f"RSS grew {cycle_growth} KiB over 1000 load/unload cycles"


def test_old_interface_pointer_after_reload_runs_new_code(tmp_path: Path) -> None:
    d = make_bundle(tmp_path, "ver2", VERSIONED.replace("VALUE", "1"))
    with runtime(hot_reload_enabled=True) as rt:
        rt.load_bundle(d)
        old = resolve(rt, "test.ver")
        (d / "bundle.lua").write_text(textwrap.dedent(VERSIONED.replace("VALUE", "2")))
        rt.reload_bundle(d)
        out = ffi.new("uint32_t *")
        assert call(old, 0, out=out) == (0, "") and out[0] == 2
        assert resolve(rt, "test.ver") == old


def test_the_same_handle_before_and_after_a_reload_gets_the_new_result(tmp_path: Path) -> None:
    d = make_bundle(tmp_path, "ver3", VERSIONED.replace("VALUE", "1"))
    with runtime(hot_reload_enabled=True) as rt:
        rt.load_bundle(d)
        handle = rt.find_guest_contract(polyplug.guest_contract_id("test.ver", 1), 1)
        out = ffi.new("uint32_t *")
        err = ffi.new("AbiError *")

        def through_handle() -> int:
            out[0] = 0
            code = lib.pp_call_handle(rt._ptr(), handle.index, handle.generation, ffi.NULL, 0,
                                      0, ffi.NULL, out, ffi.NULL, err)
            assert code == 0, ffi.string(err.message.ptr, err.message.len)
            return int(out[0])

        assert through_handle() == 1
        for value in (2, 3):
            (d / "bundle.lua").write_text(textwrap.dedent(VERSIONED.replace("VALUE", str(value))))
            rt.reload_bundle(d)
            assert through_handle() == value
        assert rt.find_guest_contract(polyplug.guest_contract_id("test.ver", 1), 1) == handle


TWO_CONTRACTS = """
local pg = require("polyplug_guest")
local function value(v) return function(_, _, out) pg.ptr(out, "uint32_t *")[0] = v end end
function polyplug_init()
    return { REGISTRATIONS }, { code = 0 }
end
"""


def _registrations(*contracts: tuple[str, int, int]) -> str:
    """`["name"] = {...}` entries; each contract has `count` functions returning `value`."""
    return ", ".join(
        f'["{name}"] = {{ factory = function() return {{}} end, functions = {{ '
        + ", ".join(f"[{i}] = value({v})" for i in range(count)) + " } }"
        for name, count, v in contracts)


def test_a_copied_interface_of_a_retired_contract_answers_function_not_available(
        tmp_path: Path) -> None:
    """A by-value copy of an interface outlives the registry's pointer: after a reload
    that drops its contract, calling through it must not run a function reference of
    the closed VM inside the new one."""
    lua = TWO_CONTRACTS.replace("REGISTRATIONS", _registrations(("test.gone", 3, 7),
                                                                ("test.stays", 1, 8)))
    d = make_bundle(tmp_path, "retire", lua)
    with runtime(hot_reload_enabled=True) as rt:
        rt.load_bundle(d)
        copy = ffi.new("GuestContractInterface *", resolve(rt, "test.gone")[0])
        out = ffi.new("uint32_t *")
        assert call(copy, 2, out=out) == (0, "") and out[0] == 7
        assert lib.pp_function_count(copy) == 3
        (d / "bundle.lua").write_text(lua.replace(
            _registrations(("test.gone", 3, 7), ("test.stays", 1, 8)),
            _registrations(("test.stays", 1, 9))))
        rt.reload_bundle(d)
        # the retired record answers StaleHandle (5), never Generic (1) with "attempt to
        # call a nil value", and counts no functions any more
        assert lib.pp_function_count(copy) == 0
        for fn_id in (0, 2):
            code, message = call(copy, fn_id, out=out)
            assert code == 5, (code, message)
            assert "was removed by a reload; resolve its handle again" in message, message
        assert call(resolve(rt, "test.stays"), 0, out=out) == (0, "") and out[0] == 9


@pytest.mark.parametrize("body, fragment", [
    ("return 1, 2", "must return two tables"),
    ("return {}", "must return two tables"),
    ("return {}, { code = 0 }", "registered no contracts"),
    ("return {}, { code = 300 }", "returned error code 300"),
    ("return {}, { code = 5, message = 'custom failure' }", "custom failure"),
    ("return { ['x@1'] = {} }, { code = 0 }", "bare contract name"),
    ("return { [1] = {} }, { code = 0 }", "iteration error"),
    ("return { x = { factory = function() end } }, { code = 0 }", "missing functions table"),
    ("return { x = { functions = {} } }, { code = 0 }", "needs a `factory` function"),
    ("return { x = { factory = function() end, functions = { f } } }, { code = 0 }",
     "0-based"),
    ("return { x = { factory = function() end, functions = { [0] = 1 } } }, { code = 0 }",
     "slot 0"),
    ("return { x = { contract_version = 'two', factory = function() end, functions = {} } },"
     " { code = 0 }", "contract_version"),
    ("return { x = { factory = function() error('nope') end, functions = {} } }, { code = 0 }",
     "failed building the default instance"),
    ("error({ code = 3 })", "error object is a table value"),
])
def test_bad_init_results_are_typed_errors_and_register_nothing(
        tmp_path: Path, body: str, fragment: str) -> None:
    lua = f"local function f() end\nfunction polyplug_init() {body} end\n"
    with runtime() as rt:
        before = rt.revision()
        with pytest.raises(polyplug.InitFailed) as info:
            rt.load_bundle(make_bundle(tmp_path, "bad", lua))
        assert fragment in str(info.value)
        assert info.value.bundle == "bad"
        assert rt.list_bundles() == []
        with pytest.raises(polyplug.PluginNotFound):
            rt.find_guest_contract(polyplug.guest_contract_id("x", 1))
        # the runtime is usable afterwards and the same bundle name can load
        rt.load_bundle(make_bundle(tmp_path / "ok", "bad", COUNTER))
        assert rt.revision() > before


def test_non_utf8_source_file_is_a_clear_error(tmp_path: Path) -> None:
    d = make_bundle(tmp_path, "latin", COUNTER)
    (d / "bundle.lua").write_bytes(b"-- caf\xe9\n" + COUNTER.encode())
    with runtime() as rt, pytest.raises(polyplug.InitFailed, match="valid UTF-8"):
        rt.load_bundle(d)


def test_reload_cascades_to_opted_in_dependents_in_upstream_order(tmp_path: Path) -> None:
    provider = make_bundle(tmp_path, "prov", PROVIDER)
    dependent = make_bundle(tmp_path, "dep", COUNTER)
    cid = polyplug.guest_contract_id("peer.math", 1)
    with (dependent / "manifest.toml").open("a") as f:
        f.write(f'needs_reinit_on_dep_reload = true\n\n[[dependency]]\nkind = "contract"\n'
                f'contract = "peer.math"\nmin_version = "1.0"\ncontract_id = {cid}\n')
    phases: list[tuple[str, str]] = []
    with runtime(hot_reload_enabled=True,
                 on_reload=lambda ph: phases.append((ph.type.name, ph.bundle_name))) as rt:
        rt.load_bundle(provider)
        rt.load_bundle(dependent)
        rt.reload_bundle(provider)
        assert phases == [("Preparing", "prov"), ("Preparing", "dep"), ("Reloaded", "dep"),
                          ("Reloaded", "prov")]
        with pytest.raises(polyplug.DependencyInUse, match=r'\["dep"\]'):
            rt.unload_bundle(polyplug.bundle_id("prov"))


# ── the SDK's id helpers, checked from inside a guest ─────────────────────────

# Golden values from the spec (abi-runtime.md §4), computed independently of this code.
SDK_IDS = [
    ('abi.host_contract_id("logger", 1)', 0xEE2F1DB90B2B5EFF),
    ('abi.guest_contract_id("logger", 1)', 0xA1ADF81FD5134C83),
    ('abi.guest_contract_id("test.add", 1)', 0x40244DF59FCBECB6),
    ('abi.bundle_id("my-bundle")', 0xFE6226876E3A35B2),
    ('abi.bundle_id("polyplug-core")', 0x6EF4AEE714F5F991),
    ('abi.fnv1a_64("image.decode@1")', 0xA1BA05DD7DA18569),
]


@pytest.mark.parametrize("module", ["abi", "polyplug_abi"])
def test_the_sdk_id_helpers_match_the_spec_inside_a_guest(tmp_path: Path, module: str) -> None:
    checks = "\n".join(
        f"    if {expr} ~= 0x{value:016X}ULL then error([[{expr} = ]] .. tostring({expr})) end"
        for expr, value in SDK_IDS)
    writes = "\n".join(f"    out[{i}] = {expr}" for i, (expr, _) in enumerate(SDK_IDS))
    lua = f"""
local ffi = require("ffi")
local abi = require("{module}")
local function ids(_, _, out_ptr)
    local out = ffi.cast("uint64_t *", ffi.cast("uintptr_t", out_ptr))
{writes}
end
function polyplug_init()
{checks}
    return {{ ["test.ids"] = {{ factory = function() return {{}} end,
                               functions = {{ [0] = ids }} }} }}, {{ code = 0 }}
end
"""
    with runtime() as rt:
        rt.load_bundle(make_bundle(tmp_path, "ids", lua))  # init checks the values itself
        out = ffi.new("uint64_t[]", len(SDK_IDS))
        assert call(resolve(rt, "test.ids"), 0, out=out) == (0, "")
        assert list(out) == [value for _, value in SDK_IDS]
