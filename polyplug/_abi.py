"""The ABI's enumerations and codes, read from the compiled header.

Every enum here is built from the ``<Enum>_<Member>`` constants of
``polyplug._native.lib``, which cffi built from ``csrc/include/polyplug_abi.h`` and
``polyplug.h``: no name or number is copied by hand, so the C core, a Lua guest's
``ffi.cdef`` and Python cannot disagree.  For type checkers the member names are listed
once under ``TYPE_CHECKING``; ``tests/test_abi_layout.py`` checks that list against the
header.

This module imports nothing from the rest of the package except ``_ffi``, so the
callback module, the error tree, the call layer and the runtime can all use it without
importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from polyplug._ffi import ffi, lib, view_text

__all__ = [
    "AbiErrorCode",
    "Compatibility",
    "DispatchType",
    "GuestContractHandle",
    "LogLevel",
    "ReloadPhase",
    "ReloadPhaseType",
    "SignaturePolicy",
]


def _header_enum(name: str, doc: str) -> Any:
    """The IntEnum of the header's ``<name>_<Member>`` constants, in value order."""
    prefix = name + "_"
    members = sorted(((attr[len(prefix):], getattr(lib, attr)) for attr in dir(lib)
                      if attr.startswith(prefix)), key=lambda item: (item[1], item[0]))
    cls = enum.IntEnum(name, members, module=__name__)  # type: ignore[misc]
    cls.__doc__ = doc
    return cls


if TYPE_CHECKING:  # the members as type checkers see them; at run time: the header's
    AbiErrorCode = enum.IntEnum("AbiErrorCode", "Ok Generic BufferTooSmall Panic NotFound StaleHandle FunctionNotAvailable DuplicateProvider InvalidPointer ReentrantCall HostContractNotFound HostContractVersionMismatch HostContractCallFailed")  # noqa: E501
    LogLevel = enum.IntEnum("LogLevel", "Error Warn Info Debug Trace")
    DispatchType = enum.IntEnum("DispatchType", "Native VirtualMachine")
    Compatibility = enum.IntEnum("Compatibility", "Strict Relaxed Yolo")
    ReloadPhaseType = enum.IntEnum("ReloadPhaseType", "Preparing Reloaded Failed Unloading")
    SignaturePolicy = enum.IntEnum("SignaturePolicy", "Off WarnOnly Required")
else:
    AbiErrorCode = _header_enum("AbiErrorCode", "``AbiError.code`` values (upstream's; this "
                                "host's own are the ``CALL_*`` constants).")
    LogLevel = _header_enum("LogLevel", "Log severities; lower is more severe.")
    DispatchType = _header_enum("DispatchType", "How an interface is called: native function "
                                "table or ``vm.call``.")
    Compatibility = _header_enum("Compatibility", "How strictly manifests are checked at load.")
    ReloadPhaseType = _header_enum("ReloadPhaseType", "The phases reported to ``on_reload``.")
    SignaturePolicy = _header_enum("SignaturePolicy", "Whether bundles must carry a valid "
                                   "``bundle.sig``.")

#: this host's own ``AbiError`` codes (``PP_ABI_*`` in polyplug.h), beside upstream's
CALL_TIMEOUT: int = lib.PP_ABI_CALL_TIMEOUT
CALL_CANCELLED: int = lib.PP_ABI_CALL_CANCELLED
CALL_OUT_OF_MEMORY: int = lib.PP_ABI_OUT_OF_MEMORY


class GuestContractHandle(NamedTuple):
    """A registry handle: slot index and the slot's generation when it was minted."""

    index: int  # type: ignore[assignment]  # upstream's field name; shadows tuple.index
    generation: int

    @classmethod
    def null(cls) -> GuestContractHandle:
        """The null ("not found") handle ``{0xFFFFFFFF, 0}``."""
        return cls(0xFFFFFFFF, 0)

    def is_null(self) -> bool:
        """True for the null handle."""
        return self.index == 0xFFFFFFFF


@dataclass(frozen=True)
class ReloadPhase:
    """One reload notification (``on_reload`` receives these)."""

    type: ReloadPhaseType
    bundle_id: int
    bundle_name: str
    reason: Optional[str] = None

    @classmethod
    def _from_c(cls, phase: Any) -> ReloadPhase:
        reason = view_text(phase.reason) if phase.reason.ptr != ffi.NULL else None
        return cls(ReloadPhaseType(phase.phase_type), int(phase.bundle_id),
                   view_text(phase.bundle_name), reason)
