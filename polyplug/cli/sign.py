"""``sign DIR --key FILE``: sign a bundle (writes ``DIR/bundle.sig``, upstream's format)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from polyplug import _errors, signing
from polyplug.cli._common import reports_failures


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign a bundle (writes DIR/bundle.sig)")
    p.add_argument("dir", help="the bundle directory")
    p.add_argument("--key", required=True, metavar="FILE", help="the signing key (.key)")
    p.set_defaults(func=run)


@reports_failures(_errors.PolyplugError, OSError)
def sign(bundle_dir: signing.PathLike, key_path: signing.PathLike) -> int:
    """Sign the bundle at ``bundle_dir`` with the signing seed in ``key_path``."""
    kind, seed = signing.read_key_file(key_path)
    if kind is not signing.KeyKind.SigningSeed:
        raise _errors.SigningError(f"key file `{os.fspath(key_path)}` holds a public key; "
                                   f"signing needs the signing key (the .key file)",
                                   path=os.fspath(key_path))
    sig_path = signing.sign_bundle(bundle_dir, seed)
    print(f"signed {os.fspath(bundle_dir)}: wrote {sig_path} "
          f"(key {signing.public_key(seed).hex()})")
    return 0


def run(args: argparse.Namespace) -> int:
    return sign(args.dir, args.key)
