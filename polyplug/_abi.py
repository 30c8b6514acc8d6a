"""The ABI's enumerations and codes, read from the compiled header.

Every value here comes from ``polyplug._native.lib``, which cffi built from
``csrc/include/polyplug_abi.h`` and ``polyplug.h``: no number is copied by hand, so the
C core, a Lua guest's ``ffi.cdef`` and Python cannot disagree.  The member *names* are
spelled out so type checkers and readers see them; ``tests/test_abi_layout.py`` checks
that each enum has exactly the members the header declares.

This module imports nothing from the rest of the package except ``_ffi``, so the
callback module, the error tree, the call layer and the runtime can all use it without
importing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

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


class AbiErrorCode(enum.IntEnum):
    """``AbiError.code`` values (upstream's; this host's own codes are the ``CALL_*`` below)."""

    Ok = lib.AbiErrorCode_Ok
    Generic = lib.AbiErrorCode_Generic
    BufferTooSmall = lib.AbiErrorCode_BufferTooSmall
    Panic = lib.AbiErrorCode_Panic
    NotFound = lib.AbiErrorCode_NotFound
    StaleHandle = lib.AbiErrorCode_StaleHandle
    FunctionNotAvailable = lib.AbiErrorCode_FunctionNotAvailable
    DuplicateProvider = lib.AbiErrorCode_DuplicateProvider
    InvalidPointer = lib.AbiErrorCode_InvalidPointer
    ReentrantCall = lib.AbiErrorCode_ReentrantCall
    HostContractNotFound = lib.AbiErrorCode_HostContractNotFound
    HostContractVersionMismatch = lib.AbiErrorCode_HostContractVersionMismatch
    HostContractCallFailed = lib.AbiErrorCode_HostContractCallFailed


#: this host's own ``AbiError`` codes (``PP_ABI_*`` in polyplug.h), beside upstream's
CALL_TIMEOUT: int = lib.PP_ABI_CALL_TIMEOUT
CALL_CANCELLED: int = lib.PP_ABI_CALL_CANCELLED
CALL_OUT_OF_MEMORY: int = lib.PP_ABI_OUT_OF_MEMORY


class LogLevel(enum.IntEnum):
    """Log severities; lower is more severe."""

    Error = lib.LogLevel_Error
    Warn = lib.LogLevel_Warn
    Info = lib.LogLevel_Info
    Debug = lib.LogLevel_Debug
    Trace = lib.LogLevel_Trace


class DispatchType(enum.IntEnum):
    """How an interface is called: native function table or ``vm.call``."""

    Native = lib.DispatchType_Native
    VirtualMachine = lib.DispatchType_VirtualMachine


class Compatibility(enum.IntEnum):
    """How strictly manifests are checked at load."""

    Strict = lib.Compatibility_Strict
    Relaxed = lib.Compatibility_Relaxed
    Yolo = lib.Compatibility_Yolo


class ReloadPhaseType(enum.IntEnum):
    """The phases reported to ``on_reload``."""

    Preparing = lib.ReloadPhaseType_Preparing
    Reloaded = lib.ReloadPhaseType_Reloaded
    Failed = lib.ReloadPhaseType_Failed
    Unloading = lib.ReloadPhaseType_Unloading


class SignaturePolicy(enum.IntEnum):
    """Whether bundles must carry a valid ``bundle.sig``."""

    Off = lib.SignaturePolicy_Off
    WarnOnly = lib.SignaturePolicy_WarnOnly
    Required = lib.SignaturePolicy_Required


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
