"""Every fenced code block in README.md and docs/*.md runs here, one test per block.

Test ids are ``<document>:<line of the opening fence>`` (e.g. ``README.md:42``), so a
failure points at the block.  Blocks of one document run in order and build on each
other: selecting one block alone first replays the blocks before it.

What each kind of block must do:

``python``
    Executed with the repository root as the working directory (so ``examples/...``
    paths work), in one namespace per document.  Blocks that write files do so in
    temporary directories they create themselves.

``lua``
    A block that defines ``polyplug_init`` is loaded as a bundle (after the bundles
    of ``examples/``, which may be its providers) and must load.  Any other block is
    compiled and run as a chunk (``load(snippet)()``) inside a bundle's init.

``toml``
    Parsed with tomllib.  A manifest (it has ``loader``) is read and validated by
    :mod:`polyplug.manifest`; a partial manifest (say, only a ``[[dependency]]`` or a
    ``[contracts...]`` table) is completed with the missing required keys and
    validated the same way.

``sh`` / ``console``
    In ``sh`` every line is a command; in ``console`` commands start with ``$ `` and
    the lines after one are output that must appear (in order; timestamps, load
    times, 64-digit hex keys and whitespace runs are normalised, and ``...`` matches
    anything).  Expected output with an ``error: `` line means the command must
    fail.  Commands run in a per-document temporary directory that holds a copy of
    ``examples/`` and the files written by earlier blocks (below), with ``python``
    being this interpreter and ``$POLYPLUG`` the repository root.  Only the commands
    in ``RUN_PREFIXES`` run; any other command must be listed in ``NOT_RUN`` with the
    reason, or the test fails.  The README's two set-up commands (``SETUP_COMMANDS``,
    matched exactly) are not run: they install packages into the environment and
    re-run this very test suite, which a test must not do; CI (``.ci/run``) runs them
    on a fresh machine, and a test checks they stay verbatim.

``c``
    Compiled with ``tests/cbuild.py`` (``build_program``) against the host core and
    LuaJIT, and run from the repository root; it must exit 0.  With ``shared=REL`` it
    is a native bundle's source instead: compiled into the shared library ``REL`` in
    the document's temporary directory (``build_shared``), not run.

Fence attributes (after the language, invisible when rendered):

``file=REL``
    also write the block to ``REL`` in the document's temporary directory, where later
    ``lua``, ``sh``/``console`` blocks find it.  A Lua bundle written this way is
    loaded from its directory (with its ``manifest.toml`` if one was written there).
``source=REL``
    the block is an excerpt of the repository file ``REL``: its lines appear there, in
    order (blank lines and elision comments such as ``-- ...`` excepted).
"""

from __future__ import annotations

import linecache
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

import polyplug
from polyplug import manifest as manifest_mod

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands that run (as prefixes of the command line).
RUN_PREFIXES = ("python -m polyplug", "python -c ", "python -m pytest ", "cc ", "./",
                "cp ", "mkdir ", "cat ", "ls ", "make ")

# The README's two set-up commands (kept verbatim there) are skipped, exactly these
# lines and nothing else: they install into the current environment and run the whole
# test suite, this file included.  CI (.ci/run) runs them for real on a fresh machine.
SETUP_COMMANDS = (
    "python -m pip install -e . && python -m polyplug load examples/arith",
    "python -m pip install -e '.[test]' && python -m pytest",
)

# Other commands shown in the docs that the tests do not run (by prefix), and why.
NOT_RUN = {
    "python benchmarks/run.py":
        "benchmarks are measurements that take seconds to minutes (benchmarks/README.md)",
    "sudo apt-get install": "installs the system packages of the prerequisites (.ci/run does)",
    "python3 -m venv": "creates and activates the environment the set-up commands run in",
    "python -m pip install":
        "installs into the current environment (.ci/run installs the wheel and the tools)",
    "scripts/build_wheel.sh":
        "builds the release sdist and wheel, a minute or more with PyPI access (.ci/run does)",
}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<info>.*)$")
LANGS = {"python", "lua", "toml", "sh", "console", "c"}


# ── parsing ──────────────────────────────────────────────────────────────────


@dataclass
class Block:
    doc: Path
    index: int
    line: int
    lang: str
    attrs: dict[str, str]
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def parse_blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their info-string attributes."""
    blocks: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        info = m["info"].strip().split()
        lang = info[0] if info else ""
        attrs = dict(part.split("=", 1) for part in info[1:] if "=" in part)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{doc}:{i + 1}: unterminated code fence")
        blocks.append(Block(doc, len(blocks), i + 1, lang, attrs, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for doc in DOCS for b in parse_blocks(doc)]


# ── per-document state ───────────────────────────────────────────────────────


@dataclass
class DocState:
    work: Path
    namespace: dict[str, Any] = field(default_factory=dict)
    done: dict[int, Optional[BaseException]] = field(default_factory=dict)


_STATES: dict[Path, DocState] = {}


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Path, DocState]]:
    yield _STATES
    for state in _STATES.values():
        for value in state.namespace.values():
            if isinstance(value, polyplug.Runtime):
                value.close()
    _STATES.clear()


def state_for(doc: Path, tmp_path_factory: pytest.TempPathFactory) -> DocState:
    if doc not in _STATES:
        work = tmp_path_factory.mktemp(doc.stem.replace(".", "_"))
        shutil.copytree(ROOT / "examples", work / "examples")
        _STATES[doc] = DocState(work=work)
    return _STATES[doc]


@contextmanager
def cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


# ── handlers ─────────────────────────────────────────────────────────────────


def check_source(block: Block) -> None:
    """The block's lines appear in order in the repository file it names."""
    target = ROOT / block.attrs["source"]
    have = [line.rstrip() for line in target.read_text(encoding="utf-8").splitlines()]
    pos = 0
    for line in block.text.splitlines():
        text = line.rstrip()
        if not text.strip() or re.fullmatch(r"\s*(--|#|//)?\s*(\.\.\.|…).*", text):
            continue
        try:
            pos = have.index(text, pos) + 1
        except ValueError:
            raise AssertionError(f"{block.id}: line not found (in order) in "
                                 f"{block.attrs['source']}: {text!r}") from None


def write_file(block: Block, state: DocState) -> Optional[Path]:
    rel = block.attrs.get("file")
    if rel is None:
        return None
    path = state.work / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text, encoding="utf-8")
    return path


def run_python(block: Block, state: DocState) -> None:
    linecache.cache[block.id] = (len(block.text), None, block.text.splitlines(True), block.id)
    code = compile(block.text, block.id, "exec")
    with cwd(ROOT):
        exec(code, state.namespace)  # noqa: S102 - the documentation's own examples


def quiet_runtime(records: list[tuple[Any, str, str]]) -> polyplug.Runtime:
    return polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).logger(
        lambda *record: records.append(record)).build()


def load_examples(rt: polyplug.Runtime) -> None:
    """Every example bundle, with the host contract examples/notes needs (app.kv@1)."""
    store: dict[str, str] = {}
    rt.provide_host_contract("app.kv", 1, {"get": lambda k: store.get(k, ""),
                                           "put": store.__setitem__},
                             signatures={"get": {"args": ["string"], "returns": "string"},
                                         "put": {"args": ["string", "string"]}})
    for bundle in sorted((ROOT / "examples").iterdir()):
        if (bundle / "manifest.toml").is_file():
            rt.load_bundle(bundle)


def run_lua(block: Block, state: DocState) -> None:
    path = write_file(block, state)
    records: list[tuple[Any, str, str]] = []
    if re.search(r"^\s*function\s+polyplug_init\s*\(", block.text, re.MULTILINE):
        if path is not None:
            bundle = path.parent
            if not (bundle / "manifest.toml").exists():
                write_manifest(bundle, bundle.name, path.name)
        else:
            bundle = Path(tempfile.mkdtemp(dir=state.work)) / "docbundle"
            bundle.mkdir()
            (bundle / "bundle.lua").write_text(block.text, encoding="utf-8")
            write_manifest(bundle, "docbundle", "bundle.lua")
        with quiet_runtime(records) as rt:
            load_examples(rt)
            m = polyplug.read_manifest(bundle)
            if m.id in rt.list_bundles():  # a copy of an example: load it on its own
                rt.unload_bundle(m.id)
            rt.load_bundle(bundle)
            assert m.id in rt.list_bundles()
        return
    # A snippet: compile and run it as a chunk inside a bundle's init.
    level = next(n for n in range(1, 100) if f"]{'=' * n}]" not in block.text)
    eq = "=" * level
    source = (f"local f, e = load([{eq}[\n{block.text}]{eq}], {block.id!r})\n"
              "if not f then error(e, 0) end\nf()\n"
              "function polyplug_init() return { ['doc.snippet'] = { "
              "factory = function() return {} end, functions = {} } }, { code = 0 } end\n")
    m = polyplug.ManifestData(id=polyplug.bundle_id("snippet"), name="snippet", loader="lua",
                              file="snippet.lua", path=state.work)
    with quiet_runtime(records) as rt:
        rt.load_bundle_from_source(m, polyplug.BundleSource.Code(source))


def write_manifest(bundle: Path, name: str, file: str) -> None:
    (bundle / "manifest.toml").write_text(
        f'name = "{name}"\nid = {polyplug.bundle_id(name)}\nloader = "lua"\nfile = "{file}"\n',
        encoding="utf-8")


def run_toml(block: Block, state: DocState) -> None:
    doc = tomllib.loads(block.text)
    path = write_file(block, state)
    text = block.text
    if path is None or "loader" not in doc:
        # complete a partial manifest with the required keys it lacks
        name = doc.get("name", "snippet")
        extra = {"name": f'"{name}"', "id": str(polyplug.bundle_id(name)),
                 "loader": '"lua"', "file": '"bundle.lua"'}
        text = "".join(f"{k} = {v}\n" for k, v in extra.items() if k not in doc) + text
        bundle = Path(tempfile.mkdtemp(dir=state.work))
        (bundle / "manifest.toml").write_text(text, encoding="utf-8")
    else:
        bundle = path.parent
    m = manifest_mod.read_manifest(bundle)
    manifest_mod.validate(m)


_NORMALISE = [
    (re.compile(r"\[\d\d:\d\d:\d\d\]"), "[HH:MM:SS]"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<hex64>"),
    (re.compile(r"\b\d+\.\d\d$"), "<ms>"),
    (re.compile(r"\s+"), " "),
]


def normalise(line: str) -> str:
    line = line.strip()
    for pattern, repl in _NORMALISE:
        line = pattern.sub(repl, line)
    return line


def matches(expected: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in normalise(expected).split("..."))
    return re.fullmatch(pattern, normalise(actual)) is not None


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """``(command, expected output lines)`` pairs of a sh / console block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if block.lang == "console":
            if line.startswith("$ "):
                out.append((line[2:].strip(), []))
            elif line.strip():
                if not out:
                    raise AssertionError(f"{block.id}: output before the first `$ ` command")
                out[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            out.append((line.strip(), []))
    return out


def not_run_reason(command: str) -> Optional[str]:
    if command in SETUP_COMMANDS:
        return "README set-up command"
    bare = re.sub(r"\s+#.*$", "", command)
    for prefix, reason in NOT_RUN.items():
        if bare == prefix or bare.startswith(prefix + " "):
            return reason
    return None


def run_shell(block: Block, state: DocState) -> None:
    bindir = state.work / ".bin"
    if not bindir.exists():
        bindir.mkdir()
        # A wrapper, not a symlink: a venv's interpreter reached through a symlink outside
        # the venv finds no pyvenv.cfg and runs as the base interpreter, without the venv.
        wrapper = bindir / "python"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        wrapper.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
               POLYPLUG=str(ROOT), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for command, expected in commands(block):
        if not_run_reason(command) is not None:
            continue
        if not command.startswith(RUN_PREFIXES):
            raise AssertionError(f"{block.id}: command {command!r} is neither run by the tests "
                                 "(RUN_PREFIXES) nor listed with a reason in NOT_RUN")
        if command.startswith("cc "):
            cbuild().build_core()  # the library the command links must be current
        proc = subprocess.run(["bash", "-c", command], check=False, cwd=state.work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=300)
        should_fail = any(line.startswith("error: ") for line in expected)
        if (proc.returncode != 0) != should_fail:
            raise AssertionError(f"{block.id}: `{command}` exited {proc.returncode}:\n{proc.stdout}")
        actual = proc.stdout.splitlines()
        pos = 0
        for line in expected:
            for k in range(pos, len(actual)):
                if matches(line, actual[k]):
                    pos = k + 1
                    break
            else:
                raise AssertionError(f"{block.id}: `{command}`: expected output line "
                                     f"{line!r} not found (in order) in:\n{proc.stdout}")


def test_shell_blocks_run_this_interpreter(tmp_path: Path) -> None:
    """`python` in sh/console blocks is the interpreter running the tests, venv included."""
    text = f"$ python -c 'import sys; print(sys.prefix)'\n{sys.prefix}\n"
    run_shell(Block(ROOT / "README.md", 0, 1, "console", {}, text), DocState(work=tmp_path))


def cbuild() -> Any:
    import cbuild as module  # tests/ is on sys.path under pytest, like conftest

    return module


def run_c(block: Block, state: DocState) -> None:
    path = write_file(block, state)
    if path is None:
        path = state.work / f"block{block.line}.c"
        path.write_text(block.text, encoding="utf-8")
    name = f"doc_{block.doc.stem}_{block.line}".replace(".", "_").replace("-", "_")
    if "shared" in block.attrs:  # a native bundle's library, used by later blocks
        lib = cbuild().build_shared(name, [path], out_dir=state.work / ".cbuild")
        dest = state.work / block.attrs["shared"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        return
    exe = cbuild().build_program(name, [path], out_dir=state.work / ".cbuild")
    proc = subprocess.run([str(exe)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{block.id}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"


HANDLERS = {"python": run_python, "lua": run_lua, "toml": run_toml, "sh": run_shell,
            "console": run_shell, "c": run_c}


def run_block(block: Block, state: DocState) -> None:
    if block.lang not in HANDLERS:
        raise AssertionError(f"{block.id}: fenced block with language {block.lang!r}; every "
                             f"block must be one of {sorted(HANDLERS)} so it can be tested")
    if "source" in block.attrs:
        check_source(block)
    if block.lang not in ("lua", "toml", "c"):
        write_file(block, state)
    HANDLERS[block.lang](block, state)


# ── the tests ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[b.id for b in ALL_BLOCKS])
def test_block(block: Block, states: dict[Path, DocState],
               tmp_path_factory: pytest.TempPathFactory) -> None:
    state = state_for(block.doc, tmp_path_factory)
    for earlier in parse_blocks(block.doc)[: block.index]:
        if earlier.index not in state.done:
            try:
                run_block(earlier, state)
                state.done[earlier.index] = None
            except BaseException as exc:  # noqa: BLE001 - reported below
                state.done[earlier.index] = exc
    if block.index in state.done:  # already replayed (e.g. by a later block's test)
        if state.done[block.index] is not None:
            raise state.done[block.index]  # type: ignore[misc]
        return
    try:
        run_block(block, state)
    except BaseException as exc:
        state.done[block.index] = exc
        raise
    state.done[block.index] = None


def test_every_document_has_blocks() -> None:
    for doc in DOCS:
        assert parse_blocks(doc), f"{doc} has no code blocks"
    names = {d.name for d in DOCS}
    assert {"README.md", "guest-authoring.md", "host-api.md", "limits.md"} <= names


def test_readme_set_up_commands_are_verbatim() -> None:
    """The two set-up commands stay exactly as a fresh machine (CI) runs them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in SETUP_COMMANDS:
        assert f"```sh\n{command}\n```" in text
        assert f"\n    {command} || exit 1\n" in ci, f".ci/run does not run {command!r}"


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    in_fence = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_links_resolve(doc: Path) -> None:
    """Relative links point at existing files, and #anchors at existing headings."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: broken link {target}"
        if anchor:
            assert anchor in _anchors(dest), f"{doc.name}: no heading for #{anchor} in {dest.name}"
