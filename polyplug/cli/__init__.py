"""Command line: ``python -m polyplug <command>`` (also installed as ``polyplug``).

    load <dir> [--json] [--log LEVEL]
                          load a bundle, or every bundle in a directory (providers
                          before dependents), and report what each one registered
    call <dir> <contract>[@major] <fn> [args...] [--json] [--instance] [--log LEVEL]
                          load the bundle(s) and call one function; arguments are
                          converted by the manifest's signature table (or by
                          ``--args u32,u32 --returns u32`` for a numeric function id)
    watch <dir> [--interval S] [--debounce S] [--max-reloads N | --once] [--timeout S]
                          load the bundle(s) and hot-reload each one when its files
                          change, printing every reload phase
    new <name> [--dir PATH] [--native]
                          scaffold a bundle directory ``<name>/`` with a manifest, a
                          Lua entry file and a pytest test (``--native``: a C source
                          file, a Makefile and the ABI header instead of the Lua file)
    keygen <prefix>       write an Ed25519 key pair <prefix>.key / <prefix>.pub
    sign <dir> --key K    sign a bundle (writes <dir>/bundle.sig, upstream's format)
    verify <dir> [--key P ...]
                          check a bundle's signature (optionally pinned to keys)
    version               print polyplug's and LuaJIT's versions

Each command is a module of this package with ``add_parser(subparsers)`` and
``run(args)``.  Exit codes: 0 success, 1 failure (one ``error: <Type>: <message>`` line
on stderr; ``watch`` also when its last reload failed), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from polyplug.cli import call, keygen, load, new, sign, verify, version, watch

__all__ = ["build_parser", "main"]

COMMANDS = (load, call, watch, new, keygen, sign, verify, version)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="python -m polyplug", description="polyplug: Lua and native plugin bundles for Python")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m polyplug`` and the ``polyplug`` script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # the reader went away (`polyplug load ... | head`): not an error of ours; point
        # stdout at /dev/null so the interpreter's final flush does not complain again
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
