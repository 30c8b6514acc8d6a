"""``manifest.toml``: reading, validation and the function-count pre-check (spec §7, §8).

A bundle is a directory holding ``manifest.toml`` and an entry file.  Loading one runs,
in this order:

    read_manifest(path)        parse; every type or range error is a ManifestParse
    validate(manifest)         spec §7.3 steps 1-7, then the bundle version and the
                               entry path (both before anything is registered)
    check_function_counts(...) spec §8 step 3, per the runtime's compatibility mode

Error texts are upstream's (0.1.3) wherever upstream has one; where upstream's text is
misleading ("expected=0, found=0") or upstream accepts a bad manifest (whitespace-only
``file``, an entry path outside the bundle, an unparseable version found only after
registration), we raise a clear error instead.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from polyplug._errors import (
    BundleNotADirectory,
    BundleTampered,
    FunctionCountMismatch,
    ManifestMissingFile,
    ManifestParse,
    PathEscape,
)
from polyplug.ids import (
    Version,
    VersionParseError,
    bundle_id,
    guest_contract_id,
    parse_u32,
)
from polyplug.signature import FunctionSig, parse_signatures

__all__ = [
    "MANIFEST_NAME",
    "ManifestCache",
    "Dependency",
    "ManifestData",
    "check_function_counts",
    "current_platform",
    "read_manifest",
    "validate",
]

MANIFEST_NAME = "manifest.toml"

# Compatibility modes (spec §3 ``Compatibility``).
_STRICT, _RELAXED, _YOLO = 0, 1, 2

_OS_NAMES = {"linux": "linux", "windows": "windows", "darwin": "macos"}
_ARCH_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_SNIPPET_WIDTH = 100  # characters of the offending line quoted in a TOML diagnostic
_VALUE_WIDTH = 60  # characters of a wrong value quoted in a type error


# ── data ─────────────────────────────────────────────────────────────────────


@dataclass
class Dependency:
    """One ``[[dependency]]`` entry (spec §7.2).

    ``contract_id`` is what the runtime enforces: a dependency that leaves it 0 grants
    nothing.  A dependency naming a ``bundle`` but no ``bundle_id`` is skipped for
    graph and compatibility purposes.
    """

    kind: str
    contract: str
    min_version: str
    bundle: str | None = None
    contract_id: int = 0
    bundle_id: int | None = None

    def bare_contract(self) -> str:
        """The contract name without any ``@version`` suffix."""
        return self.contract.split("@", 1)[0]

    def min_major(self) -> int:
        """The major of ``min_version`` parsed as a Version; 0 if it does not parse."""
        try:
            return Version.parse(self.min_version).major
        except VersionParseError:
            return 0

    def canonical_contract_id(self) -> int:
        """The id this dependency's ``contract_id`` must have, if it is non-zero."""
        return guest_contract_id(self.bare_contract(), self.min_major())


@dataclass
class ManifestData:
    """The contents of one bundle's ``manifest.toml``, plus the bundle directory.

    ``path`` is the bundle directory (it is not a manifest key); ``file`` is the entry
    artifact relative to it, already resolved for this platform when the manifest
    uses the ``[file] <os>.<arch> = "..."`` table form.
    """

    id: int
    name: str
    loader: str
    file: str
    path: Path
    version: str = ""
    provides: list[str] = field(default_factory=list)
    function_count: dict[str, int] = field(default_factory=dict)
    dependencies: list[Dependency] = field(default_factory=list)
    needs_reinit_on_dep_reload: bool = False
    bundle_dependencies: list[str] = field(default_factory=list)
    #: our extension: ``[contracts."<name>@<major>".functions]`` (see polyplug.signature)
    signatures: dict[str, dict[str, FunctionSig]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def copy(self) -> ManifestData:
        """A copy whose lists and tables can be changed without touching this one."""
        import copy

        dup = copy.copy(self)
        dup.provides = list(self.provides)
        dup.function_count = dict(self.function_count)
        dup.dependencies = [copy.copy(d) for d in self.dependencies]
        dup.bundle_dependencies = list(self.bundle_dependencies)
        dup.signatures = {k: dict(v) for k, v in self.signatures.items()}
        return dup

    def parsed_version(self) -> Version:
        """The bundle version; an empty ``version`` is 0.0.0.  Raises VersionParseError."""
        return Version.parse(self.version) if self.version else Version(0, 0, 0)

    def entry_path(self) -> Path:
        """The entry artifact's path: ``path / file``."""
        return self.path / self.file


# ── reading ──────────────────────────────────────────────────────────────────


class _FieldError(Exception):
    """A manifest value is missing or has the wrong type; ``str(exc)`` is the reason."""


def _json(value: object, ensure_ascii: bool = True) -> str:
    """``json.dumps`` (json is imported on first use, not by `import polyplug`)."""
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii)


def _parse_error(where: Path, reason: str) -> ManifestParse:
    """Build upstream's ``manifest parse error for `<where>`: <reason>``."""
    return ManifestParse(
        f"manifest parse error for `{where}`: {reason}", path=str(where), reason=reason
    )


def current_platform() -> tuple[str, str]:
    """The ``(os, arch)`` pair that selects an entry in the ``[file]`` table form.

    ``os`` is ``linux``, ``windows`` or ``macos`` and ``arch`` is ``x86_64`` or
    ``aarch64``; anything else is ``unknown`` (and matches no entry).
    """
    import platform  # here, not at import: `import polyplug` stays cheap

    os_name = _OS_NAMES.get(platform.system().lower(), "unknown")
    arch = _ARCH_NAMES.get(platform.machine().lower(), "unknown")
    return os_name, arch


def _bundle_dir(path: Path) -> Path:
    """The bundle directory for ``path``: itself, or its parent if it is a regular file.

    Always absolute, so the bundle keeps working (lazy ``require``, reload) after the
    program changes its working directory.
    """
    try:
        path = Path(os.path.abspath(path))
        mode = path.stat().st_mode
    except (OSError, ValueError):  # ValueError: embedded NUL byte
        mode = 0
    if stat.S_ISREG(mode):
        return path.parent
    if stat.S_ISDIR(mode):
        return path
    raise BundleNotADirectory(f"bundle path is not a directory: `{path}`", path=str(path))


def _os_error_text(err: OSError) -> str:
    """An OS error as Rust's ``io::Error`` displays it: ``<text> (os error <n>)``."""
    if err.strerror and err.errno is not None:
        return f"{err.strerror} (os error {err.errno})"
    return str(err)


def _toml_error_text(err: ValueError, text: str) -> str:
    """The reason for a document tomllib rejects: its message and the offending line."""
    reason = f"invalid TOML: {err}"
    position = _TOML_POSITION.search(str(err))
    if position is None:
        return reason
    lineno, column = int(position[1]), int(position[2])
    lines = text.splitlines()
    if not 1 <= lineno <= len(lines):
        return reason
    start = max(0, column - 1 - _SNIPPET_WIDTH // 2)
    snippet = lines[lineno - 1][start : start + _SNIPPET_WIDTH]
    snippet = "".join(c if c.isprintable() else "?" for c in snippet)  # keeps the caret aligned
    gutter = " " * len(str(lineno))
    caret = " " * (column - 1 - start) + "^"
    return f"{reason}\n{lineno} | {snippet}\n{gutter} | {caret}"


def _describe(value: object) -> str:
    """Name a TOML value's type (and show it, if it is a scalar) for a type error."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = _json(value, ensure_ascii=False)
    elif isinstance(value, list):
        return "an array"
    elif isinstance(value, dict):
        return "a table"
    else:  # tomllib cannot produce an int past str()'s digit limit
        shown = str(value)
    if len(shown) > _VALUE_WIDTH:
        shown = shown[: _VALUE_WIDTH - 3] + "..."
    kind = {int: "integer", float: "float", str: "string"}.get(type(value), type(value).__name__)
    return f"{kind} {shown}"


def _type_error(label: str, expected: str, value: object) -> _FieldError:
    """``key `<label>`: expected <expected>, found <value>``."""
    return _FieldError(f"key `{label}`: expected {expected}, found {_describe(value)}")


def _str(table: dict[str, Any], key: str, label: str, default: str | None = None) -> str:
    """``table[key]`` as a string; missing -> ``default``, or an error if that is None."""
    if key not in table:
        if default is None:
            where = f" in `{label.rpartition('.')[0]}`" if "." in label else ""
            raise _FieldError(f"missing field `{key}`{where}")
        return default
    value = table[key]
    if not isinstance(value, str):
        raise _type_error(label, "a string", value)
    return value


def _uint(value: object, bits: int, label: str) -> int:
    """``value`` as an unsigned ``bits``-bit integer (a TOML boolean is not one)."""
    limit = (1 << bits) - 1
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit:
        return value
    raise _type_error(label, f"an unsigned {bits}-bit integer (0..{limit})", value)


def _str_list(table: dict[str, Any], key: str) -> list[str]:
    """``table[key]`` as an array of strings; missing -> empty."""
    value = table.get(key, [])
    if not isinstance(value, list):
        raise _type_error(key, "an array of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _type_error(f"{key}[{index}]", "a string", item)
    return value


def _entry_file(value: object) -> str:
    """The entry ``file``: a string, or this platform's entry of the table form.

    Table form: ``[file] linux.x86_64 = "lib.so"``.  As upstream does, entries that
    are not ``<os> = {<arch> = "path"}`` tables are ignored (TOML scopes keys written
    after ``[file]`` into it), except that this platform's own entry must be a string.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise _type_error("file", 'a string or a table like {linux = {x86_64 = "path"}}', value)
    os_name, arch = current_platform()
    chosen = value.get(os_name)
    if isinstance(chosen, dict) and arch in chosen:
        entry: object = chosen[arch]
        if not isinstance(entry, str):
            raise _type_error(f"file.{os_name}.{arch}", "a string", entry)
        return entry
    available = sorted(
        f"{os_key}.{arch_key}"
        for os_key, arches in value.items()
        if isinstance(arches, dict)
        for arch_key, path in arches.items()
        if isinstance(path, str)
    )
    listed = ", ".join(_json(a, ensure_ascii=False) for a in available)
    raise _FieldError(f"no file entry for platform {os_name}.{arch}, available: [{listed}]")


def _function_counts(value: object) -> dict[str, int]:
    """``[function_count]``: a table of contract key -> u32."""
    if not isinstance(value, dict):
        raise _type_error("function_count", 'a table of "<contract>@<major>" = <count>', value)
    return {
        key: _uint(count, 32, f"function_count.{_json(key, ensure_ascii=False)}")
        for key, count in value.items()
    }


def _dependency(value: object, label: str) -> Dependency:
    """One ``[[dependency]]`` table."""
    if not isinstance(value, dict):
        raise _type_error(label, "a table", value)
    bundle = value.get("bundle")
    if bundle is not None and not isinstance(bundle, str):
        raise _type_error(f"{label}.bundle", "a string", bundle)
    raw_bundle_id = value.get("bundle_id")
    return Dependency(
        kind=_str(value, "kind", f"{label}.kind"),
        contract=_str(value, "contract", f"{label}.contract"),
        min_version=_str(value, "min_version", f"{label}.min_version"),
        bundle=bundle,
        contract_id=_uint(value.get("contract_id", 0), 64, f"{label}.contract_id"),
        bundle_id=None if raw_bundle_id is None else _uint(raw_bundle_id, 64, f"{label}.bundle_id"),
    )


def _dependencies(value: object) -> list[Dependency]:
    """``[[dependency]]``: an array of dependency tables."""
    if not isinstance(value, list):
        raise _type_error("dependency", "an array of tables ([[dependency]])", value)
    return [_dependency(item, f"dependency[{i}]") for i, item in enumerate(value)]


def _manifest_from_table(doc: dict[str, Any], bundle_dir: Path) -> ManifestData:
    """Build a ManifestData from a parsed document (unknown keys ignored); raises _FieldError."""
    reinit = doc.get("needs_reinit_on_dep_reload", False)
    if not isinstance(reinit, bool):
        raise _type_error("needs_reinit_on_dep_reload", "a boolean", reinit)
    return ManifestData(
        loader=_str(doc, "loader", "loader"),
        name=_str(doc, "name", "name", ""),
        id=_uint(doc.get("id", 0), 64, "id"),
        version=_str(doc, "version", "version", ""),
        file=_entry_file(doc.get("file", "")),
        provides=_str_list(doc, "provides"),
        function_count=_function_counts(doc.get("function_count", {})),
        dependencies=_dependencies(doc.get("dependency", [])),
        needs_reinit_on_dep_reload=reinit,
        bundle_dependencies=_str_list(doc, "bundle_dependencies"),
        signatures=_signatures(doc.get("contracts", {})),
        path=bundle_dir,
    )


def _signatures(value: object) -> dict[str, dict[str, FunctionSig]]:
    try:
        return parse_signatures(value)
    except ValueError as exc:
        raise _FieldError(str(exc)) from None


def _toml() -> Any:
    """tomllib (tomli before 3.11), imported on the first read, not by `import polyplug`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib
    return tomllib


def read_manifest(path: str | os.PathLike[str]) -> ManifestData:
    """Read and type-check ``manifest.toml`` of the bundle at ``path`` (no validation).

    ``path`` is the bundle directory or a file inside it (then its parent is the
    bundle directory).  Raises :class:`BundleNotADirectory` if ``path`` does not exist,
    and :class:`ManifestParse` (``manifest parse error for `<dir>/manifest.toml`: ...``)
    if the manifest is unreadable, not UTF-8, not TOML, or has a key of the wrong type.
    """
    bundle_dir = _bundle_dir(Path(path))
    manifest_path = bundle_dir / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise _parse_error(
            manifest_path, f"failed to read: no {MANIFEST_NAME} in {bundle_dir}"
        ) from None
    except OSError as err:
        raise _parse_error(manifest_path, f"failed to read: {_os_error_text(err)}") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is allowed
    except UnicodeDecodeError as err:
        reason = (
            f"failed to read: stream did not contain valid UTF-8 (byte {raw[err.start]:#04x}"
            f" at offset {err.start}); {MANIFEST_NAME} must be UTF-8 text"
        )
        raise _parse_error(manifest_path, reason) from None
    try:
        doc = _toml().loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer past int()'s digit limit
        raise _parse_error(manifest_path, _toml_error_text(err, text)) from None
    except RecursionError:
        raise _parse_error(manifest_path, "invalid TOML: values nested too deeply") from None
    try:
        return _manifest_from_table(doc, bundle_dir)
    except _FieldError as err:
        raise _parse_error(manifest_path, str(err)) from None


# ── validation ───────────────────────────────────────────────────────────────


def _spec_major(version: str) -> int | None:
    """The major of a spec's version part: a bare u32 or a full version; None if neither."""
    major = parse_u32(version)
    if major is not None:
        return major
    try:
        return Version.parse(version).major
    except VersionParseError:
        return None


def _check_spec(spec: str, key: str, bundle_dir: Path) -> None:
    """Check a ``provides`` / ``bundle_dependencies`` entry: ``name`` or ``name@<version>``."""
    name, sep, version = spec.partition("@")
    if not name.strip():
        raise _parse_error(bundle_dir, f'{key} entry "{spec}" has an empty contract/bundle name')
    if sep and _spec_major(version) is None:
        raise _parse_error(
            bundle_dir,
            f'{key} entry "{spec}" has an unparseable version spec "{version}" '
            '(expected a bare major like "name@1" or a full version)',
        )


def _check_entry_inside(m: ManifestData) -> None:
    """Refuse an entry ``file`` that leaves the bundle directory, literally or via symlinks."""
    if "\0" in m.file:
        raise _parse_error(
            m.path, f"file {_json(m.file, ensure_ascii=False)} contains a NUL character"
        )
    escape = PathEscape(
        f"bundle `{m.name}` artifact `{m.file}` resolves outside the bundle directory"
        " (path traversal or symlink escape)",
        bundle=m.name,
        path=m.file,
    )
    relative = PurePath(m.file)
    if relative.anchor:
        raise escape
    depth = 0
    for part in relative.parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise escape
    try:
        # os.path.realpath on strings: the same answer as Path.resolve at half the cost
        root = os.path.realpath(m.path)
        target = os.path.realpath(os.path.join(m.path, m.file))
    except (OSError, ValueError, RuntimeError) as err:
        raise _parse_error(m.path, f"file `{m.file}` cannot be resolved: {err}") from None
    if os.path.islink(target):  # realpath stops at a symlink loop instead of raising
        raise _parse_error(m.path, f"file `{m.file}` cannot be resolved: Symlink loop from "
                           f"{target!r}")
    if target != root and not target.startswith(root.rstrip(os.sep) + os.sep):
        raise escape


def validate(m: ManifestData) -> None:
    """Check a manifest before anything of the bundle is registered.

    Upstream's checks, in upstream's order (spec §7.3): non-empty ``loader``, ``name``
    and ``file``; non-zero ``id`` equal to ``bundle_id(name)``; well-formed
    ``provides`` / ``bundle_dependencies`` specs; dependency ``contract_id`` values
    consistent with their contract.  Stricter than upstream: a whitespace-only ``file``
    counts as missing (step 3), and after step 7 ``version`` must parse and ``file``
    must stay inside the bundle directory, symlinks resolved.

    Raises ManifestParse, ManifestMissingFile, BundleTampered or PathEscape.
    """
    if not m.loader:
        raise _parse_error(m.path, "loader field is required but was empty")
    if not m.name:
        raise _parse_error(m.path, "name field is required but was empty")
    if not m.file.strip():
        raise ManifestMissingFile(
            f'bundle "{m.name}" manifest.toml has an empty or missing `file` field', bundle=m.name
        )
    if m.id == 0:
        raise _parse_error(m.path, "id field is required but was 0 or missing")
    expected = bundle_id(m.name)
    if m.id != expected:
        raise BundleTampered(
            f'bundle "{m.name}" tampered with bundle_id: expected={expected:#x}, found={m.id:#x}'
            f' (id must equal bundle_id("{m.name}") = {expected})',
            bundle=m.name,
            expected=f"{expected:#x}",
            found=f"{m.id:#x}",
        )
    for spec in m.provides:
        _check_spec(spec, "provides", m.path)
    for spec in m.bundle_dependencies:
        _check_spec(spec, "bundle_dependencies", m.path)
    for dep in m.dependencies:
        canonical = dep.canonical_contract_id()
        if dep.contract_id and dep.contract_id != canonical:
            raise _parse_error(
                m.path,
                f'dependency "{dep.contract}" declares contract_id {dep.contract_id} but the'
                f' canonical id for contract "{dep.bare_contract()}" at major {dep.min_major()}'
                f" is {canonical}",
            )
    try:
        m.parsed_version()
    except VersionParseError as err:
        raise _parse_error(m.path, f"invalid version '{m.version}': {err.kind}") from None
    _check_entry_inside(m)


# ── function-count pre-check ─────────────────────────────────────────────────


class ManifestCache:
    """Validated manifests by file, re-read only when ``manifest.toml`` changes.

    A runtime reloads a bundle from the same directory over and over; parsing and
    validating its manifest each time costs more than the reload itself.  An entry is
    keyed by the file's identity (inode, size, modification and change times), and the
    entry-path containment check (which depends on other files) runs on every hit.
    Callers get a copy, so changing it cannot change the cache.
    """

    def __init__(self, capacity: int = 256) -> None:
        self._entries: dict[str, tuple[tuple[int, ...], ManifestData]] = {}
        self._capacity = capacity

    def read_validated(self, path: str | os.PathLike[str]) -> ManifestData:
        """``read_manifest(path)`` followed by ``validate``, served from the cache when
        the manifest file is unchanged."""
        where = Path(path)
        try:
            manifest_file = os.path.join(_bundle_dir(where), MANIFEST_NAME)
            st = os.stat(manifest_file)
        except (OSError, BundleNotADirectory):
            manifest_file, st = "", None
        if st is not None:
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            hit = self._entries.get(manifest_file)
            if hit is not None and hit[0] == key:
                _check_entry_inside(hit[1])
                return hit[1].copy()
        m = read_manifest(where)
        validate(m)
        if st is not None:
            if len(self._entries) >= self._capacity:
                self._entries.pop(next(iter(self._entries)))
            self._entries[manifest_file] = (key, m)
        return m.copy()


def check_function_counts(m: ManifestData, compatibility: int) -> list[str]:
    """Check that ``[function_count]`` has an entry for every ``provides`` contract.

    ``compatibility`` is the runtime's mode: 0 Strict raises FunctionCountMismatch on
    the first missing entry, 1 Relaxed returns one warning per missing entry, 2 Yolo
    checks nothing.  For ``provides = ["x.H@1"]`` the entry may be keyed ``"x.H@1"``
    (the contract's major) or, as upstream 0.1.3 requires, ``"x.H@<M>"`` where ``M``
    is the bundle ``version`` up to its first ``.`` (``"0"`` if it has none).  An
    entry without a version can only use upstream's key.
    """
    if compatibility not in (_STRICT, _RELAXED, _YOLO):
        raise ValueError(f"compatibility must be 0, 1 or 2, got {compatibility!r}")
    if compatibility == _YOLO:
        return []
    bundle_major = m.version.split(".", 1)[0] if "." in m.version else "0"
    warnings: list[str] = []
    for entry in m.provides:
        bare, sep, version = entry.partition("@")
        upstream_key = f"{bare}@{bundle_major}"
        contract_major = _spec_major(version) if sep else None
        key = upstream_key if contract_major is None else f"{bare}@{contract_major}"
        if key in m.function_count or upstream_key in m.function_count:
            continue
        if compatibility == _RELAXED:
            warnings.append(
                f'bundle "{m.name}" provides "{entry}" but has no function_count entry'
                f' for key "{key}"'
            )
            continue
        also = (
            ""
            if key == upstream_key
            else f' (or "{upstream_key}", the bundle-version key upstream polyplug 0.1.3 reads)'
        )
        raise FunctionCountMismatch(
            f'bundle "{m.name}" provides "{entry}" but manifest.toml has no [function_count]'
            f' entry for it: add "{key}" = <number of functions>{also}',
            contract=entry,
            expected=key,
            found="",
        )
    return warnings
