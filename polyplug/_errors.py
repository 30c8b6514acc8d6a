"""The exception tree, and the one place that turns C status codes into exceptions.

The tree mirrors upstream's error enums so code written against them reads the same:

    PolyplugError
    ├── RuntimeError            (also a builtins.RuntimeError)
    │   ├── LoaderError         InitFailed, ManifestParse, InvalidSourceEncoding,
    │   │                       UnsignedBundle, SignatureVerificationFailed, ...
    │   ├── RegistryError       PluginNotFound, StaleHandle, DuplicateProvider, ...
    │   └── HotReloadDisabled, BundleNotFound, DependencyInUse, ...
    │   ├── HostContractError   DuplicateHostContract, HostContractNotFound
    ├── CallError               a failed ``vm.call``: GuestError, FunctionNotAvailable,
    │                           ReentrantCall, CallTimeout, Cancelled, GuestOutOfMemory,
    │                           HostContractCallFailed
    └── SigningError            a bundle that cannot be digested or signed, a bad key file

Every C entry point of ``polyplug._native`` reports failure through a ``pp_error``
struct (status code, message and the structured fields below); :func:`raise_from_c`
is the only function that reads it.  Which class a status maps to is written once, in
``csrc/pp_errors.def``, and reaches Python through ``pp_status_exception()``.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any, ClassVar

from polyplug._abi import CALL_CANCELLED, CALL_OUT_OF_MEMORY, CALL_TIMEOUT, AbiErrorCode


class PolyplugError(Exception):
    """Base class of every error raised by polyplug.

    ``str(err)`` is the full human-readable message.  Subclasses add the structured
    fields upstream's Rust variants carry (``bundle``, ``error``, ``path`` ...).
    """

    #: how the C ``pp_error`` fields map onto this class's attributes:
    #: attribute name -> one of "bundle", "detail", "aux".
    _c_fields: ClassVar[dict[str, str]] = {}
    #: the C status code (``pp_status``) when the error came from the C host, else 0
    status: int = 0

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in fields.items():
            setattr(self, key, value)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)!r}" for k in self._c_fields)
        return f"{type(self).__name__}({self.message!r}{extra})"


class RuntimeError(PolyplugError, builtins.RuntimeError):  # noqa: A001 - mirrors upstream
    """Any failure of a runtime operation (load, reload, unload, lookup)."""


# ── loader errors ────────────────────────────────────────────────────────────


class LoaderError(RuntimeError):
    """A bundle could not be read, parsed, initialised or registered."""


class InitFailed(LoaderError):
    """The bundle's entry code failed: syntax or runtime error, bad init result."""

    _c_fields = {"bundle": "bundle", "error": "detail"}


class ManifestParse(LoaderError):
    """``manifest.toml`` is unreadable, not TOML, or fails validation."""

    _c_fields = {"path": "bundle", "reason": "detail"}


class ManifestMissingFile(LoaderError):
    """The manifest names no entry ``file``."""

    _c_fields = {"bundle": "bundle"}


class BundleTampered(LoaderError):
    """The manifest ``id`` is not ``bundle_id(name)``."""

    _c_fields = {"bundle": "bundle", "expected": "detail", "found": "aux"}


class BundleNotADirectory(LoaderError):
    """The bundle path does not exist or is not a directory."""

    _c_fields = {"path": "bundle"}


class BundleReadFailed(LoaderError):
    """A bundle file could not be read."""

    _c_fields = {"path": "bundle", "source": "detail"}


class PathEscape(LoaderError):
    """A path named by the manifest leaves the bundle directory."""

    _c_fields = {"bundle": "bundle", "path": "detail"}


class NoLoaderForName(LoaderError):
    """No loader is registered under the manifest's ``loader`` name."""

    _c_fields = {"bundle": "bundle", "loader_name": "aux"}


class DuplicateLoader(LoaderError):
    """A loader with the same name is already registered."""

    _c_fields = {"loader_name": "aux"}


class UnsupportedBundleSource(LoaderError):
    """The loader cannot load this kind of ``BundleSource``."""

    _c_fields = {"bundle": "bundle", "loader": "aux", "source_kind": "detail"}


class InvalidSourceEncoding(LoaderError):
    """A ``BundleSource.Bytes`` payload is not UTF-8."""

    _c_fields = {"bundle": "bundle", "loader": "aux", "source_kind": "detail"}


class FunctionCountMismatch(LoaderError):
    """``[function_count]`` lacks an entry for a ``provides`` contract (Strict mode)."""

    _c_fields = {"contract": "bundle", "expected": "detail", "found": "aux"}


class BundleAlreadyLoaded(LoaderError):
    """A bundle with the same id is already loaded; unload it or reload it instead."""

    _c_fields = {"bundle": "bundle"}


class HotReloadUnsupported(LoaderError):
    """The bundle's loader cannot hot-reload."""

    _c_fields = {"loader_name": "aux"}


# ── bundle signing (raised by polyplug.signing; never by C) ──────────────────


class UnsignedBundle(LoaderError):
    """The signature policy asks for a ``bundle.sig`` and the bundle has none."""

    _c_fields = {"bundle": "bundle"}


class UntrustedSigningKey(LoaderError):
    """``bundle.sig`` is valid but its key is not in ``RuntimeConfig.trusted_keys``.

    ``key`` is the 32-byte public key the bundle was signed with.
    """

    _c_fields = {"bundle": "bundle"}


class SignatureVerificationFailed(LoaderError):
    """The bundle's files do not match its ``bundle.sig``, or it cannot be digested.

    ``reason`` is the underlying problem (``signature error: ...``, a symlink ...).
    """

    _c_fields = {"bundle": "bundle", "reason": "detail"}


class MalformedSignature(SignatureVerificationFailed):
    """``bundle.sig`` is not 103 bytes, has the wrong magic, or an unknown version."""


class MalformedTrustedKey(LoaderError):
    """A key in ``RuntimeConfig.trusted_keys`` is not a valid Ed25519 public key."""

    _c_fields = {"bundle": "bundle", "reason": "detail"}


# ── registry errors ──────────────────────────────────────────────────────────


class RegistryError(RuntimeError):
    """A registry lookup or registration was refused."""


class PluginNotFound(RegistryError):
    """No live provider of the contract at or above the requested major."""

    _c_fields = {"contract_id": "detail"}


class InvalidHandle(RegistryError):
    """The handle's index is out of range (or the null handle)."""

    _c_fields = {"index": "detail"}


class StaleHandle(RegistryError):
    """The handle's slot was vacated or recycled (its bundle was unloaded)."""

    _c_fields = {"index": "detail"}


class DuplicateProvider(RegistryError):
    """The same bundle registered the same contract twice."""

    _c_fields = {"contract": "bundle", "existing": "detail"}


class ContractIdCollision(RegistryError):
    """Two different contract names hash to the same contract id."""

    _c_fields = {"name_a": "bundle", "name_b": "detail"}


class InvalidRegistration(RegistryError):
    """A ``register_guest_contract`` argument is malformed (null pointer, bad type)."""


# ── host contracts ───────────────────────────────────────────────────────────


class HostContractError(RuntimeError):
    """Providing, withdrawing or finding a host contract failed."""


class DuplicateHostContract(HostContractError):
    """A host contract with the same id (name and major) is already provided.

    ``contract`` is ``name@major``.  Withdraw the other one first, or pass
    ``replace=True`` to ``Runtime.provide_host_contract``.
    """

    _c_fields = {"contract": "bundle"}


class HostContractNotFound(HostContractError):
    """A bundle declares a host contract (``[[dependency]] kind = "host_contract"``)
    that the runtime does not provide, or not at the version it asks for.  ``bundle``
    names the bundle, ``contract`` is ``name@major``."""

    _c_fields = {"bundle": "bundle", "contract": "aux"}


# ── other runtime errors ─────────────────────────────────────────────────────


class HotReloadDisabled(RuntimeError):
    """``reload_bundle`` was called on a runtime built without hot reload."""


class BundleNotFound(RuntimeError):
    """No bundle with that id is loaded."""

    _c_fields = {"bundle": "bundle"}


class DependencyInUse(RuntimeError):
    """Other loaded bundles declared a dependency on the bundle being unloaded."""

    _c_fields = {"bundle": "bundle", "dependents": "detail"}


class ReloadFailed(RuntimeError):
    """A reload failed; the previous version keeps serving."""

    _c_fields = {"bundle": "bundle", "reason": "detail"}


class InvalidArgument(RuntimeError, ValueError):
    """A caller passed a value the runtime cannot use (null pointer, bad UTF-8 ...)."""


class OutOfMemory(RuntimeError, MemoryError):
    """The host could not allocate memory."""


class RuntimeClosed(RuntimeError):
    """The runtime was closed; it can no longer be used."""


class RuntimeBusy(RuntimeError):
    """Calls or another load/reload/unload kept an operation from finishing in time.

    ``Runtime.close`` raises it when calls are still running in a bundle after its
    timeout (the runtime is closed anyway; those VMs are freed when the calls return);
    a guest that loads, reloads or unloads from inside a call raises it when another
    flow of the runtime held it up for too long.
    """


# ── call errors ──────────────────────────────────────────────────────────────


class CallError(PolyplugError):
    """A guest function call did not return Ok.  ``code`` is the ``AbiErrorCode``."""

    code: int = int(AbiErrorCode.Generic)


class GuestError(CallError):
    """The guest raised an error; ``str(err)`` carries the guest's message."""


class FunctionNotAvailable(CallError):
    """Unknown function id, or an instance that does not exist (any more)."""

    code = int(AbiErrorCode.FunctionNotAvailable)


class ReentrantCall(CallError):
    """A same-thread nested call into a VM that is already running a call."""

    code = int(AbiErrorCode.ReentrantCall)


class CallTimeout(CallError, TimeoutError):
    """The call ran past its time limit and was stopped; the VM stays usable."""

    code = CALL_TIMEOUT


class Cancelled(CallError):
    """A cancel token stopped the call; the VM stays usable."""

    code = CALL_CANCELLED


class GuestOutOfMemory(CallError, MemoryError):
    """The bundle reached its memory limit during the call; the VM stays usable."""

    code = CALL_OUT_OF_MEMORY


class HostContractCallFailed(CallError):
    """A host function failed (code 102): what a guest sees when a Python host function
    raises; ``str(err)`` is ``host function <contract>.<fn> failed: <Type>: <message>``."""

    code = int(AbiErrorCode.HostContractCallFailed)


# ── signing tools ────────────────────────────────────────────────────────────


class SigningError(PolyplugError, ValueError):
    """A bundle cannot be digested or signed (symlink, irregular or non-UTF-8 entry,
    no files), or a key file is malformed.  ``path`` is the offending path."""


_CALL_ERRORS: dict[int, type[CallError]] = {
    int(AbiErrorCode.Generic): GuestError,
    **{cls.code: cls for cls in (FunctionNotAvailable, ReentrantCall, CallTimeout, Cancelled,
                                 GuestOutOfMemory, HostContractCallFailed)},
}


# The last Python host function that raised on each thread: (the text the guest got,
# the exception).  A guest error on the same thread whose message contains that text
# gets the exception as its __cause__ (see polyplug.host and polyplug.call).
_host_failures = threading.local()


def remember_host_failure(text: str, exc: BaseException) -> None:
    """Note that a host function on this thread failed with ``exc``; the guest saw ``text``."""
    _host_failures.last = (text, exc)


def host_failure_cause(message: str) -> BaseException | None:
    """The exception of this thread's last failed host function if ``message`` (a guest
    error) carries its text; forgets it either way."""
    last = getattr(_host_failures, "last", None)
    if last is None:
        return None
    _host_failures.last = None
    text, exc = last
    return exc if text and text in message else None


def call_error(code: int, message: str) -> CallError:
    """Build the exception for a ``vm.call`` that returned ``AbiError.code == code``."""
    cls = _CALL_ERRORS.get(code, CallError)
    err = cls(message or f"guest call failed with code {code}")
    err.code = code
    return err


def raise_from_c(ffi: Any, lib: Any, err: Any) -> None:
    """Raise the exception a filled ``pp_error`` describes.  No-op when status is OK."""
    status = int(err.status)
    if status == 0:
        return
    name = ffi.string(lib.pp_status_exception(status)).decode()
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, PolyplugError)):
        cls = RuntimeError
    raw = {
        "bundle": ffi.string(err.bundle).decode("utf-8", "replace"),
        "detail": ffi.string(err.detail).decode("utf-8", "replace"),
        "aux": ffi.string(err.aux).decode("utf-8", "replace"),
    }
    message = ffi.string(err.message).decode("utf-8", "replace")
    fields = {attr: raw[src] for attr, src in cls._c_fields.items()}
    exc = cls(message, **fields)
    exc.status = status
    raise exc
