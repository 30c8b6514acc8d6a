"""polyplug: a plugin runtime for Python.

Plugin bundles (``manifest.toml`` + Lua) each run in their own LuaJIT VM behind the
polyplug 0.1.3 C ABI; the host calls their functions through C vtables and guests
read and write real native memory with the LuaJIT FFI.

The low-level cffi module is exposed as :data:`ffi` and :data:`lib`.

``from polyplug import *`` imports the names in ``__all__``: the API below, without
the submodules and without ``RuntimeError`` (upstream's name for the base of runtime
failures, which would shadow the builtin; use ``polyplug.RuntimeError``).
"""

from __future__ import annotations

from polyplug._errors import (
    BundleAlreadyLoaded,
    BundleNotADirectory,
    BundleNotFound,
    BundleReadFailed,
    BundleTampered,
    CallError,
    CallTimeout,
    Cancelled,
    ContractIdCollision,
    DependencyInUse,
    DuplicateHostContract,
    DuplicateLoader,
    DuplicateProvider,
    FunctionCountMismatch,
    FunctionNotAvailable,
    GuestError,
    GuestOutOfMemory,
    HostContractCallFailed,
    HostContractError,
    HostContractNotFound,
    HotReloadDisabled,
    HotReloadUnsupported,
    InitFailed,
    InvalidArgument,
    InvalidHandle,
    InvalidRegistration,
    InvalidSourceEncoding,
    LoaderError,
    MalformedSignature,
    MalformedTrustedKey,
    ManifestMissingFile,
    ManifestParse,
    NoLoaderForName,
    OutOfMemory,
    PathEscape,
    PluginNotFound,
    PolyplugError,
    ReentrantCall,
    RegistryError,
    ReloadFailed,
    RuntimeBusy,
    RuntimeClosed,
    RuntimeError,
    SignatureVerificationFailed,
    SigningError,
    StaleHandle,
    UnsignedBundle,
    UnsupportedBundleSource,
    UntrustedSigningKey,
)
from polyplug._ffi import ffi, lib
from polyplug._version import __version__
from polyplug.call import Contract, Instance
from polyplug.host import HostContract, ProvidedHostContract
from polyplug.ids import (
    BundleId,
    GuestContractId,
    HostContractId,
    Version,
    bundle_id,
    fnv1a_64,
    guest_contract_id,
    host_contract_id,
)
from polyplug.loader import CancelToken, LuaConfig, LuaLoader, NativeConfig, NativeLoader
from polyplug.manifest import Dependency, ManifestData, read_manifest, validate
from polyplug.runtime import (
    AbiErrorCode,
    BundleSource,
    Compatibility,
    ContractInfo,
    DispatchType,
    GuestContractHandle,
    LogLevel,
    Registry,
    ReloadPhase,
    ReloadPhaseType,
    Runtime,
    RuntimeBuilder,
    RuntimeConfig,
    SignaturePolicy,
)
from polyplug.signature import FunctionSig


def get_include() -> str:
    """The directory of ``polyplug_abi.h``, the C ABI header a native bundle compiles
    against::

        cc -shared -fPIC -I"$(python -c 'import polyplug; print(polyplug.get_include())')" ...
    """
    import os

    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def luajit_version() -> str:
    """The version string of the LuaJIT linked into the extension, e.g. ``"LuaJIT 2.1.1774896198"``."""
    return ffi.string(lib.pp_luajit_version()).decode()


__all__ = [
    # runtime
    "Runtime", "RuntimeBuilder", "RuntimeConfig", "Registry", "BundleSource", "ContractInfo",
    "GuestContractHandle", "ReloadPhase", "Contract", "Instance", "FunctionSig",
    "LuaLoader", "LuaConfig", "NativeLoader", "NativeConfig", "CancelToken", "HostContract",
    "ProvidedHostContract",
    # enums
    "AbiErrorCode", "Compatibility", "DispatchType", "LogLevel", "ReloadPhaseType",
    "SignaturePolicy",
    # manifests and ids
    "ManifestData", "Dependency", "read_manifest", "validate", "Version", "BundleId",
    "GuestContractId", "HostContractId", "bundle_id", "guest_contract_id", "host_contract_id",
    "fnv1a_64",
    # errors (RuntimeError is left out: it would shadow the builtin)
    "PolyplugError", "LoaderError", "RegistryError", "CallError", "SigningError",
    "BundleAlreadyLoaded", "BundleNotADirectory", "BundleNotFound", "BundleReadFailed",
    "BundleTampered", "CallTimeout", "Cancelled", "ContractIdCollision", "DependencyInUse",
    "DuplicateHostContract", "DuplicateLoader", "DuplicateProvider", "FunctionCountMismatch",
    "FunctionNotAvailable", "HostContractCallFailed", "HostContractError", "HostContractNotFound",
    "GuestError", "GuestOutOfMemory", "HotReloadDisabled", "HotReloadUnsupported",
    "InitFailed", "InvalidArgument", "InvalidHandle", "InvalidRegistration",
    "InvalidSourceEncoding", "MalformedSignature", "MalformedTrustedKey", "ManifestMissingFile",
    "ManifestParse", "NoLoaderForName", "OutOfMemory", "PathEscape", "PluginNotFound",
    "ReentrantCall", "ReloadFailed", "RuntimeClosed", "SignatureVerificationFailed",
    "StaleHandle", "UnsignedBundle", "UnsupportedBundleSource", "UntrustedSigningKey",
    # the binding and versions
    "ffi", "lib", "get_include", "luajit_version", "__version__",
]
