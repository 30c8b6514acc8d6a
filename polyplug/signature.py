"""Function signatures: the optional ``[contracts."<name>@<major>".functions]`` table.

Upstream manifests say nothing about argument types, so a host has to know them.  A
bundle may declare them, and then the Pythonic call layer and ``python -m polyplug
call`` can marshal Python values::

    [contracts."example.arith@1".functions]
    add = { id = 0, args = ["u32", "u32"], returns = "u32" }
    hello = { id = 3, args = ["string"], returns = "string" }
    reset = { id = 4 }                       # no arguments, no result

Memory layout (what the guest sees):

* ``args_ptr`` points at a C struct whose fields are the arguments in order, each
  with its natural alignment — e.g. ``{u32, u32}`` is two ``uint32_t``, and
  ``{u8, f64}`` puts the double at offset 8.  A ``string`` argument is a
  ``StringView`` ``{const uint8_t *ptr; size_t len}`` (UTF-8, not NUL-terminated);
  so is a ``bytes`` argument (any bytes, NULs included).
  With no arguments ``args_ptr`` is 0.
* ``out_ptr`` points at one slot of the ``returns`` type; a ``string`` result is a
  ``StringView`` the guest fills, normally with memory from
  ``arena_alloc`` (``pg.alloc_string_arena``).  With no result ``out_ptr`` is 0.
* ``bytes`` has the layout of ``string`` (a ``StringView``) but carries any bytes:
  Python sees ``bytes`` instead of ``str``, and nothing is checked for UTF-8.

Types: ``u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 bool string bytes`` (C names such as
``uint32_t`` and ``double`` are accepted too).  Host contracts provided from Python
(:mod:`polyplug.host`) use the same names and layouts.

The manifest reader (``csrc/pp_manifest.c``) validates the table and hands the Python
driver normalised type names; tests/test_manifest.py checks that it knows exactly the
names :data:`TYPES` and :func:`normalize_type` know.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["TYPES", "VIEW_TYPES", "FunctionSig", "normalize_type", "signature"]

# our name -> (struct format char, C type); `string` is a StringView.
TYPES: dict[str, tuple[str, str]] = {
    "u8": ("B", "uint8_t"), "u16": ("H", "uint16_t"), "u32": ("I", "uint32_t"),
    "u64": ("Q", "uint64_t"), "i8": ("b", "int8_t"), "i16": ("h", "int16_t"),
    "i32": ("i", "int32_t"), "i64": ("q", "int64_t"), "f32": ("f", "float"),
    "f64": ("d", "double"), "bool": ("?", "bool"), "string": ("PN", "StringView"),
    "bytes": ("PN", "StringView"),
}
#: the types laid out as a ``StringView``
VIEW_TYPES = frozenset({"string", "bytes"})
_C_NAMES = {c: name for name, (_, c) in TYPES.items() if name != "bytes"}
_C_NAMES.update({"float32": "f32", "float64": "f64", "str": "string", "_Bool": "bool"})


def normalize_type(name: str) -> str:
    """Our type name for ``name`` (``"uint32_t"`` -> ``"u32"``); ValueError if unknown."""
    if name in TYPES:
        return name
    if name in _C_NAMES:
        return _C_NAMES[name]
    known = ", ".join(TYPES)
    raise ValueError(f"unknown type {name!r} (known: {known})")


@dataclass(frozen=True)
class FunctionSig:
    """One guest function: its id, argument types and result type (None = nothing)."""

    name: str
    id: int
    args: tuple[str, ...] = ()
    returns: Optional[str] = None

    @property
    def args_format(self) -> str:
        """``struct`` format of the argument block, padded like the C struct."""
        if not self.args:
            return ""
        body = "@" + "".join(TYPES[t][0] for t in self.args)
        align = max(struct.calcsize("@" + TYPES[t][0][0]) for t in self.args)
        if VIEW_TYPES.intersection(self.args):
            align = max(align, struct.calcsize("@P"))
        size = struct.calcsize(body)
        pad = (-size) % align
        return body + ("x" * pad)

    def layout(self) -> tuple[tuple[int, ...], int]:
        """(offset of each argument, size) of the argument block, as a C compiler lays
        out the struct: each field at its natural alignment, the end padded."""
        offsets = []
        prefix = "@"
        for t in self.args:
            fmt = TYPES[t][0]
            offsets.append(struct.calcsize(prefix + fmt) - struct.calcsize("@" + fmt))
            prefix += fmt
        return tuple(offsets), struct.calcsize(self.args_format) if self.args else 0

    @property
    def returns_format(self) -> str:
        """``struct`` format of the result slot ("" when there is no result)."""
        return "@" + TYPES[self.returns][0] if self.returns else ""

    def describe(self) -> str:
        """``add(u32, u32) -> u32``."""
        ret = f" -> {self.returns}" if self.returns else ""
        return f"{self.name}({', '.join(self.args)}){ret}"


def signature(name: str, fn_id: int, args: Sequence[str] = (), returns: Optional[str] = None) -> FunctionSig:
    """Build a FunctionSig by hand, accepting our or C type names."""
    return FunctionSig(name, fn_id, tuple(normalize_type(a) for a in args),
                       normalize_type(returns) if returns is not None else None)
