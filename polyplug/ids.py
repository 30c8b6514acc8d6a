"""Identifiers and versions: FNV-1a 64 ids for bundles and contracts, and ``Version``.

Every id the runtime uses is an FNV-1a 64 hash (spec §4):

    bundle_id(name)                 fnv1a_64(name)
    guest_contract_id(name, major)  fnv1a_64("guest_contract:<name>@<major>")
    host_contract_id(name, major)   fnv1a_64("host_contract:<name>@<major>")

Only the contract's *major* version enters its id, and ``name`` is the bare contract
name (``"pipeline.Decoder"``, never ``"pipeline.Decoder@1"``).  The :class:`BundleId`,
:class:`GuestContractId` and :class:`HostContractId` newtypes mirror upstream's
``repr(transparent)`` u64 wrappers; they subclass :class:`int`, so they go anywhere
an integer does.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Iterable, Literal, SupportsIndex, TypeVar

__all__ = [
    "U32_MAX",
    "U64_MAX",
    "BundleId",
    "GuestContractId",
    "HostContractId",
    "Version",
    "VersionParseError",
    "bundle_id",
    "fnv1a_64",
    "guest_contract_id",
    "host_contract_id",
    "parse_u32",
]

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

_FNV_OFFSET_BASIS = 0xCBF2_9CE4_8422_2325
_FNV_PRIME = 0x0000_0100_0000_01B3


# ── hashing ──────────────────────────────────────────────────────────────────


def fnv1a_64(data: bytes | str) -> int:
    """Return the 64-bit FNV-1a hash of ``data`` (a ``str`` is hashed as UTF-8)."""
    return _fnv1a_64_from(_FNV_OFFSET_BASIS, data)


def _fnv1a_64_from(h: int, data: bytes | str) -> int:
    """FNV-1a 64 of what hashed to ``h`` followed by ``data``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & U64_MAX
    return h


def _check_major(major: int) -> int:
    """Return ``major`` if it is a u32 int (what upstream hashes); raise otherwise."""
    if isinstance(major, bool) or not isinstance(major, int):
        raise TypeError(f"contract major must be an int, not {type(major).__name__}")
    if not 0 <= major <= U32_MAX:
        raise ValueError(f"contract major must be in 0..{U32_MAX}, got {major}")
    return major


def bundle_id(name: str) -> int:
    """Return the id of the bundle called ``name``: FNV-1a 64 of its UTF-8 bytes."""
    return fnv1a_64(name)


# Recently computed guest contract ids: a lookup by name (``rt.contract(name, major)``)
# hashes the same few names over and over, and FNV-1a in Python costs about 2 µs.
_GUEST_IDS: dict[tuple[str, int], int] = {}
_GUEST_IDS_MAX = 4096


def guest_contract_id(name: str, major: int) -> int:
    """Return the id of guest contract ``name`` at ``major``.

    ``name`` is the bare contract name; the hashed text is
    ``"guest_contract:<name>@<major>"``.
    """
    exact = type(name) is str and type(major) is int  # never a subclass or a bool
    if exact:
        cached = _GUEST_IDS.get((name, major))
        if cached is not None:
            return cached
    h = fnv1a_64(f"guest_contract:{name}@{_check_major(major)}")
    if exact:
        if len(_GUEST_IDS) >= _GUEST_IDS_MAX:
            _GUEST_IDS.clear()
        _GUEST_IDS[(name, major)] = h
    return h


def _guest_contract_ids(name: str, majors: Iterable[int]) -> list[int]:
    """``[guest_contract_id(name, m) for m in majors]``, hashing the common prefix once."""
    prefix = fnv1a_64(f"guest_contract:{name}@")
    return [_fnv1a_64_from(prefix, str(_check_major(m))) for m in majors]


def host_contract_id(name: str, major: int) -> int:
    """Return the id of host contract ``name`` at ``major``.

    The hashed text is ``"host_contract:<name>@<major>"``.
    """
    return fnv1a_64(f"host_contract:{name}@{_check_major(major)}")


# ── id newtypes ──────────────────────────────────────────────────────────────

_IdT = TypeVar("_IdT", bound="_U64Id")


class _U64Id(int):
    """An ``int`` restricted to the u64 range, tagged with what it identifies."""

    __slots__ = ()

    def __new__(cls: type[_IdT], value: SupportsIndex) -> _IdT:
        v = operator.index(value)
        if not 0 <= v <= U64_MAX:
            raise ValueError(f"{cls.__name__} must be in 0..2**64-1, got {v}")
        return super().__new__(cls, v)

    @classmethod
    def from_u64(cls: type[_IdT], value: SupportsIndex) -> _IdT:
        """Wrap a raw u64 (as read from a manifest or the C ABI)."""
        return cls(value)

    def id(self) -> int:
        """Return the raw u64 as a plain ``int``."""
        return int(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self):#018x})"


class BundleId(_U64Id):
    """Id of a bundle: ``bundle_id(name)``.  0 stands for "the host"."""

    __slots__ = ()


class GuestContractId(_U64Id):
    """Id of a guest contract: ``guest_contract_id(name, major)``."""

    __slots__ = ()


class HostContractId(_U64Id):
    """Id of a host contract: ``host_contract_id(name, major)``."""

    __slots__ = ()


# ── versions ─────────────────────────────────────────────────────────────────

VersionParseErrorKind = Literal["InvalidFormat", "InvalidInt"]

# What Rust's ``u32::from_str`` accepts: ASCII digits with an optional leading "+".
_U32_TEXT = re.compile(r"\+?[0-9]+")


def parse_u32(text: str) -> int | None:
    """Parse ``text`` as Rust's ``u32::from_str`` would; None if it is not a u32.

    Stricter than :func:`int`: no whitespace, no ``_`` separators, no non-ASCII digits.
    """
    if _U32_TEXT.fullmatch(text) is None:
        return None
    digits = text.lstrip("+").lstrip("0") or "0"
    if len(digits) > len(str(U32_MAX)):  # also keeps int() clear of its digit limit
        return None
    value = int(digits)
    return value if value <= U32_MAX else None


class VersionParseError(ValueError):
    """A version string does not parse (spec §11.1).

    ``kind`` is upstream's ``ParseVersionError`` variant name: ``"InvalidFormat"``
    (fewer than two ``.``-separated components) or ``"InvalidInt"`` (a component is
    not an unsigned 32-bit integer).  Upstream error messages embed that name.
    """

    def __init__(self, kind: VersionParseErrorKind, text: str) -> None:
        super().__init__(f"invalid version '{text}': {kind}")
        self.kind: VersionParseErrorKind = kind
        self.text = text


def _component(component: str, text: str) -> int:
    """Parse one component of version ``text`` as a u32, or raise ``InvalidInt``."""
    value = parse_u32(component)
    if value is None:
        raise VersionParseError("InvalidInt", text)
    return value


@dataclass(frozen=True, order=True)
class Version:
    """A ``major.minor.patch`` version; each component is a u32."""

    major: int
    minor: int
    patch: int = 0

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= U32_MAX:
                raise ValueError(f"version components must be ints in 0..{U32_MAX}, got {part!r}")

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text`` the way upstream's ``Version::from_str`` does.

        Split on ``.``: the first two components are required, the third defaults to
        0, anything after the third is ignored (``"1.2.3.4"`` is 1.2.3).  ``"1"``
        raises ``InvalidFormat``; ``"x.y"`` and ``"1.0.0-alpha"`` raise ``InvalidInt``.
        """
        parts = text.split(".")
        if len(parts) < 2:
            raise VersionParseError("InvalidFormat", text)
        major = _component(parts[0], text)
        minor = _component(parts[1], text)
        patch = _component(parts[2], text) if len(parts) > 2 else 0
        return cls(major, minor, patch)

    def is_compatible_with(self, required: Version) -> bool:
        """True if this version satisfies ``required``: same major, minor not lower."""
        return self.major == required.major and self.minor >= required.minor

    def packed(self) -> int:
        """Return ``(major << 16) | minor``, the host-contract version request (§11.3)."""
        return (self.major << 16) | self.minor

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"
