"""``manifest.toml``: the Python view of the C manifest reader (``csrc/pp_manifest.c``).

A bundle is a directory holding ``manifest.toml`` and an entry file.  Reading,
type-checking and validating a manifest happen in C, in one place for C and Python
hosts; this module gives Python its view of the result:

    read_manifest(path)        parse and type-check; every type or range error is a
                               ManifestParse naming the key, the line and the column
    validate(manifest)         spec §7.3 steps 1-7, then the bundle version and the
                               entry path (both before anything is registered)
    check_function_counts(...) spec §8 step 3, per the runtime's compatibility mode

A :class:`ManifestData` built in code is checked by the same C code: it is written out
as TOML and read back (:func:`manifest_doc`).  Error texts are upstream's (0.1.3)
wherever upstream has one; where upstream's text is misleading or upstream accepts a
bad manifest, the error says what is wrong instead.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from polyplug._ffi import check, ffi, lib, new_error
from polyplug.ids import Version, VersionParseError, guest_contract_id
from polyplug.signature import FunctionSig

__all__ = [
    "MANIFEST_NAME",
    "ManifestCache",
    "Dependency",
    "ManifestData",
    "check_function_counts",
    "current_platform",
    "manifest_doc",
    "read_manifest",
    "validate",
]

MANIFEST_NAME = "manifest.toml"

_OS_NAMES = {"linux": "linux", "windows": "windows", "darwin": "macos"}
_ARCH_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


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


def current_platform() -> tuple[str, str]:
    """The ``(os, arch)`` pair that selects an entry in the ``[file]`` table form.

    ``os`` is ``linux``, ``windows`` or ``macos`` and ``arch`` is ``x86_64`` or
    ``aarch64``; anything else is ``unknown`` (and matches no entry).
    """
    import platform  # here, not at import: `import polyplug` stays cheap

    os_name = _OS_NAMES.get(platform.system().lower(), "unknown")
    arch = _ARCH_NAMES.get(platform.machine().lower(), "unknown")
    return os_name, arch


# ── the C document ───────────────────────────────────────────────────────────


def _view(data: bytes) -> Any:
    """A ``StringView *`` over ``data`` (not a copy); keep both alive while C uses
    ``view[0]``: a temporary ``bytes`` passed here is freed under C's feet."""
    view = ffi.new("StringView *")
    if data:
        view.ptr = ffi.from_buffer("uint8_t[]", data)
        view.len = len(data)
    return view


def _doc_from(reader: Any, *args: Any) -> Any:
    """Call a C reader that fills a ``pp_manifest_doc **``; the document is freed with
    its Python owner."""
    out = ffi.new("pp_manifest_doc **")
    err = new_error()
    reader(*args, out, err)
    check(err)
    return ffi.gc(out[0], lib.pp_manifest_doc_free)


def _read_doc(path: str | os.PathLike[str]) -> Any:
    # absolute, so the bundle keeps working (lazy require, reload) after a chdir
    raw = os.fsencode(os.path.abspath(path))
    view = _view(raw)
    return _doc_from(lib.pp_manifest_doc_read, view[0])


def manifest_doc_from_text(text: bytes, bundle_dir: str | os.PathLike[str]) -> Any:
    """The C document of ``manifest.toml`` text a host read for ``bundle_dir`` (a
    signed bundle's verified bytes); errors name ``<bundle_dir>/manifest.toml``."""
    directory = os.fsencode(os.path.abspath(bundle_dir))  # alive while C reads it
    text_view, dir_view = _view(text), _view(directory)
    return _doc_from(lib.pp_manifest_doc_parse, text_view[0], dir_view[0], 0)


def _data_from_doc(doc: Any) -> ManifestData:
    """The ManifestData of a C document, built from its JSON description."""
    length = ffi.new("size_t *")
    text = lib.pp_manifest_doc_json(doc, length)
    if text == ffi.NULL:
        raise MemoryError("out of memory describing a manifest")
    import json  # here, not at import: `import polyplug` stays cheap

    j = json.loads(ffi.unpack(text, length[0]).decode("utf-8", "surrogateescape"))
    m = ManifestData(
        id=j["id"],
        name=j["name"],
        loader=j["loader"],
        file=j["file"],
        path=j["path"],
        version=j["version"],
        provides=j["provides"],
        function_count=j["function_count"],
        dependencies=[Dependency(*d) for d in j["dependencies"]],
        needs_reinit_on_dep_reload=j["needs_reinit_on_dep_reload"],
        bundle_dependencies=j["bundle_dependencies"],
        signatures={key: {name: FunctionSig(name, fid, tuple(args), ret)
                          for name, fid, args, ret in fns}
                    for key, fns in j["signatures"].items()},
    )
    return m


def read_manifest(path: str | os.PathLike[str]) -> ManifestData:
    """Read and type-check ``manifest.toml`` of the bundle at ``path`` (no validation).

    ``path`` is the bundle directory or a file inside it (then its parent is the
    bundle directory).  Raises :class:`BundleNotADirectory` if ``path`` does not exist,
    and :class:`ManifestParse` (``manifest parse error for `<dir>/manifest.toml`: ...``)
    if the manifest is unreadable, not UTF-8, not TOML, or has a key of the wrong type.
    """
    return _data_from_doc(_read_doc(path))


_FIELDS = tuple(f.name for f in fields(ManifestData))
_FILL_LOCK = threading.Lock()


def _new_fill_lock() -> None:
    # a fork() child gets a free lock: the thread that held it was not copied
    global _FILL_LOCK
    _FILL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fill_lock)


def _fill(m: ManifestData) -> None:
    """Give a document-backed manifest its fields (once; any thread)."""
    d = object.__getattribute__(m, "__dict__")
    if "_doc" in d:
        with _FILL_LOCK:
            doc = d.get("_doc")
            if doc is not None:
                d.update(_data_from_doc(doc).__dict__)
                del d["_doc"]


class _DocManifest(ManifestData):
    """A ManifestData that reads its fields from its C document the first time any of
    them is used, so a load whose manifest nobody looks at builds no Python objects.

    It is a ManifestData in every other respect: fields read and set as usual, and it
    compares, copies, pickles and prints like one.
    """

    def __init__(self, *args: Any, _doc: Any = None, **kwargs: Any) -> None:
        if _doc is None:  # built field by field (dataclasses.replace does this)
            super().__init__(*args, **kwargs)
        else:
            object.__getattribute__(self, "__dict__")["_doc"] = _doc

    def __getattribute__(self, name: str) -> Any:
        _fill(self)
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        _fill(self)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        _fill(self)
        object.__delattr__(self, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManifestData):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like ManifestData

    def __repr__(self) -> str:
        return "ManifestData" + super().__repr__()[len(type(self).__qualname__):]

    def copy(self) -> ManifestData:
        doc = object.__getattribute__(self, "__dict__").get("_doc")
        return _DocManifest(_doc=doc) if doc is not None else super().copy()


# ── manifests built in code: written out as TOML and read back by C ─────────


_PLAIN_TEXT = re.compile(r'[^"\\\x00-\x1f\x7f]*')


def _toml_str(s: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, but DEL must be escaped too."""
    if _PLAIN_TEXT.fullmatch(s):
        return f'"{s}"'
    import json

    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, what: str) -> str:
    kind = type(value)  # the usual exact types first: this runs for every load from source
    if kind is str:
        return _toml_str(value)
    if kind is int:
        return str(value)
    if kind is list:
        return "[" + ", ".join([_toml_value(v, what) for v in value]) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) \
            if not math.isfinite(value) else repr(value)
    if isinstance(value, (str, os.PathLike)):
        return _toml_str(os.fspath(value) if not isinstance(value, str) else value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, what) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_str(str(k))} = {_toml_value(v, what)}"
                                for k, v in value.items()) + " }"
    raise TypeError(f"ManifestData.{what}: cannot use a {type(value).__name__} in a manifest")


def _manifest_toml(m: ManifestData) -> str:
    """``m`` as the manifest.toml that says the same (keys that are None are left out)."""
    lines = []
    for key in ("loader", "name", "id", "version", "file", "provides",
                "needs_reinit_on_dep_reload", "bundle_dependencies"):
        value = getattr(m, key)
        if value is not None:
            lines.append(f"{key} = {_toml_value(value, key)}")
    if m.function_count:
        lines.append("[function_count]")
        lines += [f"{_toml_str(str(k))} = {_toml_value(v, 'function_count')}"
                  for k, v in m.function_count.items()]
    for d in m.dependencies or ():
        lines.append("[[dependency]]")
        for key in ("kind", "contract", "min_version", "bundle", "contract_id", "bundle_id"):
            value = getattr(d, key)
            if value is not None:
                lines.append(f"{key} = {_toml_value(value, 'dependencies')}")
    for key, fns in (m.signatures or {}).items():
        lines.append(f"[contracts.{_toml_str(str(key))}.functions]")
        for name, sig in fns.items():
            returns = f", returns = {_toml_value(sig.returns, 'signatures')}" \
                if sig.returns is not None else ""
            lines.append(f"{_toml_str(str(name))} = {{ id = {_toml_value(sig.id, 'signatures')}"
                         f", args = {_toml_value(list(sig.args), 'signatures')}{returns} }}")
    return "\n".join(lines) + "\n"


def manifest_doc(m: ManifestData) -> Any:
    """The C document (``pp_manifest_doc *``, freed with its owner) of a manifest built
    in code; a value of the wrong type is a ManifestParse naming the key."""
    text = _manifest_toml(m).encode("utf-8", "surrogatepass")
    directory = os.fsencode(m.path)
    text_view, dir_view = _view(text), _view(directory)
    return _doc_from(lib.pp_manifest_doc_parse, text_view[0], dir_view[0],
                     lib.PP_MANIFEST_GENERATED)


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
    err = new_error()
    lib.pp_manifest_doc_validate(manifest_doc(m), err)
    check(err)


def check_function_counts(m: ManifestData, compatibility: int) -> list[str]:
    """Check that ``[function_count]`` has an entry for every ``provides`` contract.

    ``compatibility`` is the runtime's mode: 0 Strict raises FunctionCountMismatch on
    the first missing entry, 1 Relaxed returns one warning per missing entry, 2 Yolo
    checks nothing.  For ``provides = ["x.H@1"]`` the entry may be keyed ``"x.H@1"``
    (the contract's major) or, as upstream 0.1.3 requires, ``"x.H@<M>"`` where ``M``
    is the bundle ``version`` up to its first ``.`` (``"0"`` if it has none).  An
    entry without a version can only use upstream's key.
    """
    if compatibility not in (0, 1, 2):
        raise ValueError(f"compatibility must be 0, 1 or 2, got {compatibility!r}")
    doc = manifest_doc(m)
    err = new_error()
    lib.pp_manifest_doc_check(doc, lib.PP_CHECK_FUNCTION_COUNTS, compatibility, err)
    check(err)
    return [ffi.string(lib.pp_manifest_doc_warning(doc, i)).decode("utf-8", "replace")
            for i in range(lib.pp_manifest_doc_warning_count(doc))]


# ── the per-runtime cache ────────────────────────────────────────────────────


def doc_manifest(doc: Any) -> ManifestData:
    """A ManifestData of a C document (its fields are built when first used)."""
    return _DocManifest(_doc=doc)


class CachedManifest(NamedTuple):
    """A read manifest: the C document and the bundle id it declares."""

    doc: Any
    id: int

    def manifest(self) -> ManifestData:
        """A ManifestData of this document (its fields are built when first used)."""
        return doc_manifest(self.doc)


class ManifestCache:
    """Read manifests by path, re-read only when ``manifest.toml`` changes.

    A runtime reloads a bundle from the same directory over and over; an entry is
    keyed by the path as given and kept while the file it was read from keeps its
    identity (inode, size, modification and change times: pp_manifest_doc_is_current).  Validation is not cached here: the
    runtime runs it on every use (the C document remembers the steps that cannot
    change and re-checks the entry path, which depends on other files).
    """

    def __init__(self, capacity: int = 256) -> None:
        self._entries: dict[str, CachedManifest] = {}
        self._capacity = capacity

    def read(self, path: str | os.PathLike[str]) -> CachedManifest:
        """The manifest of the bundle at ``path``; raises what :func:`read_manifest` does."""
        key = os.fspath(path)
        hit = self._entries.get(key)
        if hit is not None and lib.pp_manifest_doc_is_current(hit.doc):
            return hit
        doc = _read_doc(key)
        entry = CachedManifest(doc, lib.pp_manifest_doc_view(doc).id)
        if len(self._entries) >= self._capacity:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = entry
        return entry
