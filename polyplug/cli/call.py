"""Load the bundle(s) at DIR and call one function of CONTRACT.

Arguments are converted by the manifest's signature table (u32 '7', f64 '1.5', bool
true/false/1/0, string and bytes as-is); for a numeric function id without a table entry
give the types with --args/--returns.  Use -- before arguments that start with '-'.  A
bytes result is written as it is (base64 with --json).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from polyplug import _errors
from polyplug.cli._common import (
    LOG_LEVELS,
    BundleReport,
    Failure,
    UsageError,
    build_runtime,
    bundle_command,
    find_bundles,
    load_all,
    load_failures,
    log_printer,
    needs_host,
    no_bundle,
    reports_failures,
)
from polyplug.runtime import Runtime
from polyplug.signature import TYPES, FunctionSig, normalize_type, signature

_INT_RANGES = {t: ((0, 2 ** int(t[1:]) - 1) if t[0] == "u" else
                   (-(2 ** (int(t[1:]) - 1)), 2 ** (int(t[1:]) - 1) - 1))
               for t in TYPES if t[0] in "ui"}
_F32_MAX = 3.4028234663852886e38
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
_FN_ID = re.compile(r"^(0|[1-9][0-9]*|0[xX][0-9a-fA-F]+)$")


def add_parser(sub: Any) -> None:
    p = bundle_command(sub, "call", run, help="load bundles and call one function",
                       description=__doc__)
    p.add_argument("contract", help="contract name, optionally @major (default: the highest "
                   "major loaded)")
    p.add_argument("fn", help="function name (from the signature table) or numeric id")
    p.add_argument("values", nargs="*", metavar="arg", help="the function's arguments")
    p.add_argument("--args", metavar="TYPES", help="argument types for a numeric id, "
                   "comma-separated (e.g. u32,u32)")
    p.add_argument("--returns", metavar="TYPE", help="result type for a numeric id "
                   "(or void)")
    p.add_argument("--instance", action="store_true",
                   help="call on a fresh instance instead of the default one")
    p.add_argument("--json", action="store_true", help='print {"result": ...}')


def convert_arg(type_name: str, text: str, where: str) -> Any:
    """The Python value for command-line argument ``text`` of type ``type_name``.

    Integers are decimal (or ``0x``/``0o``/``0b`` prefixed, ``_`` separators allowed)
    and range-checked; floats are anything ``float()`` reads (``1.5``, ``1e-3``,
    ``inf``); booleans are ``true``/``false``/``1``/``0``; strings and bytes pass as
    they are (bytes the file system encoding cannot decode are passed through unchanged).
    Raises :class:`InvalidArgument` naming ``where``.
    """
    if type_name in ("string", "bytes"):
        return text.encode("utf-8", "surrogateescape")
    if type_name == "bool":
        try:
            return _BOOLS[text.strip().lower()]
        except KeyError:
            raise _errors.InvalidArgument(
                f"{where}: {text!r} is not a bool (use true, false, 1 or 0)") from None
    if type_name in ("f32", "f64"):
        try:
            value = float(text)
        except ValueError:
            raise _errors.InvalidArgument(f"{where}: {text!r} is not a number") from None
        if type_name == "f32" and math.isfinite(value) and abs(value) > _F32_MAX:
            raise _errors.InvalidArgument(f"{where}: {text} is out of range for f32")
        return value
    lo, hi = _INT_RANGES[type_name]
    try:
        value = int(text, 10) if text.strip().lstrip("+-").isdigit() else int(text, 0)
    except ValueError:
        raise _errors.InvalidArgument(
            f"{where}: {text!r} is not an integer literal") from None
    if not lo <= value <= hi:
        raise _errors.InvalidArgument(
            f"{where}: {value} is out of range for {type_name} ({lo}..{hi})")
    return value


def _format_result(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_contract(spec: str) -> tuple[str, Optional[int]]:
    """``(name, major)`` of ``name`` or ``name@major`` (major None when absent)."""
    name, sep, major = spec.partition("@")
    if not name or any(c.isspace() for c in name):
        raise UsageError(f"bad contract {spec!r}: expected <name> or <name>@<major>")
    if not sep:
        return name, None
    if not re.fullmatch(r"0|[1-9][0-9]{0,9}", major) or int(major) > 0xFFFFFFFF:
        raise UsageError(f"bad contract {spec!r}: the major after '@' must be an integer "
                         "0..4294967295")
    return name, int(major)


def _pick_major(name: str, reports: Sequence[BundleReport]) -> int:
    """The highest major of ``name`` among the contracts the bundles registered."""
    majors = [int(c["contract"].rpartition("@")[2]) for r in reports for c in r.contracts
              if c["contract"].rpartition("@")[0] == name]
    if not majors:
        raise _errors.PluginNotFound(f"no loaded bundle provides contract {name!r}"
                                     + load_failures(reports))
    return max(majors)


def _resolve_function(contract: Any, fn: str, types: Optional[Sequence[str]],
                      returns: Optional[str]) -> tuple[FunctionSig, bool]:
    """The signature to call: declared by name or id, or built from --args/--returns.

    The flag is False for a numeric id that nothing describes (then it is called with
    no arguments and no result).
    """
    declared = contract.functions
    explicit = types is not None or returns is not None
    if not _FN_ID.match(fn):
        if explicit:
            raise UsageError("--args/--returns describe a function given by numeric id; "
                             f"{fn!r} is a name (its types come from the signature table)")
        if fn not in declared:
            raise Failure("UnknownFunction",
                          f"{contract.name}@{contract.major} declares no function {fn!r} "
                          f"(declared: {', '.join(sorted(declared)) or 'none'})")
        return declared[fn], True
    fn_id = int(fn, 0)
    if fn_id > 0xFFFFFFFF:
        raise UsageError(f"function id {fn} is out of range (0..4294967295)")
    if explicit:
        try:
            return signature(f"fn{fn_id}", fn_id, tuple(types or ()), returns), True
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    for sig in declared.values():
        if sig.id == fn_id:
            return sig, True
    return signature(f"fn{fn_id}", fn_id), False


def _type_list(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [normalize_type(t) for t in names]
    except ValueError as exc:
        raise UsageError(f"--args: {exc}") from None


def _normalize_returns(text: Optional[str]) -> Optional[str]:
    if text is None or text in ("", "void", "none"):
        return None
    try:
        return normalize_type(text)
    except ValueError as exc:
        raise UsageError(f"--returns: {exc}") from None


_NO_HOST = ("host contracts come from the program that loads a bundle "
            "(Runtime.provide_host_contract), and the polyplug CLI provides none; `call` runs "
            "bundles whose host contracts are optional")


def _needs_host(reports: Sequence[BundleReport], name: str) -> Optional[BundleReport]:
    """The report of a bundle providing ``name`` that failed for want of a host contract."""
    for r in reports:
        if needs_host(r) and any(
                spec.partition("@")[0] == name for spec in r.provides):
            return r
    return None


def _invoke(rt: Runtime, root: Path, args: argparse.Namespace, name: str,
            major: Optional[int], types: Optional[list[str]], returns: Optional[str]) -> Any:
    """Load the bundles under ``root`` into ``rt`` and make the call; returns its result."""
    reports = load_all(rt, root)
    blocked = _needs_host(reports, name)
    if blocked is not None:
        wanted = re.search(r"host contract `([^`]+)`", blocked.error or "")
        raise _errors.HostContractNotFound(
            f"bundle `{blocked.name}` requires host contract "
            f"`{wanted.group(1) if wanted else '?'}`: {_NO_HOST}")
    if major is None:
        major = _pick_major(name, reports)
    try:
        contract = rt.contract(name, major)
    except _errors.PluginNotFound as exc:
        raise _errors.PluginNotFound(f"{exc}{load_failures(reports)}") from None
    sig, described = _resolve_function(contract, args.fn, types, returns)
    if len(args.values) != len(sig.args):
        if not described:
            raise UsageError(
                f"function {sig.id} has no entry in the signature table of "
                f"{name}@{major}; give its types with --args TYPE,... [--returns TYPE]")
        raise TypeError(f"{sig.describe()} takes {len(sig.args)} argument(s), "
                        f"got {len(args.values)}")
    values = [convert_arg(t, text, f"argument {i + 1} ({t}) of {sig.name}")
              for i, (t, text) in enumerate(zip(sig.args, args.values))]
    try:
        if args.instance:
            with contract.instance() as inst:
                return inst.function(sig.id, sig.args, sig.returns)(*values)
        return contract.function(sig.id, sig.args, sig.returns)(*values)
    except _errors.CallError as exc:
        if "(HostContractNotFound)" not in str(exc):
            raise
        # a host contract the bundle looks up when called: the CLI has none to give
        raise type(exc)(f"{exc}; {_NO_HOST}") from None


@reports_failures(UsageError, Failure, _errors.PolyplugError, TypeError, ValueError,
                  AttributeError, UnicodeError, OSError)
def run(args: argparse.Namespace) -> int:
    name, major = parse_contract(args.contract)
    types, returns = _type_list(args.args), _normalize_returns(args.returns)
    if args.returns is not None and returns is None and types is None:
        types = []  # `--returns void`: an explicit "no arguments, no result"
    level = LOG_LEVELS[args.log]
    root = Path(args.dir)
    if not find_bundles(root) or not root.exists():
        raise no_bundle(root)
    with build_runtime(log_printer(level), level) as rt:
        result = _invoke(rt, root, args, name, major, types, returns)
    if args.json:
        if isinstance(result, bytes):  # binary in JSON: base64, as protobuf's mapping has it
            result = base64.b64encode(result).decode("ascii")
        print(json.dumps({"result": result}, ensure_ascii=False))
    elif isinstance(result, bytes):  # the bytes themselves
        sys.stdout.flush()
        sys.stdout.buffer.write(result + b"\n")
        sys.stdout.buffer.flush()
    elif result is not None:
        print(_format_result(result))
    return 0
