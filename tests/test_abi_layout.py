"""The frozen 0.1.3 ABI: struct sizes, offsets and enum values (abi-runtime.md §2-§3,
lua-loader.md §4.2), as seen by cffi (= the C header) and by a real LuaJIT guest
(= the embedded SDK's ffi.cdef), plus the shape of the HostApi table and the public
``pp_*`` surface.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import polyplug
from polyplug import ffi, lib
from polyplug import runtime as pp_runtime

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "csrc" / "include" / "polyplug.h"
ABI_HEADER = ROOT / "csrc" / "include" / "polyplug_abi.h"

# ── expected layouts, copied from the spec tables (not derived from the build) ──

# type -> (size, align)
SIZES: dict[str, tuple[int, int]] = {
    "StringView": (16, 8),
    "Buffer": (24, 8),
    "Version": (12, 4),
    "Ed25519PublicKey": (32, 1),
    "AbiError": (24, 8),
    "GuestContractHandle": (8, 4),
    "GuestContractInstance": (16, 8),
    "HostContractInstance": (8, 8),
    "VmLoaderData": (8, 8),
    "ArrayGuestContractHandle": (24, 8),
    "ArrayU64": (24, 8),
    "ArrayDependencyInfo": (24, 8),
    "ArrayEd25519PublicKey": (24, 8),
    "NativeDispatch": (16, 8),
    "VmDispatch": (16, 8),
    "DispatchMechanisms": (16, 8),
    "GuestContractInterface": (56, 8),
    "HostContractInterface": (80, 8),
    "BundleInitContext": (24, 8),
    "PluginDescriptor": (48, 8),
    "DependencyInfo": (24, 8),
    "ReloadPhase": (48, 8),
    "RuntimeConfig": (72, 8),
    "CallArena": (40, 8),
    "ArenaOverflowBlock": (24, 8),
    "HostApi": (184, 8),
}

# type -> [(field, offset)], in declaration order
OFFSETS: dict[str, list[tuple[str, int]]] = {
    "StringView": [("ptr", 0), ("len", 8)],
    "Buffer": [("ptr", 0), ("len", 8), ("cap", 16)],
    "Version": [("major", 0), ("minor", 4), ("patch", 8)],
    "Ed25519PublicKey": [("bytes", 0)],
    "AbiError": [("code", 0), ("message", 8)],
    "GuestContractHandle": [("index", 0), ("generation", 4)],
    "GuestContractInstance": [("data", 0), ("contract_id", 8)],
    "HostContractInstance": [("data", 0)],
    "VmLoaderData": [("data", 0)],
    "ArrayGuestContractHandle": [("items", 0), ("len", 8), ("align", 16)],
    "ArrayU64": [("items", 0), ("len", 8), ("align", 16)],
    "ArrayDependencyInfo": [("items", 0), ("len", 8), ("align", 16)],
    "ArrayEd25519PublicKey": [("items", 0), ("len", 8), ("align", 16)],
    "NativeDispatch": [("function_count", 0), ("functions", 8)],
    "VmDispatch": [("call", 0), ("loader_data", 8)],
    "DispatchMechanisms": [("native", 0), ("vm", 0)],
    "GuestContractInterface": [
        ("contract_id", 0), ("contract_version", 8), ("dispatch_type", 20),
        ("create_instance", 24), ("destroy_instance", 32), ("dispatch", 40),
    ],
    "HostContractInterface": [
        ("contract_id", 0), ("contract_version", 8), ("singleton", 20), ("dispatch_type", 24),
        ("runtime", 32), ("user_data", 40), ("create_instance", 48),
        ("destroy_instance", 56), ("dispatch", 64),
    ],
    "BundleInitContext": [("bundle_id", 0), ("bundle_path", 8)],
    "PluginDescriptor": [("name", 0), ("contract_name", 16), ("version", 32)],
    "DependencyInfo": [("contract_id", 0), ("min_version", 8), ("bundle_id", 16)],
    "ReloadPhase": [("phase_type", 0), ("bundle_id", 8), ("bundle_name", 16), ("reason", 32)],
    "RuntimeConfig": [
        ("compatibility", 0x00), ("hot_reload_enabled", 0x04), ("on_reload", 0x08),
        ("on_reload_user_data", 0x10), ("log", 0x18), ("log_user_data", 0x20),
        ("log_max_level", 0x28), ("signature_policy", 0x2C), ("trusted_keys", 0x30),
    ],
    "CallArena": [("cur", 0), ("end", 8), ("base", 16), ("host", 24), ("first_overflow", 32)],
    "ArenaOverflowBlock": [("next", 0), ("capacity", 8), ("used", 16)],
    "HostApi": [
        ("runtime", 0), ("register_guest_contract", 8), ("alloc", 16), ("free", 24),
        ("find_guest_contract", 32), ("find_all_guest_contracts", 40),
        ("resolve_guest_contract", 48), ("get_host_contract", 56),
        ("resolve_host_contract_interface", 64), ("list_bundles", 72),
        ("get_dependencies", 80), ("load_bundle", 88), ("reload_bundle", 96),
        ("register_host_contract", 104), ("register_loader", 112), ("get_last_error", 120),
        ("get_error_len", 128), ("unload_bundle", 136), ("log", 144),
        ("create_guest_instance", 152), ("destroy_guest_instance", 160),
        ("revision_counter", 168), ("reserved", 176),
    ],
}

HOST_API_FUNCTIONS = [name for name, _ in OFFSETS["HostApi"] if name not in ("runtime", "reserved")]

ENUMS: dict[str, dict[str, int]] = {
    "AbiErrorCode": {
        "Ok": 0, "Generic": 1, "BufferTooSmall": 2, "Panic": 3, "NotFound": 4,
        "StaleHandle": 5, "FunctionNotAvailable": 6, "DuplicateProvider": 7,
        "InvalidPointer": 8, "ReentrantCall": 9, "HostContractNotFound": 100,
        "HostContractVersionMismatch": 101, "HostContractCallFailed": 102,
    },
    "LogLevel": {"Error": 1, "Warn": 2, "Info": 3, "Debug": 4, "Trace": 5},
    "DispatchType": {"Native": 0, "VirtualMachine": 1},
    "Compatibility": {"Strict": 0, "Relaxed": 1, "Yolo": 2},
    "ReloadPhaseType": {"Preparing": 0, "Reloaded": 1, "Failed": 2, "Unloading": 3},
    "SignaturePolicy": {"Off": 0, "WarnOnly": 1, "Required": 2},
    "SupportedLanguage": {
        "Rust": 0, "Cpp": 1, "Dotnet": 2, "Python": 3, "Lua": 4, "JavaScript": 5,
    },
}

# The Python IntEnums polyplug.runtime exposes (SupportedLanguage has none).
PY_ENUMS = ["AbiErrorCode", "LogLevel", "DispatchType", "Compatibility", "ReloadPhaseType",
            "SignaturePolicy"]


def _layout_cases() -> Iterator[tuple[str, str, int]]:
    for type_name, fields in OFFSETS.items():
        for field_name, offset in fields:
            yield type_name, field_name, offset


# ── cffi (the C header as compiled) ──────────────────────────────────────────


@pytest.mark.parametrize("type_name", sorted(SIZES))
def test_struct_size_and_alignment(type_name: str) -> None:
    size, align = SIZES[type_name]
    assert ffi.sizeof(type_name) == size
    assert ffi.alignof(type_name) == align


@pytest.mark.parametrize(("type_name", "field_name", "offset"), list(_layout_cases()))
def test_field_offset(type_name: str, field_name: str, offset: int) -> None:
    assert ffi.offsetof(type_name, field_name) == offset


@pytest.mark.parametrize("type_name", sorted(OFFSETS))
def test_field_lists_are_complete_and_ordered(type_name: str) -> None:
    """No extra, missing or reordered fields compared with the spec tables."""
    actual = [name for name, _ in ffi.typeof(type_name).fields]
    assert actual == [name for name, _ in OFFSETS[type_name]]


def test_field_types_of_note() -> None:
    """The field types the spec calls out (u32 codes, C bool flags, by-value views)."""
    def ftype(t: str, f: str) -> str:
        return dict(ffi.typeof(t).fields)[f].type.cname

    assert ftype("AbiError", "code") == "uint32_t"
    assert ftype("AbiError", "message") == "struct StringView"
    assert ftype("GuestContractInterface", "dispatch_type") == "uint32_t"
    assert ftype("HostContractInterface", "singleton") == "_Bool"
    assert ftype("RuntimeConfig", "hot_reload_enabled") == "_Bool"
    assert ftype("RuntimeConfig", "log_max_level") == "uint32_t"
    assert ftype("ReloadPhase", "phase_type") == "uint32_t"
    assert ftype("DependencyInfo", "min_version") == "uint32_t"
    assert ftype("Ed25519PublicKey", "bytes") == "uint8_t[32]"
    assert ftype("HostApi", "reserved") == "void *"
    assert ftype("HostApi", "runtime") == "void *"


def test_runtime_config_trusted_keys_array_offsets() -> None:
    """trusted_keys = {items @0x30, len @0x38, align @0x40} inside RuntimeConfig."""
    assert ffi.offsetof("RuntimeConfig", "trusted_keys", "items") == 0x30
    assert ffi.offsetof("RuntimeConfig", "trusted_keys", "len") == 0x38
    assert ffi.offsetof("RuntimeConfig", "trusted_keys", "align") == 0x40


def test_dispatch_union_overlap() -> None:
    """vm.call overlaps native.function_count @0; native.functions overlaps vm.loader_data @8."""
    for sub in ("native", "vm"):
        assert ffi.offsetof("DispatchMechanisms", sub) == 0
    assert ffi.offsetof("DispatchMechanisms", "vm", "call") == 0
    assert ffi.offsetof("DispatchMechanisms", "native", "function_count") == 0
    assert ffi.offsetof("DispatchMechanisms", "vm", "loader_data") == 8
    assert ffi.offsetof("DispatchMechanisms", "native", "functions") == 8
    assert ffi.offsetof("GuestContractInterface", "dispatch", "vm", "call") == 40
    assert ffi.offsetof("GuestContractInterface", "dispatch", "vm", "loader_data") == 48
    assert ffi.offsetof("HostContractInterface", "dispatch", "vm", "call") == 64

    d = ffi.new("DispatchMechanisms *")
    d.native.functions = ffi.cast("const void * const *", 0x1234560)
    assert int(ffi.cast("uintptr_t", d.vm.loader_data.data)) == 0x1234560


def test_abi_version_constant() -> None:
    assert lib.POLYPLUG_ABI_VERSION == 1


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_enum_values_in_c(enum_name: str) -> None:
    for member, value in ENUMS[enum_name].items():
        assert getattr(lib, f"{enum_name}_{member}") == value, f"{enum_name}_{member}"


def test_c_enums_have_no_extra_members() -> None:
    """Every `<Enum>_<Member>` constant the module exposes is one the spec lists."""
    for enum_name, members in ENUMS.items():
        exposed = {n[len(enum_name) + 1:] for n in dir(lib) if n.startswith(enum_name + "_")}
        assert exposed == set(members), enum_name


@pytest.mark.parametrize("enum_name", PY_ENUMS)
def test_python_int_enums_match(enum_name: str) -> None:
    py_enum = getattr(pp_runtime, enum_name)
    assert {m.name: int(m) for m in py_enum} == ENUMS[enum_name]
    # re-exported at the package top level as the same object
    assert getattr(polyplug, enum_name) is py_enum
    for member in py_enum:
        assert int(member) == getattr(lib, f"{enum_name}_{member.name}")


# ── the HostApi table of a live runtime ──────────────────────────────────────


@pytest.fixture
def rt() -> Iterator[polyplug.Runtime]:
    runtime = polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build()
    yield runtime
    runtime.close()


def test_host_api_has_21_non_null_function_pointers_and_null_reserved(
    rt: polyplug.Runtime,
) -> None:
    host = rt.host_api
    assert len(HOST_API_FUNCTIONS) == 21
    for name in HOST_API_FUNCTIONS:
        assert getattr(host, name) != ffi.NULL, name
    assert host.reserved == ffi.NULL
    assert host.runtime != ffi.NULL
    assert lib.pp_runtime_from_host(host) != ffi.NULL


def test_c_created_host_api_is_complete_too() -> None:
    host = lib.polyplug_runtime_create(ffi.NULL)
    assert host != ffi.NULL
    try:
        for name in HOST_API_FUNCTIONS:
            assert getattr(host, name) != ffi.NULL, name
        assert host.reserved == ffi.NULL
    finally:
        lib.polyplug_runtime_destroy(host)


# ── the same layouts seen from inside a LuaJIT guest ─────────────────────────


def _lua_probe_bundle(tmp_path: Path, probes: list[str], module: str) -> Path:
    """A bundle whose fn 0 writes each probe expression (a Lua number) into out[i]."""
    name = f"abi_probe_{module}"
    d = tmp_path / name
    d.mkdir()
    (d / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "bundle.lua"\n'
    )
    body = "\n".join(f"    out[{i}] = {expr}" for i, expr in enumerate(probes))
    (d / "bundle.lua").write_text(f"""
local ffi = require("ffi")
local abi = require("{module}")

local function probe(_inst, _args, out_ptr)
    local out = ffi.cast("int64_t *", ffi.cast("uintptr_t", out_ptr))
{body}
end

function polyplug_init(host, ctx)
    return {{
        ["test.abi_probe"] = {{
            contract_version = 1,
            plugin_name = "probe",
            factory = function(h) return {{}} end,
            functions = {{ [0] = probe }},
        }},
    }}, {{ code = 0 }}
end
""")
    return d


def _run_probes(tmp_path: Path, probes: list[str], module: str = "abi") -> list[int]:
    bundle = _lua_probe_bundle(tmp_path, probes, module)
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as runtime:
        runtime.load_bundle(bundle)
        handle = runtime.find_guest_contract(polyplug.guest_contract_id("test.abi_probe", 1), 1)
        iface = runtime.resolve_guest_contract(handle)
        out = ffi.new("int64_t[]", len(probes))
        err = ffi.new("AbiError *")
        lib.pp_call(iface, ffi.NULL, 0, 0, ffi.NULL, out, ffi.NULL, err)
        assert err.code == 0, ffi.string(ffi.cast("char *", err.message.ptr), err.message.len)
        return [int(v) for v in out]


def _all_cffi_layout_facts() -> list[tuple[str, int]]:
    """(Lua expression, value per cffi) for the size and every field offset of every type."""
    facts: list[tuple[str, int]] = []
    for type_name in sorted(SIZES):
        facts.append((f'ffi.sizeof("{type_name}")', ffi.sizeof(type_name)))
        facts.append((f'ffi.alignof("{type_name}")', ffi.alignof(type_name)))
        for field_name, _ in ffi.typeof(type_name).fields:
            facts.append((f'ffi.offsetof("{type_name}", "{field_name}")',
                          ffi.offsetof(type_name, field_name)))
    return facts


def test_lua_guest_sees_the_c_layouts(tmp_path: Path) -> None:
    """The embedded SDK's ffi.cdef (require("abi")) agrees with the C header byte for byte."""
    facts = _all_cffi_layout_facts()
    seen = _run_probes(tmp_path, [expr for expr, _ in facts])
    mismatches = [(expr, want, got) for (expr, want), got in zip(facts, seen) if want != got]
    assert mismatches == []


def test_lua_guest_sees_the_headline_numbers(tmp_path: Path) -> None:
    """The figures the brief names, checked against the spec literals (not cffi)."""
    probes = {
        'ffi.sizeof("HostApi")': 184,
        'ffi.sizeof("GuestContractInterface")': 56,
        'ffi.sizeof("HostContractInterface")': 80,
        'ffi.sizeof("CallArena")': 40,
        'ffi.sizeof("ArenaOverflowBlock")': 24,
        'ffi.sizeof("RuntimeConfig")': 72,
        'ffi.sizeof("ReloadPhase")': 48,
        'ffi.sizeof("PluginDescriptor")': 48,
        'ffi.sizeof("AbiError")': 24,
        'ffi.sizeof("GuestContractHandle")': 8,
        'ffi.offsetof("HostApi", "revision_counter")': 168,
        'ffi.offsetof("HostApi", "log")': 144,
        'ffi.offsetof("HostApi", "reserved")': 176,
        'ffi.offsetof("GuestContractInterface", "dispatch")': 40,
        'ffi.offsetof("CallArena", "first_overflow")': 32,
        "abi.POLYPLUG_ABI_VERSION": 1,
        "tonumber(ffi.C.POLYPLUG_ABI_VERSION)": 1,
    }
    assert _run_probes(tmp_path, list(probes)) == list(probes.values())


def test_lua_polyplug_abi_shim_is_the_same_cdef(tmp_path: Path) -> None:
    """require("polyplug_abi") gives the same declarations (it is a shim over abi)."""
    probes = ['ffi.sizeof("HostApi")', 'ffi.offsetof("HostApi", "revision_counter")',
              'ffi.sizeof("CallArena")', '(abi == require("abi")) and 1 or 0']
    assert _run_probes(tmp_path, probes, module="polyplug_abi") == [184, 168, 40, 1]


def test_lua_guest_sees_the_enum_values(tmp_path: Path) -> None:
    """Both ffi.C.<Enum>_<Member> and the abi.<Enum> Lua tables carry the ABI values."""
    exprs: list[str] = []
    want: list[int] = []
    for enum_name, members in ENUMS.items():
        for member, value in members.items():
            exprs.append(f"tonumber(ffi.C.{enum_name}_{member})")
            exprs.append(f"abi.{enum_name}.{member}")
            want += [value, value]
    assert _run_probes(tmp_path, exprs) == want


# ── the public pp_* surface ──────────────────────────────────────────────────

PP_API_DECL = re.compile(r"PP_API\b[^;{(]*?\b((?:pp|polyplug)_[A-Za-z0-9_]*)\s*\(", re.DOTALL)


def _header_functions() -> list[str]:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)  # comments may mention names
    return sorted(set(PP_API_DECL.findall(text)))


def test_header_parse_finds_the_api() -> None:
    names = _header_functions()
    assert "pp_runtime_new" in names and "pp_arena_alloc" in names
    assert "polyplug_runtime_create" in names and "polyplug_runtime_destroy" in names
    assert "#define" not in " ".join(names)


def test_public_pp_functions_match_the_compiled_module() -> None:
    """Every PP_API function in polyplug.h is callable through lib, and lib has no others.

    The only extra lowercase ``pp_`` names in lib are the ``extern "Python"`` callbacks
    (``pp_py_*``) that the cffi build declares itself.
    """
    header = [n for n in _header_functions() if n.startswith("pp_")]
    in_lib = sorted(n for n in dir(lib) if n.startswith("pp_") and not n.startswith("pp_py_"))
    assert in_lib == header
    for name in header:
        assert callable(getattr(lib, name)), name


def test_upstream_entry_points_are_exposed() -> None:
    for name in ("polyplug_runtime_create", "polyplug_runtime_destroy"):
        assert name in dir(lib)
        assert callable(getattr(lib, name))


def test_pp_py_callbacks_are_only_the_declared_ones() -> None:
    names = sorted(n for n in dir(lib) if n.startswith("pp_py_"))
    callbacks = ["pp_py_host_call", "pp_py_host_create", "pp_py_host_destroy",
                 "pp_py_host_release", "pp_py_load_hook", "pp_py_log", "pp_py_on_reload",
                 "pp_py_reload_hook"]
    # every callback but the host call (pp_py_host_call_adapter) has its exit guard
    guarded = [f"{n}_guarded" for n in callbacks if n != "pp_py_host_call"]
    assert names == sorted([*callbacks, *guarded, "pp_py_host_call_adapter",
                            "pp_py_host_result_string"])


def test_abi_header_has_no_pp_api_functions() -> None:
    """polyplug_abi.h is the frozen ABI: type declarations only, no host functions."""
    assert "PP_API" not in ABI_HEADER.read_text()


def test_version_strings() -> None:
    assert ffi.string(lib.pp_version()).decode() == polyplug.__version__
    assert "LuaJIT" in polyplug.luajit_version()


# ── Python reads the ABI values from the header; nothing is copied by hand ────

PKG = Path(polyplug.__file__).resolve().parent


def _literal_int(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def test_python_enums_are_built_from_the_header() -> None:
    from polyplug import _abi

    tree = ast.parse((PKG / "_abi.py").read_text(encoding="utf-8"))
    [block] = [n for n in tree.body if isinstance(n, ast.If)
               and ast.unparse(n.test) == "TYPE_CHECKING"]
    # what type checkers see: enum.IntEnum("Name", "Member Member ...")
    typed = {stmt.targets[0].id: stmt.value.args[1].value.split() for stmt in block.body}
    built = {stmt.targets[0].id: ast.unparse(stmt.value.func) for stmt in block.orelse}
    assert set(typed) == set(built) == set(PY_ENUMS) | {"AbiErrorCode"}
    assert set(built.values()) == {"_header_enum"}
    for name, members in typed.items():
        runtime = getattr(_abi, name)
        header = {n[len(name) + 1:]: getattr(lib, n) for n in dir(lib) if n.startswith(name + "_")}
        assert {m.name: int(m) for m in runtime} == header
        assert members == [m.name for m in runtime]  # same names, same (value) order
        assert runtime.__module__ == "polyplug._abi" and runtime.__doc__


@pytest.mark.parametrize("module", ["_abi.py", "_errors.py", "_callbacks.py", "call.py",
                                    "runtime.py", "loader.py"])
def test_no_status_or_abi_code_is_a_literal(module: str) -> None:
    """No `code == 6`, no `{1: GuestError}`, no `code = 200`: codes come from _abi / lib."""
    tree = ast.parse((PKG / module).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = " ".join(ast.unparse(s) for s in sides if not _literal_int(s))
            if any(_literal_int(s) and s.value not in (0,) for s in sides) and (
                    "code" in names or "status" in names):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Dict) and any(k is not None and _literal_int(k)
                                                for k in node.keys):
            found.append(ast.unparse(node)[:60])
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if (any(ast.unparse(t).endswith(("code", "status")) for t in targets)
                    and node.value is not None and _literal_int(node.value)
                    and node.value.value != 0):  # 0: "no status", not a copied code
                found.append(ast.unparse(node))
    assert found == []


def test_the_callback_module_does_not_import_the_runtime() -> None:
    """_callbacks <-> runtime was an import cycle; the enums now live in _abi."""
    tree = ast.parse((PKG / "_callbacks.py").read_text(encoding="utf-8"))
    def runtime_imports(node: ast.AST) -> list[str]:
        return [ast.unparse(n) for n in ast.walk(node)
                if isinstance(n, ast.ImportFrom) and n.module == "polyplug.runtime"]

    type_only = [imp for block in tree.body if isinstance(block, ast.If)
                 and ast.unparse(block.test) == "TYPE_CHECKING" for imp in runtime_imports(block)]
    assert runtime_imports(tree) == type_only  # only for type annotations
