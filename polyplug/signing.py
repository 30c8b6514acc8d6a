"""Bundle signing: Ed25519 signatures over a canonical digest of a bundle's files.

The format is upstream's (polyplug 0.1.3, spec §14), so bundles signed by either
implementation verify with the other:

* **Digest.**  Every regular file under the bundle directory except the root-level
  ``bundle.sig``, named by its ``/``-separated relative path and sorted by the path's
  raw bytes, goes into::

      b"polyplug-bundle-sig\\0" + b"\\x01" + <file count, u64 little-endian>
      + for each file: <path bytes> + b"\\0" + sha256(<file bytes>)

  and the digest is the SHA-256 of that buffer.  Symlinks, FIFOs, sockets, devices
  and non-UTF-8 names are refused, so the walk never leaves the bundle directory.

* **bundle.sig** (103 bytes, at the bundle root)::

      b"PPSIG\\0" + b"\\x01" + <32-byte public key> + <64-byte signature of the digest>

* **Key files** (39 bytes; the CLI's ``.key`` / ``.pub``)::

      b"PPKEY\\0" + <0x01 signing seed | 0x02 verifying key> + <32 bytes>

Verification is *strict* (as ed25519-dalek's ``verify_strict``): besides the
RFC 8032 check that OpenSSL performs, a public key or signature ``R`` of small order
is refused, since such a key "signs" anything.

The runtime calls :func:`verify_bundle` while loading when
``RuntimeConfig.signature_policy`` is WarnOnly or Required.  With an empty
``trusted_keys`` list the key embedded in ``bundle.sig`` is trusted on first use:
that proves the files were not changed after signing, not who signed them.  Pin your
own public key(s) in ``trusted_keys`` to authenticate the signer::

    from polyplug import RuntimeConfig, SignaturePolicy
    from polyplug.signing import generate_key, sign_bundle

    seed, public = generate_key()
    sign_bundle("plugins/arith", seed)           # writes plugins/arith/bundle.sig
    config = RuntimeConfig(signature_policy=SignaturePolicy.Required,
                           trusted_keys=[public])
"""

from __future__ import annotations

import enum
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Sequence, Union

from polyplug._errors import (
    MalformedSignature,
    MalformedTrustedKey,
    PolyplugError,
    SignatureVerificationFailed,
    SigningError,
    UnsignedBundle,
    UntrustedSigningKey,
)

# cryptography and hashlib are imported where they are used: most programs never sign
# or verify, and importing them costs more than the rest of `import polyplug`.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "SIG_FILE",
    "KeyKind",
    "bundle_digest",
    "generate_key",
    "public_key",
    "read_key_file",
    "sign_bundle",
    "read_verified_bundle",
    "verify_bundle",
    "VerifiedBundle",
    "write_key_file",
]

PathLike = Union[str, "os.PathLike[str]"]

SIG_FILE = "bundle.sig"
_DIGEST_DOMAIN = b"polyplug-bundle-sig\0"
_DIGEST_VERSION = b"\x01"
_SIG_MAGIC = b"PPSIG\0"
_SIG_VERSION = 1
_SIG_LEN = len(_SIG_MAGIC) + 1 + 32 + 64  # 103
_KEY_MAGIC = b"PPKEY\0"
_KEY_FILE_LEN = len(_KEY_MAGIC) + 1 + 32  # 39

_MISMATCH = "signature error: Verification equation was not satisfied"
_BAD_POINT = "invalid Ed25519 key data: signature error: Cannot decompress Edwards point"


class KeyKind(enum.IntEnum):
    """The type byte of a key file."""

    SigningSeed = 1
    VerifyingKey = 2


# ── the canonical digest ─────────────────────────────────────────────────────


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _File(NamedTuple):
    rel: bytes  # the /-separated path relative to the bundle root
    sha256: bytes
    data: Optional[bytes]  # the bytes, for a file the caller asked to keep


def _read_bundle(root: Path, keep: Callable[[str], bool]) -> list[_File]:
    """Read every file the digest covers, once, sorted by relative path.

    Every directory and file is opened relative to its parent's descriptor and never
    through a symlink (``O_NOFOLLOW``), so what is read is inside ``root`` even if the
    tree changes meanwhile, and each file's digest and kept bytes are of one read.
    Raises :class:`SigningError` for a symlink, an irregular file or a non-UTF-8 name,
    and OSError if something cannot be read.
    """
    import hashlib
    import stat

    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise SigningError(f"bundle path is not a directory: `{root}`", path=str(root)) from None
    files: list[_File] = []
    pending = [(b"", root_fd)]
    try:
        while pending:
            rel_dir, dir_fd = pending.pop()
            try:
                with os.scandir(dir_fd) as listing:
                    names = [entry.name for entry in listing]
                for name in names:
                    raw = os.fsencode(name)
                    rel = rel_dir + b"/" + raw if rel_dir else raw
                    shown = os.path.join(os.fsencode(root), rel).decode("utf-8",
                                                                         "backslashreplace")
                    try:
                        text = rel.decode("utf-8")
                    except UnicodeDecodeError:
                        raise SigningError(f"path is not valid UTF-8 in a signable bundle "
                                           f"`{root}`: {shown}", path=shown) from None
                    mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                    if stat.S_ISLNK(mode):
                        raise SigningError(f"symlinks are not allowed in a signable bundle "
                                           f"`{root}`: {shown}", path=shown)
                    if stat.S_ISDIR(mode):
                        pending.append((rel, os.open(name, _DIR_FLAGS, dir_fd=dir_fd)))
                        continue
                    if not stat.S_ISREG(mode):
                        raise SigningError(f"irregular file (not a regular file or directory) "
                                           f"is not allowed in a signable bundle `{root}`: "
                                           f"{shown}", path=shown)
                    if rel == SIG_FILE.encode():
                        continue
                    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
                    with os.fdopen(fd, "rb") as f:
                        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped meanwhile
                            raise SigningError(f"irregular file (not a regular file or "
                                               f"directory) is not allowed in a signable "
                                               f"bundle `{root}`: {shown}", path=shown)
                        if keep(text):
                            data: Optional[bytes] = f.read()
                            digest = hashlib.sha256(data).digest()
                        else:
                            data, h = None, hashlib.sha256()
                            for chunk in iter(lambda: f.read(1 << 16), b""):
                                h.update(chunk)
                            digest = h.digest()
                    files.append(_File(rel, digest, data))
            finally:
                os.close(dir_fd)
    finally:
        for _, fd in pending:  # left open by an error
            os.close(fd)
    if not files:
        raise SigningError(f"bundle `{root}` contains no signable files", path=str(root))
    files.sort()
    return files


def bundle_digest(bundle_dir: PathLike) -> bytes:
    """The 32-byte canonical digest of the bundle at ``bundle_dir`` (what gets signed).

    Raises :class:`SigningError` for a symlink, an irregular file or a non-UTF-8 name
    anywhere in the bundle, a bundle with no files besides ``bundle.sig``, or a file
    or directory that cannot be read.
    """
    root = Path(bundle_dir)
    return _digest(root, _read(root, lambda rel: False))


def _read(root: Path, keep: Callable[[str], bool]) -> list[_File]:
    try:
        return _read_bundle(root, keep)
    except OSError as err:
        raise SigningError(f"cannot read bundle `{root}`: {err}", path=str(root)) from err


def _digest(root: Path, files: Sequence[_File]) -> bytes:
    """The canonical digest of files read by :func:`_read_bundle`."""
    import hashlib

    buf = bytearray(_DIGEST_DOMAIN + _DIGEST_VERSION + struct.pack("<Q", len(files)))
    for f in files:
        buf += f.rel + b"\0" + f.sha256
    return hashlib.sha256(buf).digest()


def _mismatch_advice(root: Path, files: Sequence[str]) -> str:
    """What a failed verification means and what to do about it."""
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    return (f"The {len(files)} file(s) in `{root}` ({shown}) are not the ones {SIG_FILE} "
            f"was made for: a file was changed, added, removed or renamed after signing, or "
            f"{SIG_FILE} was replaced. If the change is yours, sign the bundle again "
            f"(`python -m polyplug sign {root} --key KEY`); otherwise do not load it.")


# ── Ed25519 details cryptography does not check ──────────────────────────────
#
# cryptography (OpenSSL) accepts any 32 bytes as a public key and reports a bad one
# only as a failed verification, and it accepts small-order keys.  Upstream refuses
# both, so these few lines of curve arithmetic (edwards25519: -x^2 + y^2 = 1 + d x^2 y^2
# over GF(2^255 - 19)) decode a point and test its order.

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _decompress(data: bytes) -> Optional[tuple[int, int]]:
    """The point ``(x, y)`` encoded by 32 bytes, or None if there is none."""
    y = (int.from_bytes(data, "little") & ((1 << 255) - 1)) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if (x & 1) != data[31] >> 7:
        x = -x % _P
    return x, y


def _has_small_order(point: tuple[int, int]) -> bool:
    """True when ``8 * point`` is the identity (the curve's cofactor is 8)."""
    x, y = point
    for _ in range(3):  # doubling, with the curve's complete addition law
        t = _D * x * x * y * y
        x, y = (2 * x * y * pow(1 + t, _P - 2, _P) % _P,
                (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P)
    return x == 0 and y == 1


def _verify_strict(public: bytes, signature: bytes, message: bytes) -> bool:
    key = _decompress(public)
    r = _decompress(signature[:32])
    if key is None or r is None or _has_small_order(key) or _has_small_order(r):
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


# ── keys ─────────────────────────────────────────────────────────────────────


def generate_key() -> tuple[bytes, bytes]:
    """A new key pair: ``(32-byte signing seed, 32-byte public key)``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return seed, public_key(seed)


def _private_key(signing_key: Union[bytes, Ed25519PrivateKey]) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(signing_key, Ed25519PrivateKey):
        return signing_key
    seed = bytes(signing_key)
    if len(seed) != 32:
        raise SigningError(f"an Ed25519 signing seed is 32 bytes, not {len(seed)}", path="")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(signing_key: Union[bytes, Ed25519PrivateKey]) -> bytes:
    """The 32-byte public key of a signing seed."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return _private_key(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_key_file(path: PathLike, kind: KeyKind, key: bytes) -> Path:
    """Write a 39-byte key file.  A signing seed's file is created with mode 0600."""
    kind = KeyKind(kind)
    key = bytes(key)
    if len(key) != 32:
        raise SigningError(f"a key is 32 bytes, not {len(key)}", path=os.fspath(path))
    path = Path(path)
    mode = 0o600 if kind is KeyKind.SigningSeed else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        if kind is KeyKind.SigningSeed:
            os.fchmod(f.fileno(), 0o600)  # also when the file existed with a wider mode
        f.write(_KEY_MAGIC + bytes([kind]) + key)
    return path


def read_key_file(path: PathLike) -> tuple[KeyKind, bytes]:
    """``(kind, 32-byte key)`` from a key file; raises :class:`SigningError` if malformed."""
    shown = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise SigningError(f"cannot read key file `{shown}`: {err.strerror or err}",
                           path=shown) from None
    if len(data) != _KEY_FILE_LEN:
        raise SigningError(f"key file `{shown}` is malformed (expected {_KEY_FILE_LEN} "
                           f"bytes, found {len(data)})", path=shown)
    if data[:6] != _KEY_MAGIC:
        raise SigningError(f"key file `{shown}` has invalid magic bytes "
                           f"(not a polyplug key file)", path=shown)
    if data[6] not in (KeyKind.SigningSeed, KeyKind.VerifyingKey):
        raise SigningError(f"key file `{shown}` has unknown key type 0x{data[6]:02x} "
                           f"(expected 0x01 signing seed or 0x02 verifying key)", path=shown)
    kind, key = KeyKind(data[6]), data[7:]
    if kind is KeyKind.VerifyingKey and _decompress(key) is None:
        raise SigningError(f"key file `{shown}` holds {_BAD_POINT}", path=shown)
    return kind, key


# ── signing and verifying ────────────────────────────────────────────────────


def sign_bundle(bundle_dir: PathLike, signing_key: Union[bytes, Ed25519PrivateKey]) -> Path:
    """Sign the bundle at ``bundle_dir``; writes and returns ``<bundle_dir>/bundle.sig``.

    ``signing_key`` is a 32-byte seed (from :func:`generate_key` or a ``.key`` file)
    or an ``Ed25519PrivateKey``.  An existing ``bundle.sig`` is replaced.
    """
    key = _private_key(signing_key)
    digest = bundle_digest(bundle_dir)
    sig_path = Path(bundle_dir) / SIG_FILE
    sig_path.write_bytes(_SIG_MAGIC + bytes([_SIG_VERSION]) + public_key(key) + key.sign(digest))
    return sig_path


class VerifiedBundle(NamedTuple):
    """What :func:`read_verified_bundle` returns."""

    public_key: bytes
    """The key the bundle is signed with."""
    files: dict[str, bytes]
    """The bytes of the files the caller asked for, by ``/``-separated relative path:
    exactly the bytes the signature was checked against."""


def verify_bundle(bundle_dir: PathLike, bundle_name: Optional[str] = None,
                  trusted_keys: Sequence[bytes] = ()) -> bytes:
    """Check ``<bundle_dir>/bundle.sig``; returns the public key the bundle is signed with.

    With ``trusted_keys`` empty, any valid signature is accepted (integrity only);
    otherwise the signing key must be one of them.  ``bundle_name`` (default: the
    directory name) labels the errors, which carry upstream's texts:

    * :class:`MalformedTrustedKey` - a trusted key is not a valid Ed25519 point
    * :class:`UnsignedBundle` - there is no ``bundle.sig``
    * :class:`MalformedSignature` - ``bundle.sig`` has a wrong length, magic or version
    * :class:`UntrustedSigningKey` - signed by a key not in ``trusted_keys``
    * :class:`SignatureVerificationFailed` - the files do not match the signature, or
      the bundle cannot be digested (``reason`` says why)

    The files can change after this returns: to run what was verified, use
    :func:`read_verified_bundle` and load its bytes (the runtime does).
    """
    return read_verified_bundle(bundle_dir, bundle_name, trusted_keys).public_key


def read_verified_bundle(bundle_dir: PathLike, bundle_name: Optional[str] = None,
                         trusted_keys: Sequence[bytes] = (),
                         keep: Optional[Callable[[str], bool]] = None) -> VerifiedBundle:
    """Verify the bundle like :func:`verify_bundle`, keeping the bytes that were verified.

    Every file is read once; its digest and the bytes returned for it are of that one
    read, so a file swapped while the bundle is checked is either what was verified or
    a failed verification, never unverified bytes.  ``keep(relative_path)`` selects
    the files whose bytes are returned (default: none).
    """
    root = Path(bundle_dir)
    name = bundle_name if bundle_name is not None else root.name
    trusted = [bytes(k) for k in trusted_keys]
    for k in trusted:
        if len(k) != 32 or _decompress(k) is None:
            reason = (_BAD_POINT if len(k) == 32
                      else f"an Ed25519 public key is 32 bytes, not {len(k)}")
            raise MalformedTrustedKey(f"host trusted-key allowlist contains a malformed Ed25519 "
                                      f"key for bundle `{name}`: {reason}",
                                      bundle=name, reason=reason)

    def failed(reason: str, cls: type = SignatureVerificationFailed,
               advice: str = "") -> PolyplugError:
        return cls(f"signature verification failed for bundle `{name}`: {reason}"
                   + (f". {advice}" if advice else ""), bundle=name, reason=reason)

    try:
        with open(os.open(root / SIG_FILE, _READ_FLAGS), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(_SIG_LEN + 1)
    except FileNotFoundError:
        raise UnsignedBundle(f"bundle `{name}` is not signed and signature_policy is Required",
                             bundle=name) from None
    except OSError as err:
        raise failed(f"cannot read {SIG_FILE} in bundle `{root}`: {err.strerror or err}") from None
    if len(data) != _SIG_LEN:
        found = len(data) if len(data) <= _SIG_LEN else max(size, len(data))
        raise failed(f"{SIG_FILE} is malformed (expected {_SIG_LEN} bytes, found {found}) "
                     f"in bundle `{root}`", MalformedSignature)
    if data[:6] != _SIG_MAGIC:
        raise failed(f"{SIG_FILE} has invalid magic bytes in bundle `{root}`", MalformedSignature)
    if data[6] != _SIG_VERSION:
        raise failed(f"{SIG_FILE} has unsupported format version {data[6]} in bundle `{root}`",
                     MalformedSignature)
    public, signature = data[7:39], data[39:]
    if _decompress(public) is None:
        raise failed(_BAD_POINT)
    if trusted and public not in trusted:
        raise UntrustedSigningKey(
            f"bundle `{name}` is signed by a key that is not in the host's trusted-key "
            f"allowlist (signature_policy=Required with key pinning)", bundle=name, key=public)
    try:
        files = _read(root, keep or (lambda rel: False))
    except SigningError as err:
        raise failed(str(err)) from err
    if not _verify_strict(public, signature, _digest(root, files)):
        raise failed(_MISMATCH, advice=_mismatch_advice(
            root, [f.rel.decode("utf-8") for f in files]))
    return VerifiedBundle(public, {f.rel.decode("utf-8"): f.data for f in files
                                   if f.data is not None})
