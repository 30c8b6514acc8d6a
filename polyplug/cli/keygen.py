"""``keygen PREFIX``: write an Ed25519 key pair ``PREFIX.key`` / ``PREFIX.pub``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from polyplug import signing
from polyplug.cli._common import reports_failures


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing bundles",
                       description="Write PREFIX.key (the signing key, mode 0600; keep it "
                       "secret) and PREFIX.pub (the public key to pin in "
                       "RuntimeConfig.trusted_keys).")
    p.add_argument("prefix", help="output path without extension, e.g. keys/release")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=run)


@reports_failures(OSError)
def keygen(out_prefix: signing.PathLike, force: bool = False) -> int:
    """Write ``<prefix>.key`` (signing seed, mode 0600) and ``<prefix>.pub``."""
    prefix = os.fspath(out_prefix)
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    existing = [str(p) for p in (key_path, pub_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s); "
                              f"pass --force to overwrite")
    seed, public = signing.generate_key()
    signing.write_key_file(key_path, signing.KeyKind.SigningSeed, seed)
    signing.write_key_file(pub_path, signing.KeyKind.VerifyingKey, public)
    print(f"wrote {key_path} (signing key: keep it secret) and {pub_path} "
          f"(public key {public.hex()})")
    return 0


def run(args: argparse.Namespace) -> int:
    return keygen(args.prefix, args.force)
