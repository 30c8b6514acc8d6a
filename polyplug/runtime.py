"""The runtime API: configuration, the builder, the runtime and its registry.

It mirrors upstream's Rust host API (``RuntimeBuilder``, ``Runtime``, ``registry()``)
so code and tests written against it read the same in Python::

    from polyplug import RuntimeBuilder, LuaLoader, guest_contract_id

    with RuntimeBuilder().loader(LuaLoader()).build() as rt:
        rt.load_bundle("examples/arith")
        handle = rt.find_guest_contract(guest_contract_id("example.arith", 1), 1)
        iface = rt.resolve_guest_contract(handle)   # GuestContractInterface* (cdata)

Errors are raised as the typed exceptions of :mod:`polyplug._errors`.
"""

from __future__ import annotations

import enum
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

from polyplug import _errors, signing
from polyplug._callbacks import _CallbackState
from polyplug._ffi import check, ffi, lib, new_error, text_view, view_text
from polyplug.call import Contract
from polyplug.ids import guest_contract_id
from polyplug.manifest import CachedManifest, ManifestCache, ManifestData, manifest_doc
from polyplug.signature import FunctionSig

__all__ = [
    "AbiErrorCode",
    "BundleSource",
    "Compatibility",
    "DispatchType",
    "GuestContractHandle",
    "LogLevel",
    "ReloadPhase",
    "ReloadPhaseType",
    "Registry",
    "Runtime",
    "RuntimeBuilder",
    "RuntimeConfig",
    "SignaturePolicy",
]

PathLike = Union[str, "os.PathLike[str]"]


# ── enums (values are the ABI's) ─────────────────────────────────────────────


class AbiErrorCode(enum.IntEnum):
    """``AbiError.code`` values."""

    Ok = 0
    Generic = 1
    BufferTooSmall = 2
    Panic = 3
    NotFound = 4
    StaleHandle = 5
    FunctionNotAvailable = 6
    DuplicateProvider = 7
    InvalidPointer = 8
    ReentrantCall = 9
    HostContractNotFound = 100
    HostContractVersionMismatch = 101
    HostContractCallFailed = 102


class LogLevel(enum.IntEnum):
    """Log severities; lower is more severe."""

    Error = 1
    Warn = 2
    Info = 3
    Debug = 4
    Trace = 5


class DispatchType(enum.IntEnum):
    """How an interface is called: native function table or ``vm.call``."""

    Native = 0
    VirtualMachine = 1


class Compatibility(enum.IntEnum):
    """How strictly manifests are checked at load."""

    Strict = 0
    Relaxed = 1
    Yolo = 2


class ReloadPhaseType(enum.IntEnum):
    """The phases reported to ``on_reload``."""

    Preparing = 0
    Reloaded = 1
    Failed = 2
    Unloading = 3


class SignaturePolicy(enum.IntEnum):
    """Whether bundles must carry a valid ``bundle.sig``."""

    Off = 0
    WarnOnly = 1
    Required = 2


# ── small value types ────────────────────────────────────────────────────────


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


@dataclass(frozen=True)
class BundleSource:
    """Where a bundle's entry code comes from: ``Path(dir)``, ``Code(text)`` or ``Bytes(data)``.

    In-memory sources have no bundle directory, so they cannot ``require`` sibling
    files (the embedded SDK modules still resolve) and cannot be hot-reloaded.
    """

    kind: str
    data: Union[str, bytes]

    @classmethod
    def Path(cls, path: PathLike) -> BundleSource:  # noqa: N802 - mirrors upstream
        """Load ``manifest.file`` from the bundle directory ``path``."""
        return cls("path", os.fspath(path))

    @classmethod
    def Code(cls, text: str) -> BundleSource:  # noqa: N802 - mirrors upstream
        """Load the given Lua source text."""
        if not isinstance(text, str):
            raise TypeError("BundleSource.Code takes a str; use BundleSource.Bytes for bytes")
        return cls("code", text)

    @classmethod
    def Bytes(cls, data: bytes) -> BundleSource:  # noqa: N802 - mirrors upstream
        """Load raw bytes, which must be UTF-8 Lua source."""
        return cls("bytes", bytes(data))

    def _to_c(self, keep: list[Any]) -> Any:
        src = ffi.new("pp_source *")
        keep.append(src)
        kinds = {"path": lib.PP_SOURCE_PATH, "code": lib.PP_SOURCE_CODE,
                 "bytes": lib.PP_SOURCE_BYTES}
        src.kind = kinds[self.kind]
        raw = self.data.encode("utf-8") if isinstance(self.data, str) else self.data
        src.data = text_view(raw, keep)
        return src


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ── configuration and builder ────────────────────────────────────────────────

LogCallback = Callable[[LogLevel, str, str], None]
ReloadCallback = Callable[[ReloadPhase], None]


@dataclass
class RuntimeConfig:
    """Runtime settings (upstream ``RuntimeConfig``, with Python callables for callbacks).

    ``log(level, scope, message)`` receives every record at or above ``log_max_level``
    (from the runtime, the loaders and guests calling ``HostApi.log``); without it,
    Warn and Error records go to stderr.  ``on_reload(phase)`` sees Preparing,
    Reloaded, Failed and Unloading phases.  Callbacks may run on any thread and must
    not call back into the runtime.
    """

    compatibility: Compatibility = Compatibility.Strict
    hot_reload_enabled: bool = False
    on_reload: Optional[ReloadCallback] = None
    log: Optional[LogCallback] = None
    log_max_level: LogLevel = LogLevel.Warn
    signature_policy: SignaturePolicy = SignaturePolicy.Off
    trusted_keys: Sequence[bytes] = field(default_factory=tuple)


class RuntimeBuilder:
    """Builds a :class:`Runtime`; each method returns the builder for chaining."""

    def __init__(self) -> None:
        self._config = RuntimeConfig()
        self._loaders: list[Any] = []

    def config(self, config: RuntimeConfig) -> RuntimeBuilder:
        """Replace the whole configuration (including any logger set earlier)."""
        self._config = config
        return self

    def loader(self, loader: Any) -> RuntimeBuilder:
        """Register a loader (e.g. ``LuaLoader()``) under its name."""
        self._loaders.append(loader)
        return self

    def logger(self, fn: LogCallback) -> RuntimeBuilder:
        """Deliver every log record, down to Trace, to ``fn(level, scope, message)``."""
        self._config.log = fn
        self._config.log_max_level = LogLevel.Trace
        return self

    def on_reload(self, fn: ReloadCallback) -> RuntimeBuilder:
        """Call ``fn(phase)`` for every reload/unload phase."""
        self._config.on_reload = fn
        return self

    def compatibility(self, mode: Compatibility) -> RuntimeBuilder:
        """Set how strictly manifests are checked."""
        self._config.compatibility = Compatibility(mode)
        return self

    def hot_reload(self, enabled: bool = True) -> RuntimeBuilder:
        """Allow ``reload_bundle``."""
        self._config.hot_reload_enabled = enabled
        return self

    def build(self) -> Runtime:
        """Create the runtime and register the loaders."""
        return Runtime(self._config, self._loaders)


# ── the runtime ──────────────────────────────────────────────────────────────


class Registry:
    """The runtime's contract registry (``runtime.registry()``)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def find(self, contract_id: int, min_major: int = 0) -> GuestContractHandle:
        """The first live provider of ``contract_id`` whose major is ``>= min_major``.

        Raises :class:`PluginNotFound` when there is none.
        """
        out = ffi.new("GuestContractHandle *")
        err = new_error()
        lib.pp_registry_find(self._runtime._ptr(), int(contract_id), min_major, out, err)
        check(err)
        return GuestContractHandle(out.index, out.generation)

    def find_by_bundle(self, bundle_id: int, contract_id: int,
                       min_major: int = 0) -> GuestContractHandle:
        """Like :meth:`find`, restricted to contracts registered by ``bundle_id``."""
        out = ffi.new("GuestContractHandle *")
        err = new_error()
        lib.pp_registry_find_by_bundle(self._runtime._ptr(), int(bundle_id), int(contract_id),
                                       min_major, out, err)
        check(err)
        return GuestContractHandle(out.index, out.generation)

    def find_all(self, contract_id: int, min_major: int = 0) -> list[GuestContractHandle]:
        """Every live provider, in registration order (copied; nothing dangles)."""
        host = self._runtime.host_api
        arr = host.find_all_guest_contracts(host, int(contract_id), min_major)
        try:
            return [GuestContractHandle(arr.items[i].index, arr.items[i].generation)
                    for i in range(arr.len)]
        finally:
            if arr.items != ffi.NULL:
                host.free(host, ffi.cast("uint8_t *", arr.items),
                          arr.len * ffi.sizeof("GuestContractHandle"), arr.align)

    def resolve_guest_contract(self, handle: GuestContractHandle) -> Any:
        """The ``GuestContractInterface *`` behind a handle.

        Raises :class:`InvalidHandle` or :class:`StaleHandle`.  The pointer stays
        valid while the bundle is loaded; after a reload it serves the new code.
        """
        h = ffi.new("GuestContractHandle *", tuple(handle))
        out = ffi.new("const GuestContractInterface **")
        err = new_error()
        lib.pp_registry_resolve(self._runtime._ptr(), h[0], out, err)
        check(err)
        return out[0]

    def info(self, handle: GuestContractHandle) -> dict[str, Any]:
        """Facts about a live handle: owner ``bundle_id``, ``contract`` and ``plugin`` names."""
        h = ffi.new("GuestContractHandle *", tuple(handle))
        out = ffi.new("pp_slot_info *")
        err = new_error()
        lib.pp_registry_handle_info(self._runtime._ptr(), h[0], out, err)
        check(err)
        return {"bundle_id": int(out.bundle_id), "contract_id": int(out.contract_id),
                "contract": ffi.string(out.contract_name).decode(),
                "plugin": ffi.string(out.plugin_name).decode(),
                "version": (out.version.major, out.version.minor, out.version.patch)}

    def invalidate_bundle(self, bundle_id: int) -> int:
        """Retire every contract registered by ``bundle_id``; returns how many."""
        n = ffi.new("size_t *")
        err = new_error()
        lib.pp_registry_invalidate_bundle(self._runtime._ptr(), int(bundle_id), n, err)
        check(err)
        return int(n[0])


class Runtime:
    """A polyplug runtime: registry, loaders and loaded bundles.

    Create it with :class:`RuntimeBuilder`.  Close it with :meth:`close` or a ``with``
    block; closing unloads every bundle and frees every Lua VM.  All methods may be
    called from any thread.
    """

    def __init__(self, config: Optional[RuntimeConfig] = None,
                 loaders: Sequence[Any] = ()) -> None:
        self._config = config or RuntimeConfig()
        cfg = self._config
        self._state = _CallbackState(log=cfg.log, on_reload=cfg.on_reload)
        self._state.runtime = weakref.ref(self)
        self._handle = ffi.new_handle(self._state)
        self._manifests: dict[int, ManifestData] = {}
        self._manifest_cache = ManifestCache()
        c = ffi.new("RuntimeConfig *")
        c.compatibility = Compatibility(cfg.compatibility)
        c.hot_reload_enabled = bool(cfg.hot_reload_enabled)
        c.log_max_level = LogLevel(cfg.log_max_level)
        c.signature_policy = SignaturePolicy(cfg.signature_policy)
        if cfg.log is not None:
            c.log = lib.pp_py_log
            c.log_user_data = self._handle
        if cfg.on_reload is not None:
            c.on_reload = lib.pp_py_on_reload
            c.on_reload_user_data = self._handle
        keys = [bytes(k) for k in cfg.trusted_keys]
        if any(len(k) != 32 for k in keys):
            raise _errors.InvalidArgument("trusted_keys must be 32-byte Ed25519 public keys")
        if keys:
            arr = ffi.new("Ed25519PublicKey[]", len(keys))
            for i, k in enumerate(keys):
                ffi.memmove(arr[i].bytes, k, 32)
            c.trusted_keys.items = arr
            c.trusted_keys.len = len(keys)
            c.trusted_keys.align = 1
        err = new_error()
        ptr = lib.pp_runtime_new(c, err)
        check(err)
        self._rt: Any = ffi.gc(ptr, lib.pp_runtime_free)
        lib.pp_runtime_set_path_hooks(self._rt, lib.pp_py_load_hook, lib.pp_py_reload_hook,
                                      self._handle)
        for loader in loaders:
            self.register_loader(loader)

    # ── lifecycle ──

    def _ptr(self) -> Any:
        if self._rt is None:
            raise _errors.RuntimeClosed("the runtime is closed")
        return self._rt

    def close(self) -> None:
        """Unload every bundle and free the runtime.  Safe to call twice."""
        if self._rt is not None:
            rt, self._rt = self._rt, None
            ffi.release(rt)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._rt is None

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ── properties ──

    @property
    def host_api(self) -> Any:
        """The ``const HostApi *`` (cdata) to hand to C code or call directly."""
        return lib.pp_runtime_host(self._ptr())

    @property
    def config(self) -> RuntimeConfig:
        """The configuration this runtime was built with."""
        return self._config

    def revision(self) -> int:
        """The registry revision counter; it changes on every registry mutation."""
        host = self.host_api
        return int(host.revision_counter(host)[0])

    def registry(self) -> Registry:
        """The contract registry."""
        return Registry(self)

    # ── loaders ──

    def register_loader(self, loader: Any) -> None:
        """Register a loader (a :class:`LuaLoader`); raises :class:`DuplicateLoader`."""
        err = new_error()
        lib.pp_runtime_add_loader(self._ptr(), loader._c_loader(), err)
        check(err)

    # ── bundles ──

    def load_bundle(self, path: PathLike) -> ManifestData:
        """Load the bundle in directory ``path`` (or the directory of a file ``path``).

        The manifest is read and fully validated (version included) before anything
        is registered; a failed load leaves the runtime as it was.  Returns the
        manifest.
        """
        rt = self._ptr()
        entry = self._manifest_cache.read(path)
        self._check_manifest(rt, entry.doc)
        manifest = entry.manifest()
        self._load(rt, entry.doc, entry.id, manifest, None)
        return manifest

    def load_bundle_from_source(self, manifest: ManifestData, source: BundleSource) -> None:
        """Load a bundle from a manifest you built and a :class:`BundleSource`."""
        rt = self._ptr()
        doc = manifest_doc(manifest)
        self._check_manifest(rt, doc)
        self._load(rt, doc, manifest.id, manifest, source)

    @staticmethod
    def _check_manifest(rt: Any, doc: Any) -> None:
        """Unknown keys per the compatibility mode, then validation (all in C)."""
        err = new_error()
        lib.pp_runtime_check_manifest(rt, doc, err)
        check(err)

    def _load(self, rt: Any, doc: Any, bundle_id: int, manifest: ManifestData,
              source: Optional[BundleSource]) -> None:
        """Load a checked manifest: signature policy, function counts, then the loader."""
        self._check_signature(manifest, source)
        keep: list[Any] = []
        src = source._to_c(keep) if source is not None else ffi.NULL
        err = new_error()
        # Record the manifest before its contracts are published: a thread asking
        # rt.contract() the moment they appear must already see their signatures.
        fresh = self._manifests.setdefault(bundle_id, manifest) is manifest
        lib.pp_runtime_load_manifest(rt, doc, src, err)
        if err.status and fresh:
            self._manifests.pop(bundle_id, None)
        check(err)

    def reload_bundle(self, path: PathLike) -> None:
        """Hot-reload a loaded bundle from disk.

        Raises :class:`HotReloadDisabled` (before touching ``path``) unless the runtime
        was built with ``hot_reload_enabled``.  On failure the previous version keeps
        serving and ``on_reload`` sees a Failed phase.
        """
        rt = self._ptr()
        if not self._config.hot_reload_enabled:
            raise _errors.HotReloadDisabled("hot-reload is disabled in runtime config")
        entry: Optional[CachedManifest] = None
        try:
            entry = self._manifest_cache.read(path)
            self._check_manifest(rt, entry.doc)
            manifest = entry.manifest()
            self._check_signature(manifest)
        except _errors.PolyplugError as exc:
            # name the bundle in the Failed phase when the manifest at least parsed
            named = entry.manifest() if entry is not None else None
            name = named.name if named else (getattr(exc, "bundle", "") or "")
            keep: list[Any] = []
            lib.pp_runtime_notify_reload_failed(rt, entry.id if entry else 0,
                                                text_view(_encode(name), keep),
                                                text_view(_encode(str(exc)), keep))
            raise
        err = new_error()
        lib.pp_runtime_reload(rt, lib.pp_manifest_doc_view(entry.doc), err)
        check(err)
        self._manifests[entry.id] = manifest

    def _check_signature(self, manifest: ManifestData,
                         source: Optional[BundleSource] = None) -> None:
        """Apply ``signature_policy`` to the bundle directory of ``manifest`` (spec §14.3).

        Required: any failure raises.  WarnOnly: a failure is logged and loading goes on.
        An in-memory source (Code, Bytes) has no files to check, so it counts as unsigned.
        """
        if self._config.signature_policy == SignaturePolicy.Off:
            return
        policy = SignaturePolicy(self._config.signature_policy)
        try:
            if source is not None and source.kind != "path":
                raise _errors.UnsignedBundle(
                    f"bundle `{manifest.name}` comes from an in-memory source "
                    f"(BundleSource.{source.kind.capitalize()}), which cannot be signed, "
                    f"and signature_policy is {policy.name}", bundle=manifest.name)
            signing.verify_bundle(manifest.path, manifest.name, self._config.trusted_keys)
        except _errors.LoaderError as exc:
            if policy == SignaturePolicy.Required:
                raise
            self._log(LogLevel.Warn, "runtime", f"bundle `{manifest.name}`: signature check "
                      f"failed (WarnOnly — continuing): {exc}")

    def unload_bundle(self, bundle_id: int) -> None:
        """Unload a bundle by id: its contracts go stale and its Lua VM is freed."""
        err = new_error()
        lib.pp_runtime_unload(self._ptr(), int(bundle_id), err)
        check(err)
        self._manifests.pop(int(bundle_id), None)

    def manifest(self, bundle_id: int) -> ManifestData:
        """The manifest a loaded bundle was loaded (or last reloaded) with."""
        try:
            return self._manifests[int(bundle_id)]
        except KeyError:
            raise _errors.BundleNotFound(f"bundle not found: no loaded bundle has id "
                                         f"0x{int(bundle_id):016x}", bundle="") from None

    # ── the Pythonic call layer ──

    def contract(self, name: str, major: int = 1,
                 signatures: Optional[dict[str, FunctionSig]] = None, *,
                 timeout: Optional[float] = None, cancel: Optional[Any] = None) -> Contract:
        """A callable view of contract ``name@major`` (see :mod:`polyplug.call`).

        Function signatures come from ``signatures`` or, when omitted, from the
        ``[contracts."<name>@<major>".functions]`` table of the loaded bundle that
        provides the contract.  ``timeout`` (seconds) and ``cancel`` (a
        :class:`CancelToken`) apply to every call made through the returned object.
        Raises :class:`PluginNotFound`.
        """
        if signatures is None:
            handle = self.find_guest_contract(guest_contract_id(name, major), major)
            owner = self._owner_of(handle)
            m = self._manifests.get(owner) if owner is not None else None
            signatures = dict(m.signatures.get(f"{name}@{major}", {})) if m else {}
        return Contract(self, name, major, signatures, timeout=timeout, cancel=cancel)

    def _owner_of(self, handle: GuestContractHandle) -> Optional[int]:
        info = self.registry().info(handle)
        return int(info["bundle_id"])


    def bundle_memory(self, bundle_id: int) -> int:
        """Bytes held by a loaded bundle's guest heap (its Lua VM's GC heap)."""
        n = lib.pp_runtime_bundle_memory(self._ptr(), int(bundle_id))
        if n < 0:
            raise _errors.BundleNotFound(f"bundle not found: no loaded bundle has id "
                                         f"0x{int(bundle_id):016x}", bundle="")
        return int(n)

    def list_bundles(self) -> list[int]:
        """Ids of the bundles currently loaded."""
        rt = self._ptr()
        n = lib.pp_runtime_bundle_ids(rt, ffi.NULL, 0)
        out = ffi.new("uint64_t[]", max(n, 1))
        n = min(n, lib.pp_runtime_bundle_ids(rt, out, n))
        return [int(out[i]) for i in range(n)]

    # ── registry shortcuts ──

    def find_guest_contract(self, contract_id: int, min_major: int = 0) -> GuestContractHandle:
        """``registry().find(...)``; raises :class:`PluginNotFound`."""
        return self.registry().find(contract_id, min_major)

    def find_guest_contract_by_bundle(self, bundle_id: int, contract_id: int,
                                      min_major: int = 0) -> GuestContractHandle:
        """``registry().find_by_bundle(...)``; raises :class:`PluginNotFound`."""
        return self.registry().find_by_bundle(bundle_id, contract_id, min_major)

    def find_all_by_contract(self, contract_id: int,
                             min_major: int = 0) -> list[GuestContractHandle]:
        """``registry().find_all(...)``."""
        return self.registry().find_all(contract_id, min_major)

    def resolve_guest_contract(self, handle: GuestContractHandle) -> Any:
        """``registry().resolve_guest_contract(...)``."""
        return self.registry().resolve_guest_contract(handle)

    # ── logging ──

    def _log(self, level: LogLevel, scope: str, message: str) -> None:
        keep: list[Any] = []
        lib.pp_runtime_log(self._ptr(), int(level), text_view(_encode(scope), keep),
                           text_view(_encode(message), keep))

    def log(self, level: LogLevel, scope: str, message: str) -> None:
        """Emit a record through the runtime's log funnel."""
        self._log(LogLevel(level), scope, message)
