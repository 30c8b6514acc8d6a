"""manifest.toml reading, validation and the function-count pre-check (spec §7, §8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyplug._errors import (
    BundleNotADirectory,
    BundleTampered,
    FunctionCountMismatch,
    LoaderError,
    ManifestMissingFile,
    ManifestParse,
    PathEscape,
)
from polyplug.ids import Version, bundle_id, guest_contract_id
from polyplug.manifest import (
    Dependency,
    ManifestData,
    check_function_counts,
    current_platform,
    read_manifest,
    validate,
)

STRICT, RELAXED, YOLO = 0, 1, 2

DEMO_ID = bundle_id("demo")
U64 = "an unsigned 64-bit integer (0..18446744073709551615)"
U32 = "an unsigned 32-bit integer (0..4294967295)"


def toml_for(name: str = "demo", **keys: str) -> str:
    """A valid manifest for bundle ``name``; ``keys`` add or replace top-level lines."""
    lines = {
        "loader": '"lua"',
        "name": f'"{name}"',
        "id": str(bundle_id(name)),
        "file": '"bundle.lua"',
        "version": '"1.0.0"',
    }
    lines.update(keys)
    return "".join(f"{key} = {value}\n" for key, value in lines.items())


def make_bundle(tmp_path: Path, manifest: str | bytes, dirname: str = "demo") -> Path:
    """Create ``tmp_path/dirname`` with ``manifest.toml`` and ``bundle.lua``; return the dir."""
    bundle = tmp_path / dirname
    bundle.mkdir()
    data = manifest.encode() if isinstance(manifest, str) else manifest
    (bundle / "manifest.toml").write_bytes(data)
    (bundle / "bundle.lua").write_text("return {}\n")
    return bundle


def make_manifest(path: Path, **fields: object) -> ManifestData:
    """A valid in-memory manifest for bundle ``demo`` at ``path`` (seed-test style)."""
    values: dict[str, object] = {
        "id": DEMO_ID,
        "name": "demo",
        "loader": "lua",
        "file": "bundle.lua",
        "path": path,
        "version": "1.0.0",
    }
    values.update(fields)
    return ManifestData(**values)  # type: ignore[arg-type]


def parse_failure(bundle: Path) -> ManifestParse:
    """Read ``bundle``'s manifest, expecting a ManifestParse about ``manifest.toml``."""
    with pytest.raises(ManifestParse) as info:
        read_manifest(bundle)
    err = info.value
    manifest_path = bundle / "manifest.toml"
    assert err.path == str(manifest_path)
    assert str(err) == f"manifest parse error for `{manifest_path}`: {err.reason}"
    return err


def validate_failure(m: ManifestData) -> ManifestParse:
    """Validate ``m``, expecting a ManifestParse about its bundle directory."""
    with pytest.raises(ManifestParse) as info:
        validate(m)
    err = info.value
    assert err.path == str(m.path)
    assert str(err) == f"manifest parse error for `{m.path}`: {err.reason}"
    return err


# ── ManifestData ─────────────────────────────────────────────────────────────


def test_manifest_data_by_keyword_as_the_seed_tests_build_it(tmp_path: Path) -> None:
    m = ManifestData(
        id=DEMO_ID,
        name="demo",
        loader="lua",
        file="bundle.lua",
        path=tmp_path,
        version="",
        provides=[],
        function_count={},
        dependencies=[],
        needs_reinit_on_dep_reload=False,
        bundle_dependencies=[],
    )
    assert m.entry_path() == tmp_path / "bundle.lua"
    assert m.parsed_version() == Version(0, 0, 0)
    validate(m)


def test_manifest_data_defaults_are_not_shared(tmp_path: Path) -> None:
    a = ManifestData(id=1, name="a", loader="lua", file="a.lua", path=tmp_path)
    b = ManifestData(id=2, name="b", loader="lua", file="b.lua", path=tmp_path)
    a.provides.append("x")
    a.function_count["x@1"] = 1
    assert b.provides == [] and b.function_count == {} and b.dependencies == []
    assert b.bundle_dependencies == [] and b.version == "" and not b.needs_reinit_on_dep_reload


def test_manifest_data_path_is_a_path(tmp_path: Path) -> None:
    m = make_manifest(str(tmp_path))  # type: ignore[arg-type]
    assert m.path == tmp_path
    assert m.entry_path() == tmp_path / "bundle.lua"


def test_parsed_version(tmp_path: Path) -> None:
    assert make_manifest(tmp_path, version="2.5").parsed_version() == Version(2, 5, 0)


# ── read_manifest: success ───────────────────────────────────────────────────


def test_read_full_manifest(tmp_path: Path) -> None:
    gid = guest_contract_id("img.Decoder", 1)
    text = (
        toml_for(
            provides='["x.H@1", "x.G"]',
            needs_reinit_on_dep_reload="true",
            bundle_dependencies='["core@1.0"]',
        )
        + '[function_count]\n"x.H@1" = 3\n"x.G@1" = 0\n'
        + '[[dependency]]\nkind = "contract"\ncontract = "img.Decoder"\nmin_version = "1.0.0"\n'
        + f"contract_id = {gid}\n"
        + '[[dependency]]\nkind = "bundle"\ncontract = "c"\nmin_version = "2.0"\n'
        + 'bundle = "core"\nbundle_id = 18446744073709551615\n'
    )
    bundle = make_bundle(tmp_path, text)
    m = read_manifest(bundle)
    assert m == ManifestData(
        id=DEMO_ID,
        name="demo",
        loader="lua",
        file="bundle.lua",
        path=bundle,
        version="1.0.0",
        provides=["x.H@1", "x.G"],
        function_count={"x.H@1": 3, "x.G@1": 0},
        dependencies=[
            Dependency(
                kind="contract", contract="img.Decoder", min_version="1.0.0", contract_id=gid
            ),
            Dependency(
                kind="bundle", contract="c", min_version="2.0", bundle="core", bundle_id=2**64 - 1
            ),
        ],
        needs_reinit_on_dep_reload=True,
        bundle_dependencies=["core@1.0"],
    )
    validate(m)


def test_read_minimal_manifest_uses_defaults(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, 'loader = "lua"\n')
    m = read_manifest(bundle)
    assert (m.loader, m.name, m.id, m.file, m.version) == ("lua", "", 0, "", "")
    assert m.provides == [] and m.function_count == {} and m.dependencies == []
    assert m.bundle_dependencies == [] and m.needs_reinit_on_dep_reload is False


def test_read_from_a_file_inside_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, toml_for())
    m = read_manifest(bundle / "bundle.lua")
    assert m.path == bundle
    assert read_manifest(str(bundle / "manifest.toml")).path == bundle


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    text = (
        toml_for(author='"me"', runtime='"lua"', homepage="{ url = 1 }")
        + "[extra]\nanything = [1, 2.5, true]\n"
        + '[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"\nnote = 3\n'
    )
    m = read_manifest(make_bundle(tmp_path, text))
    assert m.name == "demo"
    assert m.dependencies == [Dependency(kind="k", contract="c", min_version="1.0")]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    m = read_manifest(make_bundle(tmp_path, b"\xef\xbb\xbf" + toml_for().encode()))
    assert m.loader == "lua"


def test_non_ascii_values(tmp_path: Path) -> None:
    m = read_manifest(make_bundle(tmp_path, toml_for("démo")))
    assert m.name == "démo"
    validate(m)


# ── read_manifest: the file table form ───────────────────────────────────────


def test_file_table_picks_this_platform(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    text = toml_for(
        file=f'{{ {os_name} = {{ {arch} = "mine.lua", other = "x" }}, plan9 = {{ mips = "p" }} }}'
    )
    assert read_manifest(make_bundle(tmp_path, text)).file == "mine.lua"


def test_file_table_ignores_non_table_siblings(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    text = (
        'loader = "lua"\n[file]\n'
        f'{os_name}.{arch} = "mine.lua"\n'
        'provides = ["x"]\nnote = "a sibling scoped into [file] by TOML"\n'
    )
    m = read_manifest(make_bundle(tmp_path, text))
    assert m.file == "mine.lua"
    assert m.provides == []


def test_file_table_without_this_platform(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    text = (
        'loader = "lua"\n[file]\nzos.s390x = "a"\nplan9.mips = "b"\nplan9.arm = "c"\n'
        'broken = { x86_64 = 3 }\nscalar = "s"\n'
    )
    err = parse_failure(make_bundle(tmp_path, text))
    assert err.reason == (
        f"no file entry for platform {os_name}.{arch}, "
        'available: ["plan9.arm", "plan9.mips", "zos.s390x"]'
    )


def test_empty_file_table(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    err = parse_failure(make_bundle(tmp_path, 'loader = "lua"\nfile = {}\n'))
    assert err.reason == f"no file entry for platform {os_name}.{arch}, available: []"


def test_file_table_entry_for_this_platform_must_be_a_string(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    text = f'loader = "lua"\n[file]\n{os_name}.{arch} = 3\n'
    err = parse_failure(make_bundle(tmp_path, text))
    assert err.reason == (f"key `file.{os_name}.{arch}`: expected a string, found integer 3"
                          " (at line 3, column 16)")


# ── read_manifest: unreadable, not UTF-8, not TOML ───────────────────────────


def test_nonexistent_bundle_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(BundleNotADirectory) as info:
        read_manifest(missing)
    assert str(info.value) == f"bundle path is not a directory: `{missing}`"
    assert info.value.path == str(missing)
    assert isinstance(info.value, LoaderError)


def test_bundle_path_with_nul_byte(tmp_path: Path) -> None:
    with pytest.raises(BundleNotADirectory):
        read_manifest(f"{tmp_path}/a\0b")


def test_directory_without_manifest(tmp_path: Path) -> None:
    err = parse_failure(tmp_path)
    assert err.reason == f"failed to read: no manifest.toml in {tmp_path}"


def test_manifest_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "manifest.toml").mkdir()
    err = parse_failure(tmp_path)
    assert err.reason == "failed to read: Is a directory (os error 21)"


def test_non_utf8_manifest(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, b'loader = "lua"\nname = "\xff\xfe"\n'))
    assert err.reason == (
        "failed to read: stream did not contain valid UTF-8 (byte 0xff at offset 23);"
        " manifest.toml must be UTF-8 text"
    )


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, 'loader = "lua"\nname "demo"\n'))
    assert err.reason.startswith("invalid TOML: ")
    assert "(at line 2, column 6)" in err.reason
    assert err.reason.endswith('\n2 | name "demo"\n  |      ^')


def test_toml_syntax_error_at_end_of_document(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, 'loader = "lua'))
    assert err.reason.startswith("invalid TOML: ")


def test_missing_loader(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, 'name = "demo"\n'))
    assert err.reason == "missing field `loader`"


# ── read_manifest: wrong types and ranges ────────────────────────────────────


@pytest.mark.parametrize(
    ("lines", "reason", "where"),
    [
        (
            "loader = 3", "key `loader`: expected a string, found integer 3",
            "line 1, column 10",
        ),
        (
            'loader = "lua"\nname = 3', "key `name`: expected a string, found integer 3",
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nname = 1.5', "key `name`: expected a string, found float 1.5",
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nname = true', "key `name`: expected a string, found boolean true",
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nname = []', "key `name`: expected a string, found an array",
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nname = {}', "key `name`: expected a string, found a table",
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nversion = 1', "key `version`: expected a string, found integer 1",
            "line 2, column 11",
        ),
        (
            'loader = "lua"\nid = -1',
            f"key `id`: expected {U64}, found integer -1",
            "line 2, column 6",
        ),
        (
            'loader = "lua"\nid = 18446744073709551616',
            f"key `id`: expected {U64}, found integer 18446744073709551616",
            "line 2, column 6",
        ),
        (
            'loader = "lua"\nid = "123"',
            f'key `id`: expected {U64}, found string "123"',
            "line 2, column 6",
        ),
        (
            'loader = "lua"\nid = true',
            f"key `id`: expected {U64}, found boolean true",
            "line 2, column 6",
        ),
        (
            'loader = "lua"\nfile = 3',
            "key `file`: expected a string or a table like"
            ' {linux = {x86_64 = "path"}}, found integer 3',
            "line 2, column 8",
        ),
        (
            'loader = "lua"\nprovides = "x"',
            'key `provides`: expected an array of strings, found string "x"',
            "line 2, column 12",
        ),
        (
            'loader = "lua"\nprovides = ["a", 3]',
            "key `provides[1]`: expected a string, found integer 3",
            "line 2, column 18",
        ),
        (
            'loader = "lua"\nbundle_dependencies = [["a"]]',
            "key `bundle_dependencies[0]`: expected a string, found an array",
            "line 2, column 24",
        ),
        (
            'loader = "lua"\nneeds_reinit_on_dep_reload = "yes"',
            'key `needs_reinit_on_dep_reload`: expected a boolean, found string "yes"',
            "line 2, column 30",
        ),
        (
            'loader = "lua"\nfunction_count = 3',
            "key `function_count`: expected a table of"
            ' "<contract>@<major>" = <count>, found integer 3',
            "line 2, column 18",
        ),
        (
            'loader = "lua"\n[function_count]\n"x@1" = -1',
            f'key `function_count."x@1"`: expected {U32}, found integer -1',
            "line 3, column 9",
        ),
        (
            'loader = "lua"\n[function_count]\n"x@1" = 4294967296',
            f'key `function_count."x@1"`: expected {U32}, found integer 4294967296',
            "line 3, column 9",
        ),
        (
            'loader = "lua"\n[function_count]\n"x@1" = "3"',
            f'key `function_count."x@1"`: expected {U32}, found string "3"',
            "line 3, column 9",
        ),
        (
            'loader = "lua"\n[function_count]\nx.y = 3',
            f'key `function_count."x"`: expected {U32}, found a table',
            "line 3, column 1",
        ),
        (
            'loader = "lua"\n[dependency]\nkind = "k"',
            "key `dependency`: expected an array of tables ([[dependency]]), found a table",
            "line 2, column 1",
        ),
        (
            'loader = "lua"\ndependency = [1]',
            "key `dependency[0]`: expected a table, found integer 1",
            "line 2, column 15",
        ),
        (
            'loader = "lua"\n[[dependency]]\ncontract = "c"\nmin_version = "1.0"',
            "missing field `kind` in `dependency[0]`",
            "line 2, column 1",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\nmin_version = "1.0"',
            "missing field `contract` in `dependency[0]`",
            "line 2, column 1",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\ncontract = "c"\n'
            '[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"',
            "missing field `min_version` in `dependency[0]`",
            "line 2, column 1",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = 1\ncontract = "c"\nmin_version = "1.0"',
            "key `dependency[0].kind`: expected a string, found integer 1",
            "line 3, column 8",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = 1',
            "key `dependency[0].min_version`: expected a string, found integer 1",
            "line 5, column 15",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"\n'
            "bundle = 3",
            "key `dependency[0].bundle`: expected a string, found integer 3",
            "line 6, column 10",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"\n'
            "contract_id = -5",
            f"key `dependency[0].contract_id`: expected {U64}, found integer -5",
            "line 6, column 15",
        ),
        (
            'loader = "lua"\n[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"\n'
            'bundle_id = "core"',
            f'key `dependency[0].bundle_id`: expected {U64}, found string "core"',
            "line 6, column 13",
        ),
    ],
)
def test_wrong_types_are_manifest_parse_errors(tmp_path: Path, lines: str, reason: str,
                                               where: str) -> None:
    err = parse_failure(make_bundle(tmp_path, lines + "\n"))
    assert err.reason == f"{reason} (at {where})"


def test_dates_and_times_are_refused_by_design(tmp_path: Path) -> None:
    """TOML dates and times have no use in a manifest: the reader refuses them anywhere,
    naming the line and the column (tomllib would accept them)."""
    for value in ("1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "1979-05-27 07:32:00"):
        err = parse_failure(make_bundle(tmp_path, f'loader = "lua"\nextra = {value}\n',
                                        dirname=f"d{len(value)}"))
        assert err.reason == (
            "invalid TOML: dates and times are not supported in manifest.toml; write the value"
            " as a string (at line 2, column 9)\n"
            f"2 | extra = {value}\n"
            "  |         ^"
        )


def test_long_wrong_values_are_shortened(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, f'loader = "{"x" * 500}"\nid = "{"9" * 500}"\n'))
    assert err.reason.startswith("key `id`: expected an unsigned 64-bit integer")
    assert err.reason.endswith('found string "' + "9" * 56 + "... (at line 2, column 6)")


# ── read_manifest: hostile input ─────────────────────────────────────────────


def test_integer_with_thousands_of_digits(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, 'loader = "lua"\nid = ' + "9" * 5000 + "\n"))
    assert err.reason == (f"key `id`: expected {U64}, found integer {'9' * 57}..."
                          " (at line 2, column 6)")


def test_integer_past_64_bits_in_an_unknown_key_is_no_error(tmp_path: Path) -> None:
    m = read_manifest(make_bundle(tmp_path, toml_for(big="0x" + "f" * 40, neg=f"-{2**70}")))
    assert m.name == "demo"


def test_binary_garbage_that_is_not_utf8(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, bytes(range(256)) * 4))
    assert err.reason.startswith("failed to read: stream did not contain valid UTF-8")


def test_binary_garbage_that_is_utf8(tmp_path: Path) -> None:
    err = parse_failure(make_bundle(tmp_path, b"\x00\x01\x02loader\x7f = [[\x1b"))
    assert err.reason.startswith("invalid TOML: ")
    assert "\x00" not in err.reason and "\x1b" not in err.reason


TOO_DEEP = "invalid TOML: values nested too deeply (more than 128 levels of tables and arrays)"


def test_deeply_nested_arrays(tmp_path: Path) -> None:
    depth = 100_000
    err = parse_failure(make_bundle(tmp_path, 'loader = "lua"\nx = ' + "[" * depth + "]" * depth))
    assert err.reason.startswith(TOO_DEEP + " (at line 2, column 133)\n")


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    # x is at depth 1 and its innermost array at 128: the deepest node allowed
    m = read_manifest(make_bundle(tmp_path, toml_for(x="[" * 128 + "]" * 128)))
    assert m.name == "demo"


def test_deeply_nested_inline_tables(tmp_path: Path) -> None:
    depth = 20_000
    err = parse_failure(
        make_bundle(tmp_path, 'loader = "lua"\nx = ' + "{a=" * depth + "1" + "}" * depth)
    )
    assert err.reason.startswith(TOO_DEEP + " (at line 2, column 389)\n")


@pytest.mark.parametrize("prefix", ["", "file."])
def test_deeply_nested_table_headers_are_refused(tmp_path: Path, prefix: str) -> None:
    """Tables nest through headers and dotted keys too; the same bound holds (tomllib has
    none there: such documents are refused by design)."""
    text = 'loader = "lua"\n[' + prefix + ".".join(["t"] * 20_000) + "]\nx = 1\n"
    err = parse_failure(make_bundle(tmp_path, text))
    assert err.reason.startswith(TOO_DEEP)


def test_very_long_line_in_toml_error(tmp_path: Path) -> None:
    err = parse_failure(
        make_bundle(tmp_path, 'loader = "lua"\nname = "' + "x" * 100_000 + '" junk\n')
    )
    assert len(err.reason) < 500


# ── validate: upstream's steps, in order ─────────────────────────────────────


def test_valid_manifest_passes(tmp_path: Path) -> None:
    validate(read_manifest(make_bundle(tmp_path, toml_for())))


def test_empty_loader(tmp_path: Path) -> None:
    err = validate_failure(make_manifest(tmp_path, loader=""))
    assert err.reason == "loader field is required but was empty"


def test_empty_name(tmp_path: Path) -> None:
    err = validate_failure(make_manifest(tmp_path, name=""))
    assert err.reason == "name field is required but was empty"


@pytest.mark.parametrize("file", ["", "   ", "\t\n"])
def test_empty_or_blank_file(tmp_path: Path, file: str) -> None:
    with pytest.raises(ManifestMissingFile) as info:
        validate(make_manifest(tmp_path, file=file))
    assert str(info.value) == 'bundle "demo" manifest.toml has an empty or missing `file` field'
    assert info.value.bundle == "demo"


def test_missing_file_key_read_from_disk(tmp_path: Path) -> None:
    m = read_manifest(make_bundle(tmp_path, 'loader = "lua"\nname = "demo"\n'))
    with pytest.raises(ManifestMissingFile):
        validate(m)


def test_zero_id(tmp_path: Path) -> None:
    err = validate_failure(make_manifest(tmp_path, id=0))
    assert err.reason == "id field is required but was 0 or missing"


def test_tampered_id(tmp_path: Path) -> None:
    with pytest.raises(BundleTampered) as info:
        validate(make_manifest(tmp_path, id=0xABC))
    err = info.value
    assert str(err) == (
        f'bundle "demo" tampered with bundle_id: expected={DEMO_ID:#x}, found=0xabc'
        f' (id must equal bundle_id("demo") = {DEMO_ID})'
    )
    assert (err.bundle, err.expected, err.found) == ("demo", f"{DEMO_ID:#x}", "0xabc")


@pytest.mark.parametrize("key", ["provides", "bundle_dependencies"])
@pytest.mark.parametrize("spec", ["x", "x@1", "x@+1", "x@1.2", "x@1.2.3", "x@1.2.3.4", "a.b.C@0"])
def test_well_formed_specs(tmp_path: Path, key: str, spec: str) -> None:
    validate(make_manifest(tmp_path, **{key: [spec]}))


@pytest.mark.parametrize("key", ["provides", "bundle_dependencies"])
@pytest.mark.parametrize("spec", ["", "@1", "  @1", " "])
def test_spec_with_empty_name(tmp_path: Path, key: str, spec: str) -> None:
    err = validate_failure(make_manifest(tmp_path, **{key: ["ok@1", spec]}))
    assert err.reason == f'{key} entry "{spec}" has an empty contract/bundle name'


@pytest.mark.parametrize("key", ["provides", "bundle_dependencies"])
@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("x@", ""),
        ("x@v1", "v1"),
        ("x@1.x", "1.x"),
        ("x@1@2", "1@2"),
        ("x@-1", "-1"),
        ("x@4294967296", "4294967296"),
    ],
)
def test_spec_with_unparseable_version(tmp_path: Path, key: str, spec: str, version: str) -> None:
    err = validate_failure(make_manifest(tmp_path, **{key: [spec]}))
    assert err.reason == (
        f'{key} entry "{spec}" has an unparseable version spec "{version}"'
        ' (expected a bare major like "name@1" or a full version)'
    )


def test_dependency_with_canonical_contract_id(tmp_path: Path) -> None:
    deps = [
        Dependency(
            "contract", "img.Decoder@2", "2.1.0", contract_id=guest_contract_id("img.Decoder", 2)
        ),
        Dependency("contract", "img.Encoder", "1", contract_id=guest_contract_id("img.Encoder", 0)),
        Dependency("contract", "img.Any", "1.0"),  # contract_id 0: not checked (and grants nothing)
    ]
    validate(make_manifest(tmp_path, dependencies=deps))


def test_dependency_with_wrong_contract_id(tmp_path: Path) -> None:
    canonical = guest_contract_id("img.Decoder", 2)
    dep = Dependency("contract", "img.Decoder@2", "2.1.0", contract_id=12345)
    err = validate_failure(make_manifest(tmp_path, dependencies=[dep]))
    assert err.reason == (
        'dependency "img.Decoder@2" declares contract_id 12345 but the canonical id for'
        f' contract "img.Decoder" at major 2 is {canonical}'
    )


def test_dependency_contract_id_when_min_version_does_not_parse(tmp_path: Path) -> None:
    dep = Dependency("contract", "x", "1", contract_id=guest_contract_id("x", 1))
    err = validate_failure(make_manifest(tmp_path, dependencies=[dep]))
    assert err.reason.endswith(f'contract "x" at major 0 is {guest_contract_id("x", 0)}')


def test_dependency_contract_id_read_from_disk(tmp_path: Path) -> None:
    text = (
        toml_for()
        + '[[dependency]]\nkind = "k"\ncontract = "x"\nmin_version = "1.0"\ncontract_id = 7\n'
    )
    m = read_manifest(make_bundle(tmp_path, text))
    err = validate_failure(m)
    assert err.reason.startswith('dependency "x" declares contract_id 7 but')


def test_validation_order(tmp_path: Path) -> None:
    """Every fault at once; fixing them one by one reveals them in spec order."""
    m = make_manifest(
        tmp_path,
        loader="",
        name="",
        file="",
        id=0,
        provides=["@1"],
        dependencies=[Dependency("k", "x", "1.0", contract_id=1)],
        version="1",
    )
    m.file = " "
    seen: list[str] = []
    fixes = [
        ("loader", "lua"),
        ("name", "demo"),
        ("file", "../escape.lua"),
        ("id", 1),
        ("id", DEMO_ID),
        ("provides", []),
        ("dependencies", []),
        ("version", "1.0"),
        ("file", "bundle.lua"),
    ]
    for attr, value in fixes:
        with pytest.raises(LoaderError) as info:
            validate(m)
        seen.append(type(info.value).__name__ + ": " + str(getattr(info.value, "reason", "")))
        setattr(m, attr, value)
    validate(m)
    assert seen == [
        "ManifestParse: loader field is required but was empty",
        "ManifestParse: name field is required but was empty",
        "ManifestMissingFile: ",
        "ManifestParse: id field is required but was 0 or missing",
        "BundleTampered: ",
        'ManifestParse: provides entry "@1" has an empty contract/bundle name',
        'ManifestParse: dependency "x" declares contract_id 1 but the canonical id for contract "x"'
        f" at major 1 is {guest_contract_id('x', 1)}",
        "ManifestParse: invalid version '1': InvalidFormat",
        "PathEscape: ",
    ]


# ── validate: our additions ──────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("version", "kind"),
    [("1", "InvalidFormat"), ("x.y", "InvalidInt"), ("1.0.0-alpha", "InvalidInt")],
)
def test_bad_version_is_rejected_before_registration(
    tmp_path: Path, version: str, kind: str
) -> None:
    err = validate_failure(make_manifest(tmp_path, version=version))
    assert err.reason == f"invalid version '{version}': {kind}"


@pytest.mark.parametrize("version", ["", "0.1", "1.2.3", "1.2.3.4"])
def test_good_versions(tmp_path: Path, version: str) -> None:
    validate(make_manifest(tmp_path, version=version))


def path_escape(m: ManifestData) -> PathEscape:
    """Validate ``m``, expecting a PathEscape for its ``file``."""
    with pytest.raises(PathEscape) as info:
        validate(m)
    err = info.value
    assert str(err) == (
        f"bundle `{m.name}` artifact `{m.file}` resolves outside the bundle directory"
        " (path traversal or symlink escape)"
    )
    assert (err.bundle, err.path) == (m.name, m.file)
    return err


@pytest.mark.parametrize(
    "file", ["../bundle.lua", "/etc/passwd", "a/../../bundle.lua", "./../x.lua", "sub/../../../x"]
)
def test_entry_file_outside_the_bundle(tmp_path: Path, file: str) -> None:
    path_escape(make_manifest(tmp_path / "demo", file=file))


def test_dotdot_that_comes_back_inside_is_still_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "demo"
    bundle.mkdir()
    path_escape(make_manifest(bundle, file="../demo/bundle.lua"))


@pytest.mark.parametrize("file", ["sub/../bundle.lua", "./bundle.lua", "sub/dir/x.lua", "a..b.lua"])
def test_entry_file_inside_the_bundle(tmp_path: Path, file: str) -> None:
    validate(make_manifest(tmp_path, file=file))


def test_symlink_escaping_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, toml_for())
    (tmp_path / "outside.lua").write_text("return {}\n")
    (bundle / "link.lua").symlink_to(tmp_path / "outside.lua")
    (bundle / "linkdir").symlink_to(tmp_path)
    path_escape(make_manifest(bundle, file="link.lua"))
    path_escape(make_manifest(bundle, file="linkdir/outside.lua"))


def test_symlink_inside_the_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, toml_for(file='"link.lua"'))
    (bundle / "link.lua").symlink_to(bundle / "bundle.lua")
    validate(read_manifest(bundle))


def test_bundle_dir_reached_through_a_symlink(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, toml_for())
    (tmp_path / "alias").symlink_to(bundle)
    validate(read_manifest(tmp_path / "alias"))


def test_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.lua").symlink_to(tmp_path / "b.lua")
    (tmp_path / "b.lua").symlink_to(tmp_path / "a.lua")
    m = make_manifest(tmp_path, file="a.lua")
    # the loop is detected by the manifest check itself (not by pathlib, whose
    # behaviour on loops changed in 3.13), so every version reports it the same way
    err = validate_failure(m)
    assert err.reason.startswith("file `a.lua` cannot be resolved: Symlink loop")


def test_file_with_nul_character(tmp_path: Path) -> None:
    m = read_manifest(make_bundle(tmp_path, toml_for(file=r'"bundle\u0000.lua"')))
    err = validate_failure(m)
    assert err.reason == 'file "bundle\\u0000.lua" contains a NUL character'


# ── function_count pre-check (§8 step 3) ─────────────────────────────────────


def test_function_count_keyed_by_contract_major(tmp_path: Path) -> None:
    m = make_manifest(
        tmp_path,
        version="2.5.0",
        provides=["x.H@1", "x.G@3.1"],
        function_count={"x.H@1": 2, "x.G@3": 1},
    )
    assert check_function_counts(m, STRICT) == []


def test_function_count_keyed_by_bundle_version_major_as_upstream(tmp_path: Path) -> None:
    m = make_manifest(tmp_path, version="2.5.0", provides=["x.H@1"], function_count={"x.H@2": 2})
    assert check_function_counts(m, STRICT) == []


@pytest.mark.parametrize(("version", "key"), [("", "x.H@0"), ("3.0", "x.H@3"), ("1.2.3", "x.H@1")])
def test_unversioned_provides_uses_the_upstream_key(tmp_path: Path, version: str, key: str) -> None:
    m = make_manifest(tmp_path, version=version, provides=["x.H"], function_count={key: 1})
    assert check_function_counts(m, STRICT) == []
    m.function_count = {"x.H@1" if key != "x.H@1" else "x.H@9": 1}
    with pytest.raises(FunctionCountMismatch) as info:
        check_function_counts(m, STRICT)
    assert info.value.expected == key


def test_missing_function_count_strict(tmp_path: Path) -> None:
    m = make_manifest(tmp_path, provides=["x.H@1", "x.G@1"], function_count={"x.H@1": 2})
    with pytest.raises(FunctionCountMismatch) as info:
        check_function_counts(m, STRICT)
    err = info.value
    assert str(err) == (
        'bundle "demo" provides "x.G@1" but manifest.toml has no [function_count] entry for it:'
        ' add "x.G@1" = <number of functions>'
    )
    assert (err.contract, err.expected, err.found) == ("x.G@1", "x.G@1", "")
    assert "expected=0, found=0" not in str(err)


def test_missing_function_count_strict_names_both_keys(tmp_path: Path) -> None:
    m = make_manifest(tmp_path, version="2.5.0", provides=["x.H@1"])
    with pytest.raises(FunctionCountMismatch) as info:
        check_function_counts(m, STRICT)
    assert str(info.value) == (
        'bundle "demo" provides "x.H@1" but manifest.toml has no [function_count] entry for it:'
        ' add "x.H@1" = <number of functions>'
        ' (or "x.H@2", the bundle-version key upstream polyplug 0.1.3 reads)'
    )


def test_missing_function_count_relaxed_warns(tmp_path: Path) -> None:
    m = make_manifest(tmp_path, provides=["x.H@1", "x.G", "x.F@2"], function_count={"x.H@1": 1})
    assert check_function_counts(m, RELAXED) == [
        'bundle "demo" provides "x.G" but has no function_count entry for key "x.G@1"',
        'bundle "demo" provides "x.F@2" but has no function_count entry for key "x.F@2"',
    ]


def test_missing_function_count_yolo_is_silent(tmp_path: Path) -> None:
    m = make_manifest(tmp_path, provides=["x.H@1"])
    assert check_function_counts(m, YOLO) == []


def test_function_count_check_without_provides(tmp_path: Path) -> None:
    assert check_function_counts(make_manifest(tmp_path), STRICT) == []


@pytest.mark.parametrize("mode", [-1, 3])
def test_function_count_check_rejects_unknown_mode(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ValueError, match="compatibility must be 0, 1 or 2"):
        check_function_counts(make_manifest(tmp_path), mode)


def test_manifest_cache_serves_unchanged_files_and_sees_edits(tmp_path: Path) -> None:
    from polyplug.manifest import ManifestCache

    bundle = make_bundle(tmp_path, toml_for())
    cache = ManifestCache()
    first = cache.read(bundle)
    assert cache.read(bundle) is first  # unchanged: served from the cache
    text = (bundle / "manifest.toml").read_text()
    (bundle / "manifest.toml").write_text(text.replace('version = "1.0.0"', 'version = "2.0.0"'))
    second = cache.read(bundle)
    assert second is not first and second.manifest().version == "2.0.0"  # an edit is seen
    (bundle / "manifest.toml").write_text(text + "version = \n")
    with pytest.raises(ManifestParse):
        cache.read(bundle)  # a broken edit is read, not served from the cache


INIT_LUA = ('function polyplug_init() return { ["demo.c"] = { factory = function() return {} end,'
            " functions = {} } }, { code = 0 } end\n")


def test_loaded_manifests_are_copies_of_the_cached_one(tmp_path: Path) -> None:
    import polyplug

    bundle = make_bundle(tmp_path, toml_for())
    (bundle / "bundle.lua").write_text(INIT_LUA)
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        first = rt.load_bundle(bundle)
        first.provides.append("mutated")  # a caller's change must not reach the cache
        rt.unload_bundle(first.id)
        assert rt.load_bundle(bundle).provides == []


def test_document_backed_manifests_behave_like_manifest_data(tmp_path: Path) -> None:
    """load_bundle returns a ManifestData that reads its fields from the C document when
    first used; nothing about it may differ from one read_manifest builds."""
    import copy
    import dataclasses
    import pickle

    import polyplug
    from polyplug.manifest import ManifestCache

    text = toml_for(provides='["demo.c@1"]') + '[function_count]\n"demo.c@1" = 0\n' + \
        '[contracts."demo.c@1".functions]\nf = { id = 0, args = ["u32"], returns = "u32" }\n'
    bundle = make_bundle(tmp_path, text)
    (bundle / "bundle.lua").write_text(INIT_LUA)
    eager = read_manifest(bundle)
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        m = rt.load_bundle(bundle)
        assert isinstance(m, ManifestData) and type(eager) is ManifestData
        assert m == eager and eager == m and not (m != eager)
        assert repr(m) == repr(eager)
        assert rt.manifest(m.id) is m
        assert rt.contract("demo.c", 1).f.signature == eager.signatures["demo.c@1"]["f"]
    entry = ManifestCache().read(bundle)
    fresh = entry.manifest()
    fresh.name = "set-before-read"  # a field set first is kept when the rest arrive
    assert (fresh.name, fresh.version, fresh.provides) == ("set-before-read", "1.0.0",
                                                           ["demo.c@1"])
    a, b = entry.manifest(), entry.manifest()
    a.provides.append("x")  # two views of one document share no containers
    assert b.provides == ["demo.c@1"] and a.copy().provides == ["demo.c@1", "x"]
    unread = entry.manifest().copy()
    assert unread == eager and copy.deepcopy(entry.manifest()) == eager
    assert pickle.loads(pickle.dumps(entry.manifest())) == eager
    assert dataclasses.replace(entry.manifest(), version="2.0.0").version == "2.0.0"
    assert dataclasses.asdict(entry.manifest()) == dataclasses.asdict(eager)


def test_document_backed_manifest_filled_from_many_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from polyplug.manifest import ManifestCache

    entry = ManifestCache().read(make_bundle(tmp_path, toml_for(provides='["a@1", "b@2"]')))
    for _ in range(50):
        m = entry.manifest()
        with ThreadPoolExecutor(4) as pool:
            seen = list(pool.map(lambda _: (m.name, tuple(m.provides), m.version), range(8)))
        assert set(seen) == {("demo", ("a@1", "b@2"), "1.0.0")}


# ── the C reader and the Python call layer agree on signature types ──────────


def _all_type_names() -> list[str]:
    from polyplug.signature import _C_NAMES, TYPES

    return sorted(set(TYPES) | set(_C_NAMES) | {"u33", "float128", "String", "", "u32 "})


@pytest.mark.parametrize("name", _all_type_names())
def test_signature_type_names_agree_with_the_call_layer(tmp_path: Path, name: str) -> None:
    from polyplug.signature import normalize_type

    text = toml_for() + f'[contracts."demo.c@1".functions]\nf = {{ id = 0, args = ["{name}"] }}\n'
    bundle = make_bundle(tmp_path, text)
    try:
        expected = normalize_type(name)
    except ValueError:
        err = parse_failure(bundle)
        assert f"contracts.\"demo.c@1\".functions.f: unknown type '{name}'" in err.reason
    else:
        assert read_manifest(bundle).signatures["demo.c@1"]["f"].args == (expected,)


# ── the checks that depend on the compatibility mode ─────────────────────────


def load_in_mode(tmp_path: Path, text: str, mode: int) -> tuple[object, list[str]]:
    """Load a bundle with this manifest in ``mode``; (the error or None, Warn records)."""
    import polyplug

    bundle = make_bundle(tmp_path, text, dirname=f"mode{mode}")
    (bundle / "bundle.lua").write_text(INIT_LUA)
    warnings: list[str] = []
    cfg = polyplug.RuntimeConfig(compatibility=polyplug.Compatibility(mode),
                                 log=lambda lvl, scope, msg: warnings.append(msg)
                                 if lvl == polyplug.LogLevel.Warn else None,
                                 log_max_level=polyplug.LogLevel.Warn)
    with polyplug.RuntimeBuilder().config(cfg).loader(polyplug.LuaLoader()).build() as rt:
        try:
            rt.load_bundle(bundle)
        except polyplug.PolyplugError as exc:
            return exc, warnings
    return None, warnings


STRICT_TAIL = "; the Strict compatibility mode refuses it (Relaxed warns, Yolo ignores it)"


@pytest.mark.parametrize(("extra", "finding"), [
    ('provieds = ["demo.c@1"]\n',
     "unknown key `provieds` at line 8, column 1 (did you mean `provides`?)"),
    ("nmae = 1\n", "unknown key `nmae` at line 8, column 1 (did you mean `name`?)"),
    ("homepage = \"https://example.org\"\n", "unknown key `homepage` at line 8, column 1"),
    ('[[dependencies]]\nkind = "contract"\n',
     "unknown key `dependencies` at line 8, column 3 (did you mean `dependency`?)"),
    ('[[dependency]]\nkind = "k"\ncontract = "c"\nmin_version = "1.0"\nbundel = "x"\n',
     "unknown key `dependency[0].bundel` at line 12, column 1"
     " (did you mean `dependency[0].bundle`?)"),
    ('[contracts."demo.c@1"]\nfuntions = {}\n',
     'unknown key `contracts."demo.c@1".funtions` at line 9, column 1'
     ' (did you mean `contracts."demo.c@1".functions`?)'),
    ('[contracts."demo.d@1".functions]\nf = { id = 0 }\n',
     'signature table [contracts."demo.d@1"] is for a contract `provides` does not list'
     ' at line 8, column 12 (did you mean "demo.c@1"?)'),
    ('[contracts."demo.c@2".functions]\n',
     'signature table [contracts."demo.c@2"] is for a contract `provides` does not list'
     ' at line 8, column 12 (did you mean "demo.c@1"?)'),
])
def test_unknown_keys_per_compatibility_mode(tmp_path: Path, extra: str, finding: str) -> None:
    text = toml_for(provides='["demo.c@1"]', function_count='{ "demo.c@1" = 0 }') + extra
    manifest = f"{tmp_path}/mode0/manifest.toml"
    exc, warnings = load_in_mode(tmp_path, text, STRICT)
    assert isinstance(exc, ManifestParse)
    assert str(exc) == f"manifest parse error for `{manifest}`: {finding}{STRICT_TAIL}"
    exc, warnings = load_in_mode(tmp_path, text, RELAXED)
    assert exc is None
    assert warnings == [f"{tmp_path}/mode1/manifest.toml: {finding}; it is ignored"]
    assert load_in_mode(tmp_path, text, YOLO) == (None, [])  # upstream ignores them


def test_keys_scoped_into_a_table_by_mistake_get_a_hint(tmp_path: Path) -> None:
    os_name, arch = current_platform()
    text = (f'name = "demo"\nid = {DEMO_ID}\nloader = "lua"\n[file]\n{os_name}.{arch} = '
            '"bundle.lua"\nversion = "1.0.0"\n')
    exc, _ = load_in_mode(tmp_path, text, STRICT)
    assert "key `file.version` is not a platform entry at line 6, column 1: a key written " \
           "after a [file] header belongs to that table; move it above [file]" in str(exc)
    text = toml_for() + '[function_count]\n"demo.c@1" = 1\nprovides = ["demo.c@1"]\n'
    err = parse_failure(make_bundle(tmp_path, text))
    assert err.reason == (
        f'key `function_count."provides"`: expected {U32}, found an array (at line 8, column'
        " 12); a key written after a [function_count] header belongs to that table: move it"
        " above [function_count]")


def test_known_keys_and_known_platforms_pass_every_mode(tmp_path: Path) -> None:
    text = toml_for(provides='["demo.c@1"]', bundle_dependencies='["core@1.0"]',
                    needs_reinit_on_dep_reload="false") + (
        '[function_count]\n"demo.c@1" = 0\n'
        '[[dependency]]\nkind = "contract"\ncontract = "x"\nmin_version = "1.0"\n'
        'bundle = "core"\nbundle_id = 1\ncontract_id = 0\n'
        '[contracts."demo.c@1".functions]\nf = { id = 0 }\n')
    for mode in (STRICT, RELAXED, YOLO):
        assert load_in_mode(tmp_path, text, mode) == (None, [])


# ── a C host and the signature policy ────────────────────────────────────────


@pytest.mark.parametrize("policy", [1, 2])
def test_c_load_by_path_cannot_verify_signatures(tmp_path: Path, policy: int) -> None:
    from polyplug import ffi, lib

    bundle = make_bundle(tmp_path, toml_for())
    (bundle / "bundle.lua").write_text(INIT_LUA)
    cfg = ffi.new("RuntimeConfig *")
    cfg.signature_policy = policy
    cfg.log_max_level = 0  # quiet: the WarnOnly record would go to stderr
    err = ffi.new("pp_error *")
    rt = lib.pp_runtime_new(cfg, err)
    loader = lib.pp_lua_loader_new(ffi.NULL)
    try:
        assert lib.pp_runtime_add_loader(rt, loader, err) == 0
        raw = str(bundle).encode()
        view = ffi.new("StringView *")
        buf = ffi.from_buffer("uint8_t[]", raw)
        view.ptr, view.len = buf, len(raw)
        status = lib.pp_runtime_load_path(rt, view[0], err)
        if policy == 2:  # Required: refused, typed, and nothing is loaded
            assert ffi.string(lib.pp_status_exception(status)) == b"SignatureVerificationFailed"
            assert b"signature_policy is Required" in ffi.string(err.message)
            assert lib.pp_runtime_bundle_ids(rt, ffi.NULL, 0) == 0
        else:  # WarnOnly: loaded
            assert status == 0 and lib.pp_runtime_bundle_ids(rt, ffi.NULL, 0) == 1
    finally:
        lib.pp_loader_release(loader)
        lib.pp_runtime_free(rt)
