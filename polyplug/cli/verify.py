"""``verify DIR [--key PUB ...]``: check a bundle's signature, optionally pinned to keys."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

from polyplug import _errors, signing
from polyplug.cli._common import reports_failures


def add_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="check a bundle's signature",
                       description="Check DIR/bundle.sig against the bundle's files.  With "
                       "--key, the bundle must also be signed by one of the given public keys.")
    p.add_argument("dir", help="the bundle directory")
    p.add_argument("--key", action="append", default=[], metavar="FILE",
                   help="a trusted public key (.pub); repeatable")
    p.set_defaults(func=run)


def _bundle_label(bundle_dir: signing.PathLike) -> str:
    from polyplug.manifest import read_manifest

    try:
        return read_manifest(bundle_dir).name
    except _errors.PolyplugError:
        return Path(bundle_dir).resolve().name


@reports_failures(_errors.PolyplugError, OSError)
def verify(bundle_dir: signing.PathLike, pub_paths: Sequence[signing.PathLike] = ()) -> int:
    """Check the bundle's signature, pinned to the given ``.pub`` files if any."""
    trusted = []
    for p in pub_paths:
        kind, key = signing.read_key_file(p)
        if kind is not signing.KeyKind.VerifyingKey:
            raise _errors.SigningError(f"key file `{os.fspath(p)}` holds a signing key; "
                                       f"verify takes public keys (.pub files)",
                                       path=os.fspath(p))
        trusted.append(key)
    name = _bundle_label(bundle_dir)
    try:
        public = signing.verify_bundle(bundle_dir, name, trusted)
    except _errors.UnsignedBundle:
        raise _errors.UnsignedBundle(
            f"bundle `{name}` is not signed: there is no {signing.SIG_FILE} in "
            f"{os.fspath(bundle_dir)}; sign it with `python -m polyplug sign "
            f"{os.fspath(bundle_dir)} --key KEY`", bundle=name) from None
    how = ("a trusted key" if trusted
           else "an unpinned key (integrity only: pass --key to check who signed it)")
    print(f"ok: bundle `{name}` is signed by {how}: {public.hex()}")
    return 0


def run(args: argparse.Namespace) -> int:
    return verify(args.dir, args.key)
