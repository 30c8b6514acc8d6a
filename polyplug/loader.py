"""Loaders: the Python faces of the LuaJIT loader and the native (C shared-library) loader."""

from __future__ import annotations

from dataclasses import dataclass
import os
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from polyplug._errors import InvalidArgument
from polyplug._ffi import check, ffi, lib, new_error
from polyplug.manifest import ManifestData, manifest_doc

if TYPE_CHECKING:
    from polyplug.runtime import BundleSource, Runtime

__all__ = ["CancelToken", "LuaConfig", "LuaLoader", "NativeConfig", "NativeLoader"]

U64_MAX = 2**64 - 1


def timeout_ns(seconds: float, what: str) -> int:
    """A positive time limit in seconds as C nanoseconds.

    One rule for every limit: a value too large to represent (``inf``, ``1e30``, or
    anything past ~584 years) saturates to "never", so it is no limit in effect rather
    than an overflow.  Zero, negative and NaN values are an :class:`InvalidArgument`
    naming ``what``.
    """
    if not seconds > 0:  # also rejects NaN
        raise InvalidArgument(f"{what} must be a positive number of seconds, not {seconds!r}")
    if seconds * 1e9 >= U64_MAX:
        return U64_MAX
    return max(1, int(seconds * 1e9))


def memory_bytes(limit: int, what: str) -> int:
    """A positive byte limit for C: beyond 2**64 - 1 it saturates, like timeouts."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise InvalidArgument(f"{what} must be a positive number of bytes, not {limit!r}")
    return min(limit, U64_MAX)


class CancelToken:
    """Stops the calls that carry it: ``token.cancel()`` from any thread.

    Pass it to ``rt.contract(..., cancel=token)``; a running guest call is stopped
    within about a millisecond (the watchdog's tick) with :class:`Cancelled`.  Calls
    started while the token is set fail before running any guest code; :meth:`reset`
    re-arms it.
    """

    def __init__(self) -> None:
        ptr = lib.pp_cancel_new()
        if ptr == ffi.NULL:
            raise MemoryError("could not allocate a cancel token")
        self._ptr: Any = ffi.gc(ptr, lib.pp_cancel_free)

    def cancel(self) -> None:
        """Request cancellation of every call carrying this token."""
        lib.pp_cancel_request(self._ptr)

    def reset(self) -> None:
        """Clear the request so the token can be used again."""
        lib.pp_cancel_clear(self._ptr)

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` ran (until :meth:`reset`)."""
        return bool(lib.pp_cancel_requested(self._ptr))


@dataclass(frozen=True)
class LuaConfig:
    """Settings of a :class:`LuaLoader`; the defaults match upstream (no limits).

    ``call_timeout``: seconds a single guest call may run before it is stopped with
    :class:`CallTimeout` (None = no limit; a call can also set its own).
    ``memory_limit``: bytes each bundle's VM may allocate beyond its start-up
    footprint; past it a call fails with :class:`GuestOutOfMemory` (None = no limit).
    Values too large to represent (``float("inf")``, ``2**64``) saturate to "no limit".
    ``sandbox``: ``"restricted"`` loads bundles without ``io``, ``debug``, most of
    ``os``, ``package.loadlib`` and C modules.  The FFI stays, so this is a seatbelt
    against accidents, not a security boundary.
    """

    call_timeout: Optional[float] = None
    memory_limit: Optional[int] = None
    sandbox: Literal["none", "restricted"] = "none"

    def _to_c(self) -> Any:
        cfg = ffi.new("pp_lua_config *")
        if self.call_timeout is not None:
            cfg.call_timeout_ns = timeout_ns(self.call_timeout, "LuaConfig.call_timeout")
        if self.memory_limit is not None:
            cfg.memory_limit = memory_bytes(self.memory_limit, "LuaConfig.memory_limit")
        sandboxes = {"none": lib.PP_LUA_SANDBOX_NONE, "restricted": lib.PP_LUA_SANDBOX_RESTRICTED}
        if self.sandbox not in sandboxes:
            raise InvalidArgument(f"LuaConfig.sandbox must be one of {sorted(sandboxes)}")
        cfg.sandbox = sandboxes[self.sandbox]
        return cfg


class _CLoader:
    """What every loader backed by a C ``pp_loader`` shares (``self._loader``)."""

    _loader: Any

    def _c_loader(self) -> Any:
        return self._loader

    def loader_name(self) -> str:
        """What a manifest's ``loader`` key must say to be loaded by this loader."""
        return ffi.string(lib.pp_loader_name(self._loader)).decode()

    def supports_hot_reload(self) -> bool:
        """True when bundles of this loader can be reloaded."""
        return bool(lib.pp_loader_supports_hot_reload(self._loader))

    def load(self, manifest: ManifestData, source: BundleSource, runtime: Runtime) -> None:
        """Load the bundle into ``runtime`` directly, skipping manifest validation and
        bookkeeping the way upstream's ``BundleLoader::load`` does.

        Raises :class:`InitFailed` (and friends) on failure; nothing stays registered.
        """
        doc = manifest_doc(manifest)  # type-checked, not validated
        keep: list[Any] = []
        src = source._to_c(keep)
        err = new_error()
        lib.pp_loader_load(self._loader, runtime._ptr(), lib.pp_manifest_doc_view(doc), src, err)
        check(err)


class LuaLoader(_CLoader):
    """Loads Lua bundles (``loader = "lua"``), each into its own LuaJIT VM.

    Register it with ``RuntimeBuilder().loader(LuaLoader())``.  It can also load a
    bundle into a runtime directly with :meth:`load`, which skips manifest
    validation and bookkeeping the way upstream's ``BundleLoader::load`` does.
    """

    def __init__(self, config: LuaConfig = LuaConfig()) -> None:
        self.config = config
        ptr = lib.pp_lua_loader_new(config._to_c())
        if ptr == ffi.NULL:
            raise MemoryError("could not create the Lua loader")
        self._loader = ffi.gc(ptr, lib.pp_loader_release)


@dataclass(frozen=True)
class NativeConfig:
    """Settings of a :class:`NativeLoader`.

    ``copy_dir``: where each load copies the bundle's shared library before opening it
    (a private subdirectory per load, removed when the runtime is freed); None means
    ``$TMPDIR`` or ``/tmp``.  It must allow executable mappings (not ``noexec``).
    """

    copy_dir: Optional[Union[str, os.PathLike[str]]] = None


class NativeLoader(_CLoader):
    """Loads C shared-library bundles (``loader = "native"``), upstream's native protocol.

    The bundle's ``file`` is a shared library exporting ``polyplug_abi_version()``
    (returning 1) and ``polyplug_init(host, ctx)``, which registers contracts with
    native dispatch.  Register it with ``RuntimeBuilder().loader(NativeLoader())``,
    beside a :class:`LuaLoader`: ``load_bundle`` picks the loader the manifest names.

    Each load and reload opens its own copy of the library, so a reload runs the new
    build; a library stays mapped until its runtime is freed (cached interface
    pointers call straight into it).  Native code cannot be stopped: call timeouts,
    cancellation of a running call and memory limits do not apply to it.  Only
    ``BundleSource.Path`` sources can be loaded (also by :meth:`load`).
    """

    def __init__(self, config: NativeConfig = NativeConfig()) -> None:
        self.config = config
        cfg = ffi.new("pp_native_config *")
        keep = None
        if config.copy_dir is not None:
            keep = ffi.new("char[]", os.fsencode(config.copy_dir))
            cfg.copy_dir = keep
        ptr = lib.pp_native_loader_new(cfg)
        if ptr == ffi.NULL:
            raise MemoryError("could not create the native loader")
        del keep  # the loader copied the path
        self._loader = ffi.gc(ptr, lib.pp_loader_release)
