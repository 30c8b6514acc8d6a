"""Bundle signing (spec §14): the canonical digest, bundle.sig, key files, strict
verification, the runtime's signature policy and the CLI functions.

Everything runs with real Ed25519 keys on real files; the digest is also recomputed
here from the format description, independently of polyplug.signing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from polyplug import (
    BundleSource,
    LogLevel,
    LuaConfig,
    LuaLoader,
    PluginNotFound,
    ReloadPhaseType,
    RuntimeBuilder,
    RuntimeConfig,
    SignaturePolicy,
    bundle_id,
    guest_contract_id,
    read_manifest,
    signing,
)
from polyplug import _errors as E
from polyplug.cli import keygen, sign, verify
from polyplug.signing import (
    KeyKind,
    bundle_digest,
    generate_key,
    read_key_file,
    sign_bundle,
    verify_bundle,
    write_key_file,
)

FIXTURE = Path(__file__).parent / "fixtures" / "test_plugin_lua"
ADD_ID = guest_contract_id("test.add", 1)
P = 2**255 - 19
D = -121665 * pow(121666, P - 2, P) % P


# ── helpers ──────────────────────────────────────────────────────────────────


def reference_digest(root: Path) -> bytes:
    """The §14.1 digest, written out plainly from the spec for cross-checking."""
    files = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            full = Path(dirpath) / n
            rel = full.relative_to(root).as_posix().encode()
            if rel != b"bundle.sig":
                files.append((rel, hashlib.sha256(full.read_bytes()).digest()))
    files.sort()
    buf = b"polyplug-bundle-sig\0" + b"\x01" + struct.pack("<Q", len(files))
    for rel, h in files:
        buf += rel + b"\0" + h
    return hashlib.sha256(buf).digest()


def not_a_point() -> bytes:
    """32 bytes that decode to no point of edwards25519 (x^2 would be a non-residue)."""
    for i in range(2, 256):
        y = i
        x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
        if pow(x2, (P - 1) // 2, P) == P - 1:
            key = bytes([i]) + bytes(31)
            Ed25519PublicKey.from_public_bytes(key)  # cryptography takes it regardless
            return key
    raise AssertionError("unreachable")


def make_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "b.txt").write_bytes(b"bee")
    (root / "a.txt").write_bytes(b"ay")
    (root / "a").mkdir()
    (root / "a" / "z.lua").write_bytes(b"return 1")
    (root / "a" / "deep").mkdir()
    (root / "a" / "deep" / "x.bin").write_bytes(bytes(range(256)) * 300)
    (root / "empty-dir").mkdir()
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return generate_key()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A private copy of the Lua fixture bundle."""
    d = tmp_path / "test_plugin_lua"
    shutil.copytree(FIXTURE, d)
    return d


def sig_bytes(root: Path) -> bytes:
    return (root / "bundle.sig").read_bytes()


# ── the digest ───────────────────────────────────────────────────────────────


def test_digest_matches_the_spec_layout(tree: Path) -> None:
    assert bundle_digest(tree) == reference_digest(tree)
    assert len(bundle_digest(tree)) == 32


def test_digest_of_a_one_file_bundle_by_hand(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"hello")
    buf = (b"polyplug-bundle-sig\x00\x01" + (1).to_bytes(8, "little")
           + b"f\x00" + hashlib.sha256(b"hello").digest())
    assert bundle_digest(tmp_path) == hashlib.sha256(buf).digest()


def test_digest_sorts_by_raw_path_bytes_not_by_tree_order(tmp_path: Path) -> None:
    # "a.txt" (0x2e) sorts before "a/z" (0x2f), which sorts before "aa" and "B" < "a"
    for rel in ("a/z", "a.txt", "aa", "B", "é"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(rel)
    order = [f.rel for f in signing._read_bundle(tmp_path, keep=lambda rel: False)]
    assert order == [b"B", b"a.txt", b"a/z", b"aa", "é".encode()]
    assert bundle_digest(tmp_path) == reference_digest(tmp_path)


def test_digest_is_deterministic_and_independent_of_creation_order(tmp_path: Path) -> None:
    one = make_tree(tmp_path / "one")
    two = tmp_path / "two"
    two.mkdir()
    for rel in ("empty-dir", "a/deep/x.bin", "b.txt", "a/z.lua", "a.txt"):  # other order
        src = one / rel
        (two / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            (two / rel).mkdir()
        else:
            (two / rel).write_bytes(src.read_bytes())
    assert bundle_digest(one) == bundle_digest(one) == bundle_digest(two)


def test_digest_skips_the_root_bundle_sig_only(tree: Path) -> None:
    before = bundle_digest(tree)
    (tree / "bundle.sig").write_bytes(b"anything")
    assert bundle_digest(tree) == before
    (tree / "a" / "bundle.sig").write_bytes(b"nested one counts")
    assert bundle_digest(tree) != before


def test_digest_sees_every_change(tree: Path) -> None:
    seen = {bundle_digest(tree)}
    (tree / "a" / "deep" / "x.bin").write_bytes(b"changed")
    seen.add(bundle_digest(tree))
    (tree / "new").write_bytes(b"")  # even an empty file
    seen.add(bundle_digest(tree))
    (tree / "new").rename(tree / "new2")  # a rename
    seen.add(bundle_digest(tree))
    (tree / "new2").unlink()
    (tree / "empty-dir" / "new2").write_bytes(b"")  # same name, other directory
    seen.add(bundle_digest(tree))
    assert len(seen) == 5


def test_digest_rejects_a_symlink(tree: Path) -> None:
    (tree / "a" / "link").symlink_to(tree / "a.txt")
    with pytest.raises(E.SigningError, match=r"symlinks are not allowed in a signable bundle "
                       r"`.*tree`: .*a/link"):
        bundle_digest(tree)


def test_digest_rejects_a_symlink_to_a_directory_outside(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    (tree / "escape").symlink_to(outside)
    with pytest.raises(E.SigningError, match="symlinks are not allowed"):
        bundle_digest(tree)


def test_digest_rejects_a_fifo(tree: Path) -> None:
    os.mkfifo(tree / "pipe")
    with pytest.raises(E.SigningError, match=r"irregular file \(not a regular file or "
                       r"directory\) is not allowed in a signable bundle"):
        bundle_digest(tree)


def test_digest_rejects_a_non_utf8_name(tree: Path) -> None:
    try:
        with open(os.path.join(os.fsencode(tree), b"bad-\xff"), "wb") as f:
            f.write(b"x")
    except OSError:
        pytest.skip("this filesystem refuses non-UTF-8 names")
    with pytest.raises(E.SigningError, match=r"path is not valid UTF-8 .*bad-\\xff"):
        bundle_digest(tree)


def test_digest_rejects_an_empty_bundle(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(E.SigningError, match=r"bundle `.*` contains no signable files"):
        bundle_digest(tmp_path)
    (tmp_path / "bundle.sig").write_bytes(b"x" * 103)  # bundle.sig alone does not count
    with pytest.raises(E.SigningError, match="contains no signable files"):
        bundle_digest(tmp_path)


def test_digest_rejects_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(E.SigningError, match="bundle path is not a directory"):
        bundle_digest(tmp_path / "nope")


# ── sign and verify ──────────────────────────────────────────────────────────


def test_sign_writes_the_103_byte_format(tree: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    path = sign_bundle(tree, seed)
    assert path == tree / "bundle.sig"
    data = path.read_bytes()
    assert len(data) == 103
    assert data[:6] == b"PPSIG\0" and data[6] == 1 and data[7:39] == public
    # an independent check of the signature with cryptography directly
    Ed25519PublicKey.from_public_bytes(public).verify(data[39:], reference_digest(tree))


def test_sign_verify_roundtrip_tofu_and_pinned(tree: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    sign_bundle(tree, seed)
    assert verify_bundle(tree, "t") == public
    assert verify_bundle(tree, "t", [generate_key()[1], public]) == public


def test_sign_accepts_a_private_key_object_and_resigns(tree: Path) -> None:
    key = Ed25519PrivateKey.generate()
    sign_bundle(tree, key)
    first = sig_bytes(tree)
    sign_bundle(tree, key)  # re-signing ignores the old bundle.sig
    assert sig_bytes(tree) == first  # Ed25519 is deterministic
    verify_bundle(tree)


def test_sign_rejects_a_short_seed(tree: Path) -> None:
    with pytest.raises(E.SigningError, match="32 bytes, not 31"):
        sign_bundle(tree, b"x" * 31)
    assert not (tree / "bundle.sig").exists()


@pytest.mark.parametrize("tamper", ["edit", "add", "remove", "rename", "add-empty-nested"])
def test_any_change_after_signing_fails_verification(tree: Path, keys: tuple[bytes, bytes],
                                                     tamper: str) -> None:
    sign_bundle(tree, keys[0])
    if tamper == "edit":
        (tree / "a" / "z.lua").write_bytes(b"return 2")
    elif tamper == "add":
        (tree / "extra.lua").write_bytes(b"os.execute('x')")
    elif tamper == "remove":
        (tree / "b.txt").unlink()
    elif tamper == "rename":
        (tree / "b.txt").rename(tree / "c.txt")
    else:
        (tree / "empty-dir" / "x").write_bytes(b"")
    with pytest.raises(E.SignatureVerificationFailed) as info:
        verify_bundle(tree, "tb")
    files = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")
                   if p.is_file() and p.name != "bundle.sig")
    # which bundle, which files, and what to do
    assert str(info.value) == (
        "signature verification failed for bundle `tb`: signature error: Verification "
        f"equation was not satisfied. The {len(files)} file(s) in `{tree}` ({', '.join(files)}) "
        "are not the ones bundle.sig was made for: a file was changed, added, removed or "
        "renamed after signing, or bundle.sig was replaced. If the change is yours, sign the "
        f"bundle again (`python -m polyplug sign {tree} --key KEY`); otherwise do not load it.")
    assert info.value.bundle == "tb"
    assert info.value.reason == "signature error: Verification equation was not satisfied"
    assert type(info.value) is E.SignatureVerificationFailed


def test_flipped_signature_bit_fails(tree: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(tree, keys[0])
    data = bytearray(sig_bytes(tree))
    data[60] ^= 1
    (tree / "bundle.sig").write_bytes(bytes(data))
    with pytest.raises(E.SignatureVerificationFailed, match="Verification equation"):
        verify_bundle(tree)


def test_swapped_embedded_key_fails(tree: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(tree, keys[0])
    data = sig_bytes(tree)
    other = generate_key()[1]
    (tree / "bundle.sig").write_bytes(data[:7] + other + data[39:])
    with pytest.raises(E.SignatureVerificationFailed, match="Verification equation"):
        verify_bundle(tree)


def test_a_symlink_in_a_signed_bundle_fails_verification(tree: Path,
                                                          keys: tuple[bytes, bytes]) -> None:
    sign_bundle(tree, keys[0])
    (tree / "link").symlink_to(tree / "b.txt")
    with pytest.raises(E.SignatureVerificationFailed) as info:
        verify_bundle(tree, "tb")
    assert str(info.value).startswith("signature verification failed for bundle `tb`: "
                                      "symlinks are not allowed in a signable bundle")
    assert isinstance(info.value.__cause__, E.SigningError)


def test_missing_signature_is_reported_before_the_walk(tree: Path) -> None:
    (tree / "link").symlink_to(tree / "b.txt")  # would fail the digest
    with pytest.raises(E.UnsignedBundle) as info:
        verify_bundle(tree, "tb")
    assert str(info.value) == "bundle `tb` is not signed and signature_policy is Required"
    assert info.value.bundle == "tb"


@pytest.mark.parametrize("size", [0, 1, 102, 104, 206])
def test_malformed_length(tree: Path, size: int) -> None:
    (tree / "bundle.sig").write_bytes(b"P" * size)
    with pytest.raises(E.MalformedSignature) as info:
        verify_bundle(tree, "tb")
    assert str(info.value) == (f"signature verification failed for bundle `tb`: bundle.sig is "
                               f"malformed (expected 103 bytes, found {size}) in bundle `{tree}`")
    assert info.value.reason.startswith("bundle.sig is malformed")
    assert isinstance(info.value, E.SignatureVerificationFailed)


def test_malformed_magic_and_version(tree: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(tree, keys[0])
    good = sig_bytes(tree)
    (tree / "bundle.sig").write_bytes(b"PPSIG\1" + good[6:])
    with pytest.raises(E.MalformedSignature) as info:
        verify_bundle(tree, "tb")
    assert info.value.reason == f"bundle.sig has invalid magic bytes in bundle `{tree}`"
    for version in (0, 2, 255):
        (tree / "bundle.sig").write_bytes(good[:6] + bytes([version]) + good[7:])
        with pytest.raises(E.MalformedSignature) as info:
            verify_bundle(tree, "tb")
        assert info.value.reason == (f"bundle.sig has unsupported format version {version} "
                                     f"in bundle `{tree}`")


def test_embedded_key_that_is_not_a_point(tree: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(tree, keys[0])
    good = sig_bytes(tree)
    (tree / "bundle.sig").write_bytes(good[:7] + not_a_point() + good[39:])
    with pytest.raises(E.SignatureVerificationFailed, match="Cannot decompress Edwards point"):
        verify_bundle(tree)


def test_bundle_sig_that_is_a_directory(tree: Path) -> None:
    (tree / "bundle.sig").mkdir()
    with pytest.raises(E.SignatureVerificationFailed, match="cannot read bundle.sig"):
        verify_bundle(tree)


def test_small_order_key_is_refused_although_plain_ed25519_accepts_it(tree: Path) -> None:
    """The identity point as public key: s*B == R holds for any message if s is R's
    scalar.  OpenSSL's verification accepts that; strict verification must not."""
    identity = (1).to_bytes(32, "little")
    seed = os.urandom(32)
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    order = 2**252 + 27742317777372353535851937790883648493
    r_enc = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    forged = r_enc + (a % order).to_bytes(32, "little")
    digest = bundle_digest(tree)
    Ed25519PublicKey.from_public_bytes(identity).verify(forged, digest)  # plain: accepted
    (tree / "bundle.sig").write_bytes(b"PPSIG\0\1" + identity + forged)
    with pytest.raises(E.SignatureVerificationFailed, match="Verification equation"):
        verify_bundle(tree)


def test_pinning(tree: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    sign_bundle(tree, seed)
    other = generate_key()[1]
    with pytest.raises(E.UntrustedSigningKey) as info:
        verify_bundle(tree, "tb", [other])
    assert str(info.value) == ("bundle `tb` is signed by a key that is not in the host's "
                               "trusted-key allowlist (signature_policy=Required with key "
                               "pinning)")
    assert info.value.key == public and info.value.bundle == "tb"


def test_malformed_trusted_key_fails_before_anything_else(tmp_path: Path) -> None:
    bad = not_a_point()
    with pytest.raises(E.MalformedTrustedKey) as info:
        verify_bundle(tmp_path, "tb", [generate_key()[1], bad])  # unsigned, empty dir
    assert str(info.value) == (
        "host trusted-key allowlist contains a malformed Ed25519 key for bundle `tb`: "
        "invalid Ed25519 key data: signature error: Cannot decompress Edwards point")
    with pytest.raises(E.MalformedTrustedKey, match="32 bytes, not 5"):
        verify_bundle(tmp_path, "tb", [b"short"])


def test_point_decoding_agrees_with_real_keys() -> None:
    for _ in range(50):
        public = generate_key()[1]
        point = signing._decompress(public)
        assert point is not None and not signing._has_small_order(point)
    assert signing._decompress(not_a_point()) is None
    assert signing._has_small_order(signing._decompress((1).to_bytes(32, "little")))
    minus_one = (P - 1).to_bytes(32, "little")  # (0, -1), order 2
    assert signing._has_small_order(signing._decompress(minus_one))


def test_error_classes_sit_under_loader_error() -> None:
    for cls in (E.UnsignedBundle, E.UntrustedSigningKey, E.SignatureVerificationFailed,
                E.MalformedSignature, E.MalformedTrustedKey):
        assert issubclass(cls, E.LoaderError)
    assert issubclass(E.SigningError, E.PolyplugError) and issubclass(E.SigningError, ValueError)
    assert "bundle='b'" in repr(E.UnsignedBundle("m", bundle="b"))


# ── key files ────────────────────────────────────────────────────────────────


def test_key_files_roundtrip(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    write_key_file(tmp_path / "k.key", KeyKind.SigningSeed, seed)
    write_key_file(tmp_path / "k.pub", 2, public)
    assert (tmp_path / "k.key").read_bytes() == b"PPKEY\0\x01" + seed
    assert (tmp_path / "k.pub").read_bytes() == b"PPKEY\0\x02" + public
    assert read_key_file(tmp_path / "k.key") == (KeyKind.SigningSeed, seed)
    assert read_key_file(tmp_path / "k.pub") == (KeyKind.VerifyingKey, public)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert signing.public_key(seed) == public


def test_signing_key_file_mode_is_tightened_on_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_key_file(path, KeyKind.SigningSeed, bytes(32))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("data,match", [
    (b"", r"malformed \(expected 39 bytes, found 0\)"),
    (b"PPKEY\0\x01" + bytes(31), r"malformed \(expected 39 bytes, found 38\)"),
    (b"PPKEY\0\x01" + bytes(33), r"malformed \(expected 39 bytes, found 40\)"),
    (b"PPSIG\0\x01" + bytes(32), "invalid magic bytes"),
    (b"PPKEY\0\x03" + bytes(32), "unknown key type 0x03"),
    (b"PPKEY\0\x00" + bytes(32), "unknown key type 0x00"),
])
def test_malformed_key_files(tmp_path: Path, data: bytes, match: str) -> None:
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(E.SigningError, match=match) as info:
        read_key_file(tmp_path / "bad")
    assert info.value.path == str(tmp_path / "bad")


def test_public_key_file_holding_a_non_point(tmp_path: Path) -> None:
    (tmp_path / "bad.pub").write_bytes(b"PPKEY\0\x02" + not_a_point())
    with pytest.raises(E.SigningError, match="Cannot decompress Edwards point"):
        read_key_file(tmp_path / "bad.pub")


def test_missing_key_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(E.SigningError, match="cannot read key file"):
        read_key_file(tmp_path / "nope")
    with pytest.raises(E.SigningError, match="32 bytes, not 3"):
        write_key_file(tmp_path / "x", KeyKind.VerifyingKey, b"abc")
    with pytest.raises(ValueError):
        write_key_file(tmp_path / "x", 7, bytes(32))


# ── the runtime's signature policy ───────────────────────────────────────────


def runtime(policy: SignaturePolicy, trusted: tuple[bytes, ...] = (),
            logs: list[tuple[Any, str, str]] | None = None, **kw: Any) -> Any:
    config = RuntimeConfig(signature_policy=policy, trusted_keys=trusted, **kw)
    if logs is not None:
        config.log = lambda level, scope, msg: logs.append((level, scope, msg))
        config.log_max_level = LogLevel.Trace
    return RuntimeBuilder().config(config).loader(LuaLoader()).build()


def registered(rt: Any) -> bool:
    try:
        rt.find_guest_contract(ADD_ID, 1)
        return True
    except PluginNotFound:
        return False


def test_off_loads_unsigned_and_tampered_bundles(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    with runtime(SignaturePolicy.Off) as rt:
        rt.load_bundle(bundle)
        assert registered(rt)
    sign_bundle(bundle, keys[0])
    (bundle / "extra.txt").write_text("tampered")
    with runtime(SignaturePolicy.Off) as rt:
        rt.load_bundle(bundle)
        assert registered(rt)


def test_required_rejects_unsigned_and_registers_nothing(bundle: Path) -> None:
    with runtime(SignaturePolicy.Required) as rt:
        revision = rt.revision()
        with pytest.raises(E.UnsignedBundle) as info:
            rt.load_bundle(bundle)
        assert str(info.value) == ("bundle `test_plugin_lua` is not signed and "
                                   "signature_policy is Required")
        assert not registered(rt) and rt.list_bundles() == []
        assert rt.revision() == revision


def test_required_accepts_a_signed_bundle_tofu(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(bundle, keys[0])
    with runtime(SignaturePolicy.Required) as rt:
        m = rt.load_bundle(bundle)
        assert registered(rt) and rt.list_bundles() == [m.id]
        # a path to the entry file means its directory, which is what gets checked
        rt.unload_bundle(m.id)
        rt.load_bundle(bundle / "test_plugin.lua")
        assert registered(rt)


def test_required_rejects_a_tampered_bundle(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(bundle, keys[0])
    with (bundle / "test_plugin.lua").open("a") as f:
        f.write("\n-- harmless?\n")
    with runtime(SignaturePolicy.Required) as rt:
        with pytest.raises(E.SignatureVerificationFailed,
                           match="Verification equation was not satisfied"):
            rt.load_bundle(bundle)
        assert not registered(rt)


def test_required_with_pinning(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    sign_bundle(bundle, seed)
    other = generate_key()[1]
    with runtime(SignaturePolicy.Required, (other,)) as rt:
        with pytest.raises(E.UntrustedSigningKey, match="not in the host's trusted-key"):
            rt.load_bundle(bundle)
        assert not registered(rt)
    with runtime(SignaturePolicy.Required, (other, public)) as rt:
        rt.load_bundle(bundle)
        assert registered(rt)


def test_required_with_a_malformed_trusted_key(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    sign_bundle(bundle, keys[0])
    with runtime(SignaturePolicy.Required, (keys[1], not_a_point())) as rt:
        with pytest.raises(E.MalformedTrustedKey, match="Cannot decompress Edwards point"):
            rt.load_bundle(bundle)
        assert not registered(rt)


def test_signature_is_checked_before_function_counts(bundle: Path) -> None:
    text = (bundle / "manifest.toml").read_text().replace('"test.add@1" = 3', "")
    (bundle / "manifest.toml").write_text(text)  # would be a FunctionCountMismatch
    with runtime(SignaturePolicy.Required) as rt, pytest.raises(E.UnsignedBundle):
        rt.load_bundle(bundle)


def test_warn_only_logs_and_loads(bundle: Path) -> None:
    logs: list[tuple[Any, str, str]] = []
    with runtime(SignaturePolicy.WarnOnly, logs=logs) as rt:
        rt.load_bundle(bundle)
        assert registered(rt)
    warnings = [(lvl, scope, msg) for lvl, scope, msg in logs if "signature" in msg]
    assert warnings == [(LogLevel.Warn, "runtime",
                         ("bundle `test_plugin_lua`: signature check failed (WarnOnly — "
                          "continuing): bundle `test_plugin_lua` is not signed and "
                          "signature_policy is Required"))]


def test_warn_only_with_builder_logger_and_tampering(bundle: Path,
                                                     keys: tuple[bytes, bytes]) -> None:
    sign_bundle(bundle, keys[0])
    (bundle / "extra.lua").write_text("return 1")
    logs: list[tuple[Any, str, str]] = []
    config = RuntimeConfig(signature_policy=SignaturePolicy.WarnOnly)
    builder = RuntimeBuilder().config(config).logger(lambda *rec: logs.append(rec))
    with builder.loader(LuaLoader()).build() as rt:
        rt.load_bundle(bundle)
        assert registered(rt)
    assert [m for _, _, m in logs if "WarnOnly" in m] == [
        ("bundle `test_plugin_lua`: signature check failed (WarnOnly — continuing): "
         "signature verification failed for bundle `test_plugin_lua`: signature error: "
         "Verification equation was not satisfied. The 3 file(s) in "
         f"`{bundle}` (extra.lua, manifest.toml, test_plugin.lua) are not the ones bundle.sig "
         "was made for: a file was changed, added, removed or renamed after signing, or "
         "bundle.sig was replaced. If the change is yours, sign the bundle again "
         f"(`python -m polyplug sign {bundle} --key KEY`); otherwise do not load it.")]


def test_warn_only_is_silent_for_a_good_signature(bundle: Path,
                                                  keys: tuple[bytes, bytes]) -> None:
    sign_bundle(bundle, keys[0])
    logs: list[tuple[Any, str, str]] = []
    with runtime(SignaturePolicy.WarnOnly, (keys[1],), logs=logs) as rt:
        rt.load_bundle(bundle)
    assert not [m for _, _, m in logs if "signature" in m]


def test_in_memory_sources(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    code = (bundle / "test_plugin.lua").read_text()
    with runtime(SignaturePolicy.Required) as rt:
        for source in (BundleSource.Code(code), BundleSource.Bytes(code.encode())):
            with pytest.raises(E.UnsignedBundle, match="in-memory source .* cannot be signed"):
                rt.load_bundle_from_source(manifest, source)
        assert not registered(rt)
    logs: list[tuple[Any, str, str]] = []
    with runtime(SignaturePolicy.WarnOnly, logs=logs) as rt:
        rt.load_bundle_from_source(manifest, BundleSource.Code(code))  # warned, then loaded
        assert registered(rt)
    assert [m for _, _, m in logs if "in-memory source" in m] == [
        "bundle `test_plugin_lua`: signature check failed (WarnOnly — continuing): bundle "
        "`test_plugin_lua` comes from an in-memory source (BundleSource.Code), which cannot be "
        "signed, and signature_policy is WarnOnly"]


def test_load_bundle_from_source_with_a_path(bundle: Path, keys: tuple[bytes, bytes]) -> None:
    manifest = read_manifest(bundle)
    with runtime(SignaturePolicy.Required) as rt:
        with pytest.raises(E.UnsignedBundle):
            rt.load_bundle_from_source(manifest, BundleSource.Path(bundle))
        sign_bundle(bundle, keys[0])
        rt.load_bundle_from_source(manifest, BundleSource.Path(bundle))
        assert registered(rt)


def test_reload_checks_the_signature_and_keeps_the_old_version(
        bundle: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    sign_bundle(bundle, seed)
    phases: list[Any] = []
    with runtime(SignaturePolicy.Required, (public,), hot_reload_enabled=True,
                 on_reload=phases.append) as rt:
        rt.load_bundle(bundle)
        rt.reload_bundle(bundle)  # still signed: fine
        assert [p.type for p in phases] == [ReloadPhaseType.Preparing, ReloadPhaseType.Reloaded]
        phases.clear()
        with (bundle / "test_plugin.lua").open("a") as f:
            f.write("\n-- edited without re-signing\n")
        with pytest.raises(E.SignatureVerificationFailed):
            rt.reload_bundle(bundle)
        assert [p.type for p in phases] == [ReloadPhaseType.Failed]
        assert "signature verification failed" in phases[0].reason
        assert registered(rt)  # the old version keeps serving
        sign_bundle(bundle, seed)
        rt.reload_bundle(bundle)
        assert registered(rt)


def test_reload_under_warn_only_logs_and_reloads(bundle: Path) -> None:
    logs: list[tuple[Any, str, str]] = []
    phases: list[Any] = []
    with runtime(SignaturePolicy.WarnOnly, logs=logs, hot_reload_enabled=True,
                 on_reload=phases.append) as rt:
        rt.load_bundle(bundle)
        rt.reload_bundle(bundle)
    assert ReloadPhaseType.Reloaded in [p.type for p in phases]
    assert len([m for _, _, m in logs if "WarnOnly" in m]) == 2


# ── what runs is what was verified (issue 12.11) ─────────────────────────────

PROBE_MAIN = """
local ffi = require("ffi")
local helper = require("helper")
local function put(out, v) ffi.cast("uint32_t *", ffi.cast("uintptr_t", out))[0] = v end
function polyplug_init()
    return { ["sig.probe"] = { factory = function() return {} end, functions = {
        [0] = function(_, _, out) put(out, helper.value) end,
        [1] = function(_, _, out) put(out, require("lib.lazy").value) end,
        [2] = function() require("later") end,
        [3] = function() require("native") end,
    } } }, { code = 0 }
end
"""


def probe_bundle(root: Path, seed: bytes) -> Path:
    """A signed bundle: main.lua requires helper at init and lib.lazy at call time."""
    root.mkdir()
    (root / "manifest.toml").write_text(
        f'name = "probe"\nid = {bundle_id("probe")}\nversion = "1.0.0"\nloader = "lua"\n'
        'file = "main.lua"\nprovides = ["sig.probe@1"]\n'
        '[function_count]\n"sig.probe@1" = 4\n')
    (root / "main.lua").write_text(PROBE_MAIN)
    (root / "helper.lua").write_text("return { value = 1 }\n")
    (root / "lib").mkdir()
    (root / "lib" / "lazy.lua").write_text("return { value = 2 }\n")
    (root / "notes.txt").write_text("signed, but no loader reads it\n")
    sign_bundle(root, seed)
    return root


def probe(rt: Any, fn: int) -> int:
    return int(rt.contract("sig.probe", 1).function(fn, [], "u32")())


def test_files_swapped_during_loads_never_run_unsigned_code(
        tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    # The entry file and a module it requires at init are swapped between their signed
    # and unsigned contents while the bundle loads, over and over: each load either
    # fails verification or runs the signed code (upstream ran unsigned code in 226 of
    # 1,241 loads: it hashed the files, then read them again).
    import threading
    from collections import Counter

    seed, public = keys
    bundle = probe_bundle(tmp_path / "probe", seed)
    versions = {}
    for rel in ("main.lua", "helper.lua"):
        signed = (bundle / rel).read_bytes()
        versions[rel] = (signed, signed.replace(b"helper.value", b"666")
                         .replace(b"value = 1", b"value = 666"))
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for which in (1, 0):
                for rel, pair in versions.items():
                    tmp = bundle / f".{rel}.tmp"
                    tmp.write_bytes(pair[which])
                    os.replace(tmp, bundle / rel)

    swapper = threading.Thread(target=swap, daemon=True)
    seen: Counter[Any] = Counter()
    with runtime(SignaturePolicy.Required, (public,)) as rt:
        swapper.start()
        try:
            for _ in range(3000):
                try:
                    m = rt.load_bundle(bundle)
                except E.SignatureVerificationFailed:
                    seen["refused"] += 1
                else:
                    seen[probe(rt, 0)] += 1
                    rt.unload_bundle(m.id)
                if seen["refused"] >= 25 and seen[1] >= 25:
                    break
        finally:
            stop.set()
            swapper.join()
    assert set(seen) <= {"refused", 1}, seen
    assert seen["refused"] >= 25 and seen[1] >= 25, seen  # both outcomes were exercised


@pytest.mark.parametrize("sandbox", ["none", "restricted"])
def test_modules_required_later_come_from_the_verified_bytes(
        tmp_path: Path, keys: tuple[bytes, bytes], sandbox: str) -> None:
    seed, public = keys
    bundle = probe_bundle(tmp_path / "probe", seed)
    config = RuntimeConfig(signature_policy=SignaturePolicy.Required, trusted_keys=(public,))
    loader = LuaLoader(LuaConfig(sandbox=sandbox))  # type: ignore[arg-type]
    with RuntimeBuilder().config(config).loader(loader).build() as rt:
        rt.load_bundle(bundle)
        # after the load: a module is changed and others are added on disk
        (bundle / "lib" / "lazy.lua").write_text("return { value = 666 }\n")
        (bundle / "later.lua").write_text("return {}\n")
        (bundle / "native.so").write_bytes(b"\x7fELF not really")
        assert probe(rt, 1) == 2  # the verified lib/lazy.lua
        contract = rt.contract("sig.probe", 1)
        with pytest.raises(E.PolyplugError) as info:
            contract.function(2, [], None)()
        assert f"no file '{bundle}/later.lua' among the signed bundle's verified files" in str(
            info.value)
        # no C module either (the restricted profile never loads any)
        expected = "not found" if sandbox == "restricted" else "no C modules: the bundle is signed"
        with pytest.raises(E.PolyplugError, match=expected):
            contract.function(3, [], None)()


def test_a_reload_runs_the_verified_bytes_too(tmp_path: Path, keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    bundle = probe_bundle(tmp_path / "probe", seed)
    with runtime(SignaturePolicy.Required, (public,), hot_reload_enabled=True) as rt:
        rt.load_bundle(bundle)
        (bundle / "helper.lua").write_text("return { value = 7 }\n")
        sign_bundle(bundle, seed)
        rt.reload_bundle(bundle)
        (bundle / "helper.lua").write_text("return { value = 666 }\n")  # unsigned again
        assert probe(rt, 0) == 7
        (bundle / "lib" / "lazy.lua").write_text("return { value = 666 }\n")
        assert probe(rt, 1) == 2


def test_the_manifest_loaded_is_the_verified_one(tmp_path: Path,
                                                 keys: tuple[bytes, bytes]) -> None:
    seed, public = keys
    bundle = probe_bundle(tmp_path / "probe", seed)
    with runtime(SignaturePolicy.Required, (public,)) as rt:
        m = rt.load_bundle(bundle)
        assert (m.name, m.file, m.function_count) == ("probe", "main.lua", {"sig.probe@1": 4})
        assert rt.manifest("probe") == m


def test_filesets_hold_normalised_relative_paths() -> None:
    from polyplug import ffi, lib

    fs = ffi.gc(lib.pp_fileset_new(), lib.pp_fileset_release)

    def add(path: bytes, data: bytes = b"x") -> str:
        err = ffi.new("pp_error *")
        keep = [ffi.new("char[]", path), ffi.new("char[]", data)]
        rc = lib.pp_fileset_add(fs, (keep[0], len(path)), (keep[1], len(data)), err)
        return ffi.string(err.message).decode() if rc else ""

    def get(path: bytes) -> bytes | None:
        out = ffi.new("StringView *")
        keep = ffi.new("char[]", path)
        if not lib.pp_fileset_get(fs, (keep, len(path)), out):
            return None
        return bytes(ffi.buffer(out.ptr, out.len))

    assert add(b"./a//b/../main.lua", b"main") == ""
    assert add(b"lib/x.lua", b"") == ""
    for bad in (b"../up.lua", b"/etc/passwd", b"a/../../up.lua", b"", b"."):
        assert "is not a path inside the bundle" in add(bad)
    assert "was added twice" in add(b"a/main.lua")
    assert "NUL byte" in add(b"a\0b")
    assert get(b"a/main.lua") == b"main" and get(b"lib/./x.lua") == b""
    assert get(b"main.lua") is None and get(b"../a/main.lua") is None
    assert lib.pp_fileset_len(fs) == 2
    # attaching a set to a manifest document seals it
    from polyplug.manifest import manifest_doc_from_text

    doc = manifest_doc_from_text(b'name = "x"\nid = 1\nloader = "lua"\nfile = "a/main.lua"\n',
                                 "/nonexistent")
    lib.pp_manifest_doc_set_files(doc, fs)
    assert lib.pp_manifest_doc_view(doc).files == fs
    assert "can no longer change" in add(b"late.lua")
    assert get(b"a/main.lua") == b"main" and get(b"lib/x.lua") == b"" and get(b"z") is None
    del doc  # the document's reference goes; ours keeps the set
    assert get(b"a/main.lua") == b"main"


# ── CLI commands ────────────────────────────────────────────────────────────


def test_cli_keygen_sign_verify(tmp_path: Path, bundle: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "keys" / "release"
    prefix.parent.mkdir()
    assert keygen.keygen(prefix) == 0
    out = capsys.readouterr().out
    kind, seed = read_key_file(f"{prefix}.key")
    assert kind is KeyKind.SigningSeed
    kind, public = read_key_file(f"{prefix}.pub")
    assert kind is KeyKind.VerifyingKey and signing.public_key(seed) == public
    assert stat.S_IMODE(Path(f"{prefix}.key").stat().st_mode) == 0o600
    assert public.hex() in out and "keep it secret" in out

    assert keygen.keygen(prefix) == 1  # no silent overwrite of a signing key
    assert "already exist" in capsys.readouterr().err
    assert read_key_file(f"{prefix}.key")[1] == seed

    assert sign.sign(bundle, f"{prefix}.key") == 0
    assert "bundle.sig" in capsys.readouterr().out
    assert verify_bundle(bundle, "x", [public]) == public

    assert verify.verify(bundle, [f"{prefix}.pub"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: bundle `test_plugin_lua` is signed by a trusted key")
    assert verify.verify(bundle, []) == 0
    assert "integrity only" in capsys.readouterr().out

    assert keygen.keygen(tmp_path / "other") == 0
    capsys.readouterr()
    assert verify.verify(bundle, [tmp_path / "other.pub"]) == 1
    assert capsys.readouterr().err.startswith("error: UntrustedSigningKey: bundle "
                                              "`test_plugin_lua` is signed by a key")
    (bundle / "test_plugin.lua").write_text("-- changed")
    assert verify.verify(bundle, [f"{prefix}.pub"]) == 1
    assert "error: SignatureVerificationFailed:" in capsys.readouterr().err

    assert keygen.keygen(prefix, force=True) == 0
    assert read_key_file(f"{prefix}.key")[1] != seed


def test_cli_errors(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keygen.keygen(tmp_path / "k") == 0
    capsys.readouterr()
    assert sign.sign(bundle, tmp_path / "k.pub") == 1  # a public key cannot sign
    assert "holds a public key" in capsys.readouterr().err
    assert verify.verify(bundle, [tmp_path / "k.key"]) == 1
    assert "holds a signing key" in capsys.readouterr().err
    assert verify.verify(bundle, []) == 1
    # the CLI user never set a signature_policy: say what is missing and what to do
    assert capsys.readouterr().err == (
        f"error: UnsignedBundle: bundle `test_plugin_lua` is not signed: there is no bundle.sig "
        f"in {bundle}; sign it with `python -m polyplug sign {bundle} --key KEY`\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sign.sign(empty, tmp_path / "k.key") == 1
    assert "error: SigningError: bundle" in capsys.readouterr().err
    assert sign.sign(bundle, tmp_path / "missing.key") == 1
    assert "cannot read key file" in capsys.readouterr().err


def test_add_cli_commands(tmp_path: Path, bundle: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (keygen, sign, verify):
        command.add_parser(sub)

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    prefix = str(tmp_path / "k")
    assert run("keygen", prefix) == 0
    assert run("keygen", prefix) == 1
    assert run("keygen", prefix, "--force") == 0
    assert run("sign", str(bundle), "--key", prefix + ".key") == 0
    assert run("verify", str(bundle)) == 0
    assert run("verify", str(bundle), "--key", prefix + ".pub", "--key", prefix + ".pub") == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run("sign", str(bundle))  # --key is required
