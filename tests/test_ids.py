"""Ids (FNV-1a 64, spec §4) and versions (spec §11.1, §11.3)."""

from __future__ import annotations

import pytest

from polyplug.ids import (
    BundleId,
    GuestContractId,
    HostContractId,
    Version,
    VersionParseError,
    bundle_id,
    fnv1a_64,
    guest_contract_id,
    host_contract_id,
    parse_u32,
)

# ── hashing: golden values ───────────────────────────────────────────────────


def test_fnv1a_64_golden_values() -> None:
    assert fnv1a_64("") == 0xCBF29CE484222325
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64("image.decode@1") == 0xA1BA05DD7DA18569


def test_fnv1a_64_hashes_str_as_utf8() -> None:
    assert fnv1a_64("héllo") == fnv1a_64("héllo".encode())


def test_bundle_id_golden_values() -> None:
    assert bundle_id("my-bundle") == 0xFE6226876E3A35B2
    assert bundle_id("polyplug-core") == 0x6EF4AEE714F5F991
    assert bundle_id("test_plugin_lua") == 5209787328123112756


def test_contract_id_golden_values() -> None:
    assert guest_contract_id("logger", 1) == 0xA1ADF81FD5134C83
    assert host_contract_id("logger", 1) == 0xEE2F1DB90B2B5EFF
    assert guest_contract_id("test.add", 1) == 0x40244DF59FCBECB6


def test_contract_ids_hash_the_prefixed_text() -> None:
    assert guest_contract_id("x.H", 7) == fnv1a_64("guest_contract:x.H@7")
    assert host_contract_id("x.H", 7) == fnv1a_64("host_contract:x.H@7")
    assert guest_contract_id("x.H", 1) != guest_contract_id("x.H", 2)


@pytest.mark.parametrize("major", [-1, 2**32])
def test_contract_major_must_be_u32(major: int) -> None:
    with pytest.raises(ValueError, match="contract major"):
        guest_contract_id("x", major)


@pytest.mark.parametrize("major", [True, 1.0, "1"])
def test_contract_major_must_be_int(major: object) -> None:
    with pytest.raises(TypeError, match="contract major must be an int"):
        host_contract_id("x", major)  # type: ignore[arg-type]


def test_guest_contract_ids_stay_right_and_checked_when_cached() -> None:
    """guest_contract_id remembers recent ids (a lookup by name hashes the same names
    again and again); a remembered id must not let a wrong major through, and past
    the cache's size every answer is still the hash."""
    assert guest_contract_id("cached.x", 1) == fnv1a_64("guest_contract:cached.x@1")
    assert guest_contract_id("cached.x", 1) == fnv1a_64("guest_contract:cached.x@1")
    with pytest.raises(TypeError, match="contract major must be an int"):
        guest_contract_id("cached.x", True)  # type: ignore[arg-type]  # == 1, but a bool

    class Name(str):
        pass

    assert guest_contract_id(Name("cached.x"), 1) == guest_contract_id("cached.x", 1)
    names = [f"n{i}" for i in range(10_000)]
    assert all(guest_contract_id(n, 3) == fnv1a_64(f"guest_contract:{n}@3") for n in names)
    assert all(guest_contract_id(n, 3) == fnv1a_64(f"guest_contract:{n}@3") for n in names)


# ── id newtypes ──────────────────────────────────────────────────────────────


@pytest.mark.parametrize("cls", [BundleId, GuestContractId, HostContractId])
def test_newtype_round_trip(cls: type[BundleId]) -> None:
    raw = 0x40244DF59FCBECB6
    wrapped = cls.from_u64(raw)
    assert type(wrapped) is cls
    assert wrapped.id() == raw
    assert type(wrapped.id()) is int


def test_newtypes_are_usable_as_ints() -> None:
    gid = GuestContractId.from_u64(guest_contract_id("test.add", 1))
    assert isinstance(gid, int)
    assert gid == 0x40244DF59FCBECB6
    assert {0x40244DF59FCBECB6: "found"}[gid] == "found"
    assert hex(gid) == "0x40244df59fcbecb6"
    assert f"{gid:#x}" == "0x40244df59fcbecb6"
    assert repr(gid) == "GuestContractId(0x40244df59fcbecb6)"
    assert repr(BundleId(0)) == "BundleId(0x0000000000000000)"


@pytest.mark.parametrize("value", [-1, 2**64])
def test_newtype_rejects_values_outside_u64(value: int) -> None:
    with pytest.raises(ValueError, match=r"BundleId must be in 0\.\.2\*\*64-1"):
        BundleId.from_u64(value)


def test_newtype_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        HostContractId.from_u64(1.5)  # type: ignore[arg-type]


# ── u32 text ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("42", 42), ("+7", 7), ("007", 7), ("4294967295", 2**32 - 1), ("0" * 30 + "1", 1)],
)
def test_parse_u32_accepts_what_rust_accepts(text: str, value: int) -> None:
    assert parse_u32(text) == value


ARABIC_INDIC_ONE = "\u0661"  # int() takes it; Rust's u32 parser does not


@pytest.mark.parametrize(
    "text", ["", "-1", "4294967296", " 1", "1 ", "1_0", ARABIC_INDIC_ONE, "0x10", "+", "1" * 5000]
)
def test_parse_u32_rejects(text: str) -> None:
    assert parse_u32(text) is None


# ── Version ──────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", Version(1, 2, 3)),
        ("1.2", Version(1, 2, 0)),
        ("1.2.3.4", Version(1, 2, 3)),
        ("1.2.3.x", Version(1, 2, 3)),  # anything after the third component is ignored
        ("0.0.0", Version(0, 0, 0)),
        ("01.002", Version(1, 2, 0)),
        ("+1.2", Version(1, 2, 0)),  # Rust's u32 parser takes a leading "+"
        ("4294967295.0.1", Version(2**32 - 1, 0, 1)),
    ],
)
def test_version_parse(text: str, expected: Version) -> None:
    assert Version.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("1", "InvalidFormat"),
        ("", "InvalidFormat"),
        ("x", "InvalidFormat"),
        ("x.y", "InvalidInt"),
        ("1.0.0-alpha", "InvalidInt"),
        ("1.", "InvalidInt"),
        (".1", "InvalidInt"),
        ("1..2", "InvalidInt"),
        ("1.x", "InvalidInt"),
        ("1.2.x", "InvalidInt"),
        ("-1.0", "InvalidInt"),
        (" 1.0", "InvalidInt"),
        ("1_0.0", "InvalidInt"),
        ("4294967296.0", "InvalidInt"),
        ("1" * 5000 + ".0", "InvalidInt"),
    ],
)
def test_version_parse_errors(text: str, kind: str) -> None:
    with pytest.raises(VersionParseError) as info:
        Version.parse(text)
    assert info.value.kind == kind
    assert info.value.text == text
    assert str(info.value) == f"invalid version '{text}': {kind}"


def test_version_parse_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Version.parse("1")


def test_version_str_and_packed() -> None:
    v = Version.parse("1.3")
    assert str(v) == "1.3.0"
    assert v.packed() == 0x10003
    assert Version(2, 0).packed() == 0x20000


def test_version_compatibility() -> None:
    required = Version(1, 2, 0)
    assert Version(1, 2, 0).is_compatible_with(required)
    assert Version(1, 5, 0).is_compatible_with(required)
    assert Version(1, 2, 9).is_compatible_with(Version(1, 2, 10))  # patch is not compared
    assert not Version(1, 1, 9).is_compatible_with(required)
    assert not Version(2, 2, 0).is_compatible_with(required)
    assert not Version(0, 9, 0).is_compatible_with(required)


def test_version_is_ordered_and_frozen() -> None:
    assert Version(1, 2, 3) < Version(1, 10, 0) < Version(2, 0, 0)
    with pytest.raises(AttributeError):
        Version(1, 2).major = 3  # type: ignore[misc]


@pytest.mark.parametrize("parts", [(-1, 0, 0), (0, 2**32, 0), (1, 2, True), (1.0, 2, 0)])
def test_version_components_must_be_u32(parts: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="version components"):
        Version(*parts)
