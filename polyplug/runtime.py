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

import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from polyplug import _errors, signing
from polyplug._abi import (
    AbiErrorCode,
    Compatibility,
    DispatchType,
    GuestContractHandle,
    LogLevel,
    ReloadPhase,
    ReloadPhaseType,
    SignaturePolicy,
)
from polyplug._callbacks import _CallbackState
from polyplug._ffi import bytes_view, check, ffi, lib, new_error, text_view
from polyplug.call import Contract, split_contract
from polyplug.host import HostContract, ProvidedHostContract
from polyplug.ids import bundle_id as _name_id
from polyplug.ids import _guest_contract_ids, guest_contract_id, host_contract_id
from polyplug.manifest import (
    CachedManifest,
    ManifestCache,
    ManifestData,
    doc_manifest,
    manifest_doc,
    manifest_doc_from_text,
)
from polyplug.signature import FunctionSig

__all__ = [
    "AbiErrorCode",
    "BundleSource",
    "Compatibility",
    "ContractInfo",
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
#: a loaded bundle, named by its id, its manifest ``name``, or the manifest itself
BundleRef = Union[int, str, ManifestData]


# ── small value types ────────────────────────────────────────────────────────


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


class ContractInfo(NamedTuple):
    """A contract a loaded bundle registered (``Runtime.bundle_contracts``)."""

    contract: str           #: ``name@major``
    plugin: str             #: the registration's ``plugin_name``
    contract_id: int
    version: tuple[int, int, int]
    functions: Optional[int]  #: how many functions it registered (None: unknown)
    bundle_id: int

    @property
    def name(self) -> str:
        """The contract name without ``@major``."""
        return self.contract.rpartition("@")[0]

    @property
    def major(self) -> int:
        """The contract's major version."""
        return int(self.contract.rpartition("@")[2])


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ── configuration and builder ────────────────────────────────────────────────

LogCallback = Callable[[LogLevel, str, str], None]
ReloadCallback = Callable[[ReloadPhase], None]


@dataclass
class RuntimeConfig:
    """Runtime settings (upstream ``RuntimeConfig``, with Python callables for callbacks).

    ``log_max_level`` is the least severe level that leaves the C host at all (Warn by
    default, so no record crosses into Python on a successful call).  Records at or
    above it — from the runtime, the loaders and guests calling ``HostApi.log`` — go to
    ``log(level, scope, message)`` when it is set, and otherwise to the standard
    :mod:`logging` module, logger ``polyplug.<scope>`` (``polyplug.loader.lua``,
    ``polyplug.guest.counter`` ...); see :mod:`polyplug._logging`.
    ``on_reload(phase)`` sees Preparing, Reloaded, Failed and Unloading phases.
    Callbacks may run on any thread and must not call back into the runtime; an
    exception they raise is reported through ``sys.unraisablehook``.
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
        self._host_contracts: list[HostContract] = []

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

    def host_contract(self, contract: HostContract) -> RuntimeBuilder:
        """Provide a :class:`HostContract` from the start (before any bundle loads)."""
        self._host_contracts.append(contract)
        return self

    def build(self) -> Runtime:
        """Create the runtime, register the loaders and provide the host contracts."""
        rt = Runtime(self._config, self._loaders)
        try:
            for contract in self._host_contracts:
                rt.provide_host_contract(contract)
        except BaseException:
            rt.close()
            raise
        return rt


# ── freeing ──────────────────────────────────────────────────────────────────

# Runtimes whose calls were still running when they were garbage-collected: the C side
# keeps them allocated (guest code may still call back into them), so the callback
# handle they hold must stay alive too.  Never cleared.
_LEAKED: list[Any] = []
_FREE_WAIT_NS = 10_000_000_000


def _free_runtime(ptr: Any, handle: Any) -> None:
    """The ``ffi.gc`` destructor of a runtime: close (waiting up to 10 s for calls still
    running), then free — or, if calls are still running, keep it and its handle."""
    if lib.pp_runtime_close(ptr, _FREE_WAIT_NS, ffi.NULL) == 0:
        lib.pp_runtime_free(ptr)
    else:
        _LEAKED.append((ptr, handle))


# ── the runtime ──────────────────────────────────────────────────────────────


# Per-thread out-parameters of the registry lookups (their cdata costs more than the
# lookup itself); a lookup reads its result before anything else runs on the thread.
_scratch = threading.local()


def _scratch_cell(ctype: str) -> Any:
    """This thread's scratch cell of C type ``ctype`` (a pointer type)."""
    cell = getattr(_scratch, ctype, None)
    if cell is None:
        cell = ffi.new(ctype)
        setattr(_scratch, ctype, cell)
    return cell


_new_handle = tuple.__new__  # GuestContractHandle without its Python-level __new__


class Registry:
    """The runtime's contract registry (``runtime.registry()``)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def find(self, contract_id: int, min_major: int = 0) -> GuestContractHandle:
        """The first live provider of ``contract_id`` whose major is ``>= min_major``.

        Raises :class:`PluginNotFound` (naming the contract when it can, and what is
        loaded that comes close) when there is none.
        """
        return self._runtime._find(int(contract_id), min_major)

    def find_by_bundle(self, bundle_id: int, contract_id: int,
                       min_major: int = 0) -> GuestContractHandle:
        """Like :meth:`find`, restricted to contracts registered by ``bundle_id``."""
        return self._runtime._find_by_bundle(int(bundle_id), int(contract_id), min_major)

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
        c.log = lib.pp_py_log_guarded  # the user's callback, or the logging module
        c.log_user_data = self._handle
        if cfg.on_reload is not None:
            c.on_reload = lib.pp_py_on_reload_guarded
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
        # The destructor keeps the callback handle alive: freeing the runtime closes its
        # VMs, and a guest finalizer may still log through it (a Runtime garbage-collected
        # without close() must not hand C a dead handle).
        handle = self._handle
        self._rt: Any = ffi.gc(ptr, lambda p: _free_runtime(p, handle))
        self._closed = False
        lib.pp_runtime_set_path_hooks(self._rt, lib.pp_py_load_hook_guarded,
                                      lib.pp_py_reload_hook_guarded,
                                      self._handle)
        for loader in loaders:
            self.register_loader(loader)

    # ── lifecycle ──

    def _ptr(self) -> Any:
        if self._closed:
            raise _errors.RuntimeClosed("the runtime is closed")
        return self._rt

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Unload every bundle and close every Lua VM.  Safe to call twice.

        From the first call on, every method raises :class:`RuntimeClosed` and calls
        through contracts fail.  A call still running in a bundle keeps that bundle's
        VM alive until it returns: ``close`` waits for such calls at most ``timeout``
        seconds (None: no limit), then raises :class:`RuntimeBusy` — the runtime stays
        closed, and the remaining VMs are freed when their calls return.  The C
        runtime's own memory is released when this object is garbage-collected.
        """
        self._closed = True
        wait_ns = 2**63 - 1 if timeout is None else max(0, int(timeout * 1e9))
        err = new_error()
        lib.pp_runtime_close(self._rt, min(wait_ns, 2**63 - 1), err)
        check(err)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def __enter__(self) -> Runtime:
        self._ptr()
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
        self._ptr()
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
        manifest.  Under a signature policy the bundle's files are read once and
        verified, and the loader runs those verified bytes (manifest included).
        """
        rt = self._ptr()
        entry = self._manifest_cache.read(path)
        self._check_manifest(rt, entry.doc)
        return self._load(rt, entry.doc, entry.manifest(), None)

    def load_bundle_from_source(self, manifest: ManifestData, source: BundleSource) -> None:
        """Load a bundle from a manifest you built and a :class:`BundleSource`."""
        rt = self._ptr()
        doc = manifest_doc(manifest)
        self._check_manifest(rt, doc)
        self._load(rt, doc, manifest, source)

    @staticmethod
    def _check_manifest(rt: Any, doc: Any) -> None:
        """Unknown keys per the compatibility mode, validation, and the host contracts the
        manifest requires (all in C)."""
        err = new_error()
        lib.pp_runtime_check_manifest(rt, doc, err)
        check(err)

    def _load(self, rt: Any, doc: Any, manifest: ManifestData,
              source: Optional[BundleSource]) -> ManifestData:
        """Load a checked manifest: signature policy, function counts, then the loader.
        Returns the manifest loaded (a signed bundle's, from its verified bytes)."""
        verified = self._check_signature(manifest, source)
        if verified is not None:
            doc, manifest = self._verified_doc(rt, doc, manifest, verified,
                                               from_disk=source is None)
        bundle_id = int(lib.pp_manifest_doc_view(doc).id)
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
        return manifest

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
            doc, manifest = entry.doc, entry.manifest()
            verified = self._check_signature(manifest)
            if verified is not None:
                doc, manifest = self._verified_doc(rt, doc, manifest, verified, from_disk=True)
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
        lib.pp_runtime_reload(rt, lib.pp_manifest_doc_view(doc), err)
        check(err)
        self._manifests[int(lib.pp_manifest_doc_view(doc).id)] = manifest

    def _check_signature(self, manifest: ManifestData, source: Optional[BundleSource] = None
                         ) -> Optional[signing.VerifiedBundle]:
        """Apply ``signature_policy`` to the bundle directory of ``manifest`` (spec §14.3).

        Returns the verified files the loader must run (None: load as usual).
        Required: any failure raises.  WarnOnly: a failure is logged and loading goes on.
        An in-memory source (Code, Bytes) has no files to check, so it counts as unsigned.
        """
        if self._config.signature_policy == SignaturePolicy.Off:
            return None
        policy = SignaturePolicy(self._config.signature_policy)
        try:
            if source is not None and source.kind != "path":
                raise _errors.UnsignedBundle(
                    f"bundle `{manifest.name}` comes from an in-memory source "
                    f"(BundleSource.{source.kind.capitalize()}), which cannot be signed, "
                    f"and signature_policy is {policy.name}", bundle=manifest.name)
            entry = os.path.normpath(manifest.file)
            return signing.read_verified_bundle(
                manifest.path, manifest.name, self._config.trusted_keys,
                keep=lambda rel: rel.endswith(".lua") or rel in ("manifest.toml", entry))
        except _errors.LoaderError as exc:
            if policy == SignaturePolicy.Required:
                raise
            self._log(LogLevel.Warn, "runtime", f"bundle `{manifest.name}`: signature check "
                      f"failed (WarnOnly — continuing): {exc}")
            return None

    @staticmethod
    def _verified_doc(rt: Any, doc: Any, manifest: ManifestData,
                      verified: signing.VerifiedBundle, from_disk: bool
                      ) -> tuple[Any, ManifestData]:
        """The document to load a verified bundle with: its files attached, so the loader
        reads nothing from the directory.  A bundle loaded from disk gets its manifest
        from the verified ``manifest.toml`` too (checked again: it may differ from the
        one read before verifying); a manifest the host built stays as it is (``doc``
        is then a fresh document of this load's own, never a cached one)."""
        files = ffi.gc(lib.pp_fileset_new(), lib.pp_fileset_release)
        if files == ffi.NULL:
            raise MemoryError("out of memory holding a bundle's verified files")
        for rel, data in verified.files.items():
            err = new_error()
            keep: list[Any] = []
            lib.pp_fileset_add(files, text_view(os.fsencode(rel), keep), bytes_view(data, keep),
                               err)
            check(err)
        if from_disk:
            text = verified.files.get("manifest.toml")
            if text is None:
                raise _errors.SignatureVerificationFailed(
                    f"signature verification failed for bundle `{manifest.name}`: "
                    f"manifest.toml is not among the signed files", bundle=manifest.name,
                    reason="manifest.toml is not among the signed files")
            doc = manifest_doc_from_text(text, manifest.path)
            Runtime._check_manifest(rt, doc)
            manifest = doc_manifest(doc)
        lib.pp_manifest_doc_set_files(doc, files)  # `doc` is this load's own document
        return doc, manifest

    def _bundle_id(self, bundle: BundleRef) -> int:
        """The id of a loaded bundle given by id, manifest ``name`` or manifest."""
        if isinstance(bundle, ManifestData):
            return int(bundle.id)
        if isinstance(bundle, str):
            named = self._manifests.get(_name_id(bundle))  # a manifest's id is its name's
            if named is not None and named.name == bundle:
                return int(named.id)
            for bid, m in list(self._manifests.items()):  # Yolo mode: any id
                if m.name == bundle:
                    return bid
            import difflib

            loaded = sorted(m.name for m in self._manifests.values())
            close = difflib.get_close_matches(bundle, loaded, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise _errors.BundleNotFound(
                f"bundle not found: no loaded bundle is named `{bundle}` (loaded: "
                f"{', '.join(loaded) or 'none'}){hint}", bundle=bundle)
        if isinstance(bundle, bool) or not isinstance(bundle, int):
            raise TypeError(f"a bundle is given by its id (int), its name (str) or its "
                            f"ManifestData, not {type(bundle).__name__}")
        return int(bundle)

    def _not_loaded(self, bundle_id: int) -> _errors.BundleNotFound:
        return _errors.BundleNotFound(f"bundle not found: no loaded bundle has id "
                                      f"0x{bundle_id:016x}", bundle="")

    def unload_bundle(self, bundle: BundleRef) -> None:
        """Unload a bundle, given by id, name or manifest: its contracts go stale and its
        Lua VM is freed."""
        rt = self._ptr()
        bundle_id = self._bundle_id(bundle)
        err = new_error()
        lib.pp_runtime_unload(rt, bundle_id, err)
        check(err)
        self._manifests.pop(bundle_id, None)

    def manifest(self, bundle: BundleRef) -> ManifestData:
        """The manifest a loaded bundle (by id or name) was loaded (or last reloaded) with."""
        self._ptr()
        bundle_id = self._bundle_id(bundle)
        try:
            return self._manifests[bundle_id]
        except KeyError:
            raise self._not_loaded(bundle_id) from None

    def bundle_contracts(self, bundle: BundleRef) -> list[ContractInfo]:
        """The contracts a loaded bundle (by id or name) registered, sorted by name."""
        rt = self._ptr()
        bundle_id = self._bundle_id(bundle)
        if not lib.pp_runtime_has_bundle(rt, bundle_id):
            raise self._not_loaded(bundle_id)
        return self._contracts_of(bundle_id)

    def _contracts_of(self, bundle_id: int, counts: bool = True) -> list[ContractInfo]:
        """``bundle_contracts`` of a bundle id, loaded or not (then: none); without
        ``counts``, ``functions`` is None (what error messages need, at a third of the
        cost)."""
        rt = self._ptr()
        cap = 16
        while True:
            infos = ffi.new("pp_slot_info[]", cap)
            total = lib.pp_registry_bundle_slots(rt, bundle_id, infos, cap)
            if total <= cap:
                break
            cap = total
        out = []
        for info in infos[0:total]:
            count = -1
            try:
                if counts:
                    handle = self._find_by_bundle(bundle_id, int(info.contract_id), 0)
                    count = lib.pp_function_count(self.resolve_guest_contract(handle))
            except _errors.RegistryError:  # retired meanwhile
                continue
            out.append(ContractInfo(
                ffi.string(info.contract_name).decode("utf-8", "replace"),
                ffi.string(info.plugin_name).decode("utf-8", "replace"),
                int(info.contract_id),
                (int(info.version.major), int(info.version.minor), int(info.version.patch)),
                None if count < 0 else int(count), bundle_id))
        return sorted(out)

    def bundle_memory(self, bundle: BundleRef) -> int:
        """Bytes held by a loaded bundle's guest heap (its Lua VM's GC heap).

        A native bundle allocates from the process heap: asking raises
        :class:`InvalidArgument`."""
        rt = self._ptr()
        bundle_id = self._bundle_id(bundle)
        n = lib.pp_runtime_bundle_memory(rt, bundle_id)
        if n < 0:
            m = self._manifests.get(bundle_id)
            if m is not None and m.loader == "native" and bundle_id in self.list_bundles():
                raise _errors.InvalidArgument(
                    f"bundle `{m.name}` is a native bundle: its memory is the process heap's, "
                    "which polyplug does not measure per bundle")
            raise self._not_loaded(bundle_id)
        return int(n)

    # ── the Pythonic call layer ──

    def contract(self, name: str, major: Optional[int] = None,
                 signatures: Optional[dict[str, FunctionSig]] = None, *,
                 timeout: Optional[float] = None, cancel: Optional[Any] = None) -> Contract:
        """A callable view of contract ``name@major`` (see :mod:`polyplug.call`).

        The major can be part of the name, as the CLI writes it (``"my.calc@2"``), or
        given separately (``("my.calc", 2)``); it defaults to 1.  Function signatures
        come from ``signatures`` or, when omitted, from the
        ``[contracts."<name>@<major>".functions]`` table of the loaded bundle that
        provides the contract.  ``timeout`` (seconds) and ``cancel`` (a
        :class:`CancelToken`) apply to every call made through the returned object.
        Raises :class:`PluginNotFound`, which names what is loaded that comes close.
        """
        name, major = split_contract(name, major)
        cid, spec = guest_contract_id(name, major), (name, major)
        handle = self._find(cid, major, spec)
        if signatures is None:
            m = self._manifests.get(self._owner_of(handle))
            if m is None and self._owner_of(handle, raises=False) is None:
                # unloaded between the lookup and now (its manifest goes after its
                # contracts): whoever provides the contract now, or PluginNotFound
                handle = self._find(cid, major, spec)
                m = self._manifests.get(self._owner_of(handle))
            signatures = dict(m.signatures.get(f"{name}@{major}", {})) if m else {}
        return Contract(self, name, major, signatures, timeout=timeout, cancel=cancel,
                        _handle=handle)

    def _owner_of(self, handle: GuestContractHandle, raises: bool = True) -> Optional[int]:
        """The bundle that registered the contract behind a live handle; for a stale or
        invalid one, the error (or None without ``raises``)."""
        info = _scratch_cell("pp_slot_info *")
        if lib.pp_registry_handle_info(self._ptr(), handle, info, ffi.NULL) == 0:
            return int(info.bundle_id)
        return int(self.registry().info(handle)["bundle_id"]) if raises else None

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
        return self._find(int(contract_id), min_major)

    def _find(self, contract_id: int, min_major: int,
              spec: Optional[tuple[str, int]] = None) -> GuestContractHandle:
        """``pp_registry_find``; ``spec`` is the ``(name, major)`` asked for, if known."""
        out = _scratch_cell("GuestContractHandle *")
        if lib.pp_registry_find(self._ptr(), contract_id, min_major, out, ffi.NULL) == 0:
            return _new_handle(GuestContractHandle, (out.index, out.generation))
        err = new_error()  # again, for the reason
        lib.pp_registry_find(self._ptr(), contract_id, min_major, out, err)
        try:
            check(err)
        except _errors.PluginNotFound as exc:
            try:
                better = self._plugin_not_found(exc, contract_id, min_major, spec)
            except _errors.PolyplugError:  # e.g. closed by another thread: the plain error
                raise exc from None
            raise better from None
        return GuestContractHandle(out.index, out.generation)

    def _find_by_bundle(self, bundle_id: int, contract_id: int,
                        min_major: int) -> GuestContractHandle:
        out = _scratch_cell("GuestContractHandle *")
        rt = self._ptr()
        if lib.pp_registry_find_by_bundle(rt, bundle_id, contract_id, min_major, out,
                                          ffi.NULL) == 0:
            return _new_handle(GuestContractHandle, (out.index, out.generation))
        err = new_error()  # again, for the reason
        lib.pp_registry_find_by_bundle(rt, bundle_id, contract_id, min_major, out, err)
        check(err)
        return _new_handle(GuestContractHandle, (out.index, out.generation))

    def _loaded_contracts(self) -> list[tuple[ContractInfo, str]]:
        """Every live contract with the name of the bundle that registered it."""
        out: list[tuple[ContractInfo, str]] = []
        for bid in self.list_bundles():
            m = self._manifests.get(bid)
            out.extend((info, m.name if m else f"0x{bid:016x}")
                       for info in self._contracts_of(bid, counts=False))
        return out

    def _plugin_not_found(self, exc: _errors.PluginNotFound, contract_id: int, min_major: int,
                          spec: Optional[tuple[str, int]]) -> _errors.PluginNotFound:
        """The C error, plus the contract's name and what is loaded that comes close."""
        import difflib

        loaded = self._loaded_contracts()
        if spec is None:  # find the name behind the id among the names we know
            spec = next(((i.name, i.major) for i, _ in loaded if i.contract_id == contract_id),
                        None)
        if spec is None:
            names = {info.name for info, _ in loaded}
            names.update(p.rpartition("@")[0] for m in self._manifests.values()
                         for p in m.provides)
            names.update(d.bare_contract() for m in self._manifests.values()
                         for d in m.dependencies)
            majors = sorted({min_major, *range(16), *(info.major for info, _ in loaded)})
            spec = next(((n, v) for n in sorted(names)
                         for v, cid in zip(majors, _guest_contract_ids(n, majors))
                         if cid == contract_id), None)
        base = exc.message
        if spec is None:
            listing = ", ".join(sorted(i.contract for i, _ in loaded)[:10])
            text = (f"{base}; no loaded contract has that id (loaded: {listing or 'none'}); "
                    "compute ids with guest_contract_id(name, major)")
        else:
            name, major = spec
            text = f"{base}: no loaded bundle provides `{name}@{major}`"
            same = sorted(f"`{i.contract}` (bundle `{b}`)" for i, b in loaded if i.name == name)
            if any(i.name == name and i.major == major for i, _ in loaded):
                text = (f"{base}: `{name}@{major}` is loaded, but min_version={min_major} asks "
                        f"for a major of at least {min_major}")
            elif same:
                text += f"; loaded: {', '.join(same)} — ask for that major instead"
            else:
                close = difflib.get_close_matches(name, sorted({i.name for i, _ in loaded}), n=3)
                if close:
                    text += "; did you mean " + ", ".join(
                        f"`{i.contract}`" for i, _ in sorted(loaded) if i.name in close) + "?"
                elif loaded:
                    listing = ", ".join(sorted(i.contract for i, _ in loaded)[:10])
                    text += f" (loaded: {listing})"
                else:
                    text += " (no bundle is loaded)"
        better = _errors.PluginNotFound(text, contract_id=getattr(exc, "contract_id", ""))
        better.status = exc.status
        return better

    def find_guest_contract_by_bundle(self, bundle_id: int, contract_id: int,
                                      min_major: int = 0) -> GuestContractHandle:
        """``registry().find_by_bundle(...)``; raises :class:`PluginNotFound`."""
        return self._find_by_bundle(int(bundle_id), int(contract_id), min_major)

    def find_all_by_contract(self, contract_id: int,
                             min_major: int = 0) -> list[GuestContractHandle]:
        """``registry().find_all(...)``."""
        return self.registry().find_all(contract_id, min_major)

    def resolve_guest_contract(self, handle: GuestContractHandle) -> Any:
        """``registry().resolve_guest_contract(...)``."""
        return self.registry().resolve_guest_contract(handle)

    # ── host contracts ──

    def provide_host_contract(self, contract: Union[HostContract, str],
                              major: Optional[int] = None,
                              functions: Optional[Mapping[str, Callable[..., Any]]] = None, *,
                              signatures: Optional[Mapping[str, Any]] = None,
                              factory: Optional[Callable[[], Any]] = None,
                              replace: bool = False) -> ProvidedHostContract:
        """Give the bundles a host contract implemented in Python (:mod:`polyplug.host`).

        Pass a :class:`HostContract`, or build one in place from a name, a
        ``{name: callable}`` mapping and their ``signatures`` (``FunctionSig`` or the
        manifest's ``{"id": 0, "args": [...], "returns": "..."}`` form)::

            rt.provide_host_contract("app.clock", 1, {"now": time.time},
                                     signatures={"now": {"returns": "f64"}})

        A contract with the same name and major already provided raises
        :class:`DuplicateHostContract`, unless ``replace=True`` (the old one is
        withdrawn).  Returns a :class:`ProvidedHostContract` (``withdraw()``, ``with``).
        """
        rt = self._ptr()
        if isinstance(contract, HostContract):
            if major is not None or functions is not None or signatures is not None \
                    or factory is not None:
                raise TypeError("provide_host_contract(HostContract) takes no major, "
                                "functions, signatures or factory: the contract has them")
        elif isinstance(contract, str):
            contract = HostContract.from_functions(contract, major, functions or {},
                                                   signatures=signatures, factory=factory)
        else:
            raise TypeError(f"provide_host_contract takes a HostContract or a contract name, "
                            f"not {type(contract).__name__}")
        return contract._provide(self, rt, replace)

    def withdraw_host_contract(self, contract: Union[HostContract, str],
                               major: Optional[int] = None) -> bool:
        """Stop providing host contract ``contract`` (a name, ``"name@major"`` or a
        :class:`HostContract`); False when it was not provided."""
        rt = self._ptr()
        if isinstance(contract, HostContract):
            cid = contract.contract_id
        else:
            name, major = split_contract(contract, major)
            cid = host_contract_id(name, major)
        return bool(lib.pp_runtime_withdraw_host_contract(rt, cid, ffi.NULL))

    # ── logging ──

    def _log(self, level: LogLevel, scope: str, message: str) -> None:
        keep: list[Any] = []
        lib.pp_runtime_log(self._ptr(), int(level), text_view(_encode(scope), keep),
                           text_view(_encode(message), keep))

    def log(self, level: LogLevel, scope: str, message: str) -> None:
        """Emit a record through the runtime's log funnel."""
        self._log(LogLevel(level), scope, message)
