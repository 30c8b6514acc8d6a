"""The registry against a reference model (issue 19).

``tests/c/registry_driver.c`` runs the real registry (csrc/pp_registry.c, linked from
the host core) one operation per line; :class:`Model` below is the registry as the spec
describes it (abi-runtime.md §6), written as plainly as possible: a list of slots,
scanned for every answer.  The tests feed both the same operations — registrations
with and without load/reload windows, commits, aborts, unloads, dependency
declarations, instance counts — and compare every answer: handles (slot index and
generation, so slot reuse and generation bumps are checked), provider order, the
major floor, what a handle resolves to, and the revision counter.

* a Hypothesis state machine over a few bundles and contracts (collisions,
  duplicates and windows are frequent);
* a long seeded run over hundreds of bundles and contracts, so every index of the
  registry grows and shrinks (thousands of slots, map resizes), in the plain build
  and under ASan+UBSan;
* provider order and the major floor spelled out.
"""

from __future__ import annotations

import random
import select
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import cbuild  # tests/ is on sys.path under pytest
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

HERE = Path(__file__).resolve().parent
DRIVER_SRC = HERE / "c" / "registry_driver.c"
U32 = 0xFFFFFFFF
NULL = f"{U32} 0"


# ── the reference model ──────────────────────────────────────────────────────


@dataclass
class Registration:
    bundle: int
    cid: int
    name: str
    major: int
    plugin: str
    tag: int        # the interface's loader_data: what a resolve serves
    pending: bool   # inside its bundle's open window
    order: int      # when it was published (or, while pending, registered)


class Model:
    """The registry of abi-runtime.md §6, slot by slot."""

    def __init__(self) -> None:
        self.slots: list[Optional[Registration]] = []
        self.gens: list[int] = []
        self.windows: set[int] = set()
        self.deps: dict[int, set[int]] = {}
        self.live: dict[int, int] = {}
        self.rev = 0
        self.clock = 0

    # helpers
    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def _select(self, pending: bool, keep: Callable[[Registration], bool]) -> list[int]:
        found = [i for i, s in enumerate(self.slots) if s and s.pending == pending and keep(s)]
        return sorted(found, key=lambda i: self.slots[i].order)  # type: ignore[union-attr]

    def providers(self, cid: int) -> list[int]:
        return self._select(False, lambda s: s.cid == cid)

    def published(self, bundle: int) -> list[int]:
        return self._select(False, lambda s: s.bundle == bundle)

    def pending(self, bundle: int) -> list[int]:
        return self._select(True, lambda s: s.bundle == bundle)

    def _slot(self, i: int) -> Registration:
        s = self.slots[i]
        assert s is not None
        return s

    def _vacate(self, i: int) -> None:
        self.slots[i] = None
        self.gens[i] = (self.gens[i] + 1) & U32

    def _handle(self, i: int) -> str:
        return f"{i} {self.gens[i]}"

    # operations, each returning the driver's answer
    def reset(self) -> str:
        self.__init__()  # type: ignore[misc]
        return "ok"

    def reg(self, bundle: int, cid: int, name: str, major: int, plugin: str, tag: int) -> str:
        windowed = bundle in self.windows
        if any(self._slot(i).name != name for i in self.providers(cid)):
            return "PP_ERR_ID_COLLISION 1"
        mine = self.pending(bundle) if windowed else self.published(bundle)
        if any(self._slot(i).cid == cid for i in mine):
            return "PP_ERR_DUPLICATE_PROVIDER 7"
        free = [i for i, s in enumerate(self.slots) if s is None]
        if free:
            i = free[0]  # the lowest empty slot
        else:
            i = len(self.slots)
            self.slots.append(None)
            self.gens.append(0)
        self.slots[i] = Registration(bundle, cid, name, major, plugin, tag, windowed,
                                     self._tick())
        self.rev += 1
        return "PP_OK 0"

    def begin(self, bundle: int) -> str:
        self.windows.add(bundle)
        return "ok"

    def abort(self, bundle: int) -> str:
        for i in self.pending(bundle):
            self._vacate(i)
        self.windows.discard(bundle)
        return "ok"

    def commit(self, bundle: int) -> str:
        kept: set[int] = set()
        for i in self.pending(bundle):
            new = self._slot(i)
            old = [k for k in self.published(bundle) if self._slot(k).cid == new.cid]
            if old:  # the published slot stays, serving the new registration
                o = self._slot(old[0])
                o.tag, o.major, o.plugin = new.tag, new.major, new.plugin
                kept.add(old[0])
                self._vacate(i)
            else:
                new.pending = False
                new.order = self._tick()
                kept.add(i)
        for k in self.published(bundle):
            if k not in kept:  # the new version dropped it
                self._vacate(k)
        self.windows.discard(bundle)
        self.rev += 1
        return "ok"

    def inval(self, bundle: int) -> str:
        mine = [i for i, s in enumerate(self.slots) if s and s.bundle == bundle]
        for i in mine:
            self._vacate(i)
        if mine:
            self.rev += 1
        return str(len(mine))

    def find(self, cid: int, floor: int) -> str:
        hits = [i for i in self.providers(cid) if self._slot(i).major >= floor]
        return self._handle(hits[0]) if hits else NULL

    def findb(self, bundle: int, cid: int, floor: int) -> str:
        hits = [i for i in self.published(bundle)
                if self._slot(i).cid == cid and self._slot(i).major >= floor]
        return self._handle(hits[0]) if hits else NULL

    def all(self, cid: int, floor: int) -> str:
        hits = [i for i in self.providers(cid) if self._slot(i).major >= floor]
        return " ".join([str(len(hits)), *(self._handle(i) for i in hits)])

    def _live(self, index: int, gen: int) -> Optional[Registration]:
        s = self.slots[index] if index < len(self.slots) else None
        return s if s and not s.pending and self.gens[index] == gen else None

    def look(self, index: int, gen: int) -> str:
        if index >= len(self.slots):
            return "invalid"
        s = self._live(index, gen)
        return f"{s.tag} {s.major}" if s else "stale"

    def info(self, index: int, gen: int) -> str:
        if index >= len(self.slots):
            return "PP_ERR_INVALID_HANDLE"
        s = self._live(index, gen)
        if not s:
            return "PP_ERR_STALE_HANDLE"
        return f"{s.bundle} {s.cid} {s.name} {s.plugin} {s.major}"

    def slots_of(self, bundle: int) -> str:
        mine = [self._slot(i) for i in self.published(bundle)]
        return " ".join([str(len(mine)),
                         *(f"{s.cid}:{s.name}:{s.plugin}:{s.major}" for s in mine)])

    def declare(self, bundle: int, cids: list[int]) -> str:
        have = self.deps.setdefault(bundle, set())
        if set(cids) - have:
            self.rev += 1
        have.update(cids)
        if not have:
            del self.deps[bundle]
        return "ok"

    def drop(self, bundle: int) -> str:
        self.deps.pop(bundle, None)
        return "ok"

    def declares(self, bundle: int, cid: int) -> str:
        return str(int(cid in self.deps.get(bundle, ())))

    def _depends(self, dependent: int, provider: int) -> bool:
        return any(self._slot(i).cid in self.deps.get(dependent, ())
                   for i in self.published(provider))

    def dependson(self, dependent: int, provider: int) -> str:
        return str(int(self._depends(dependent, provider)))

    def dependents(self, provider: int) -> str:
        who = sorted(d for d in self.deps if self._depends(d, provider))
        return " ".join([str(len(who)), *map(str, who)])

    def count(self, cid: int, delta: int) -> str:
        now = self.live.get(cid, 0) + delta
        if now > 0:
            self.live[cid] = now
        else:
            self.live.pop(cid, None)
        return "ok"

    def live_of(self, bundle: int) -> str:
        return str(sum(self.live.get(self._slot(i).cid, 0) for i in self.published(bundle)))

    def resetc(self, bundle: int) -> str:
        for i in self.published(bundle):
            self.live.pop(self._slot(i).cid, None)
        return "ok"

    def apply(self, command: str) -> str:
        """The model's answer to one driver command line."""
        word, *rest = command.split()
        if word == "reg":
            b, cid, name, major, plugin, tag = rest
            return self.reg(int(b), int(cid), name, int(major), plugin, int(tag))
        if word == "deps":
            return self.declare(int(rest[0]), [int(c) for c in rest[1:]])
        if word == "rev":
            return str(self.rev)
        method = {"live": self.live_of, "slots": self.slots_of}.get(word) or getattr(self, word)
        return method(*map(int, rest))


# ── the driver ───────────────────────────────────────────────────────────────


def _build(sanitize: bool) -> Path:
    try:
        return cbuild.build_program("registry_driver", [DRIVER_SRC], sanitize=sanitize,
                                    cflags=[f"-I{cbuild.CSRC}"],
                                    opt="-O1" if sanitize else "-O2")
    except cbuild.CBuildError as exc:
        pytest.fail(f"could not build the registry driver:\n{exc}")


class Driver:
    """The registry driver as a long-lived process, one command at a time."""

    TIMEOUT = 10.0

    def __init__(self, exe: Path) -> None:
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.TIMEOUT)
        assert ready, f"the registry driver hung on {command!r}"
        line = self.proc.stdout.readline()
        assert line, f"the registry driver died on {command!r}: exit {self.proc.wait()}, " \
                     f"{self.proc.stderr.read() if self.proc.stderr else ''}"
        return line.rstrip("\n")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        assert self.proc.wait(timeout=self.TIMEOUT) == 0


@pytest.fixture(scope="module")
def driver_exe() -> Path:
    return _build(sanitize=False)


@pytest.fixture(scope="module")
def driver(driver_exe: Path) -> Iterator[Driver]:
    d = Driver(driver_exe)
    yield d
    d.close()


def batch(exe: Path, commands: list[str], timeout: float) -> list[str]:
    """Run a whole script through a fresh driver process (hard timeout)."""
    proc = subprocess.run([str(exe)], input="".join(c + "\n" for c in commands),
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout.splitlines()


# ── Hypothesis: random operations against the model ──────────────────────────

BUNDLES = [0, 1, 2, 3, 2**64 - 1]
CIDS = [0, 7, 8, 2**63, 2**64 - 1]


class RegistryMachine(RuleBasedStateMachine):
    driver: Driver  # set by the test

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.check("reset")

    def check(self, command: str) -> str:
        want = self.model.apply(command)
        got = self.driver.ask(command)
        assert got == want, f"{command!r}: registry says {got!r}, the model {want!r}"
        return got

    @rule(bundle=st.sampled_from(BUNDLES), cid=st.sampled_from(CIDS),
          clash=st.integers(0, 9), major=st.integers(0, 3), plugin=st.sampled_from("pq"),
          tag=st.integers(1, 3))
    def register(self, bundle: int, cid: int, clash: int, major: int, plugin: str,
                 tag: int) -> None:
        name = f"x{cid}@1" if clash == 0 else f"c{cid}@1"  # one in ten: an id collision
        self.check(f"reg {bundle} {cid} {name} {major} {plugin} {tag}")

    @rule(op=st.sampled_from(["begin", "commit", "abort", "inval"]),
          bundle=st.sampled_from(BUNDLES))
    def window_or_unload(self, op: str, bundle: int) -> None:
        self.check(f"{op} {bundle}")

    @rule(target=handles, cid=st.sampled_from(CIDS), floor=st.integers(0, 4))
    def find(self, cid: int, floor: int) -> object:
        return self.check(f"find {cid} {floor}")

    @rule(target=handles, bundle=st.sampled_from(BUNDLES), cid=st.sampled_from(CIDS),
          floor=st.integers(0, 4))
    def find_by_bundle(self, bundle: int, cid: int, floor: int) -> object:
        return self.check(f"findb {bundle} {cid} {floor}")

    @rule(target=handles, cid=st.sampled_from(CIDS), floor=st.integers(0, 4))
    def find_all(self, cid: int, floor: int) -> object:
        words = self.check(f"all {cid} {floor}").split()[1:]
        return multiple(*(f"{words[k]} {words[k + 1]}" for k in range(0, len(words), 2)))

    @rule(handle=handles)
    def resolve(self, handle: str) -> None:
        self.check(f"look {handle}")
        self.check(f"info {handle}")

    @rule(index=st.integers(0, 12), gen=st.integers(0, 3))
    def resolve_any(self, index: int, gen: int) -> None:
        self.check(f"look {index} {gen}")

    @rule(op=st.sampled_from(["slots", "live", "resetc", "drop"]),
          bundle=st.sampled_from(BUNDLES))
    def per_bundle(self, op: str, bundle: int) -> None:
        self.check(f"{op} {bundle}")

    @rule(bundle=st.sampled_from(BUNDLES), cids=st.lists(st.sampled_from(CIDS), max_size=3))
    def declare(self, bundle: int, cids: list[int]) -> None:
        self.check(" ".join(["deps", str(bundle), *map(str, cids)]))

    @rule(a=st.sampled_from(BUNDLES), b=st.sampled_from(BUNDLES), cid=st.sampled_from(CIDS))
    def dependencies(self, a: int, b: int, cid: int) -> None:
        self.check(f"declares {a} {cid}")
        self.check(f"dependson {a} {b}")
        self.check(f"dependents {b}")

    @rule(cid=st.sampled_from(CIDS), delta=st.sampled_from([1, 1, 2, -1, -3]))
    def count(self, cid: int, delta: int) -> None:
        self.check(f"count {cid} {delta}")

    @invariant()
    def revision(self) -> None:
        self.check("rev")


def test_registry_matches_the_model(driver: Driver) -> None:
    RegistryMachine.driver = driver
    run_state_machine_as_test(
        RegistryMachine,
        settings=settings(max_examples=150, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]))


# ── a long run: every index grows and shrinks ─────────────────────────────────


def long_script(seed: int, steps: int) -> list[str]:
    """Registrations by hundreds of bundles (some in windows), then churn, then unloads:
    the slot count passes several chunks and the maps resize both ways."""
    rnd = random.Random(seed)
    bundles = [rnd.getrandbits(64) for _ in range(300)]
    cids = [rnd.getrandbits(64) for _ in range(400)]
    out: list[str] = []
    windows: set[int] = set()

    def step(phase: str) -> None:
        b = rnd.choice(bundles)
        cid = rnd.choice(cids[:60]) if rnd.random() < 0.3 else rnd.choice(cids)
        roll = rnd.random()
        if phase == "fill" or roll < 0.45:
            name = f"x{cid}@1" if rnd.random() < 0.03 else f"c{cid}@1"  # an id collision
            out.append(f"reg {b} {cid} {name} {rnd.randint(0, 3)} p{rnd.randint(0, 2)} "
                       f"{rnd.randint(1, 3)}")
        elif roll < 0.52:
            out.append(f"begin {b}")
            windows.add(b)
        elif roll < 0.60 and windows:
            w = rnd.choice(sorted(windows))
            out.append(f"{rnd.choice(['commit', 'commit', 'abort'])} {w}")
            windows.discard(w)
        elif roll < 0.66 or phase == "drain":
            out.append(f"inval {b}")
        elif roll < 0.72:
            out.append(f"find {cid} {rnd.randint(0, 3)}")
        elif roll < 0.76:
            out.append(f"findb {b} {cid} {rnd.randint(0, 3)}")
        elif roll < 0.80:
            out.append(f"all {cid} {rnd.randint(0, 3)}")
        elif roll < 0.84:
            out.append(f"look {rnd.randint(0, 1200)} {rnd.randint(0, 2)}")
        elif roll < 0.87:
            out.append(f"slots {b}")
        elif roll < 0.91:
            out.append(" ".join(["deps", str(b), *(str(rnd.choice(cids))
                                                   for _ in range(rnd.randint(0, 3)))]))
        elif roll < 0.93:
            out.append(f"drop {b}")
        elif roll < 0.96:
            out.append(f"dependents {b}")
        else:
            out.append(f"count {cid} {rnd.choice([1, 2, -1])}")
            out.append(f"live {b}")
        if rnd.random() < 0.05:
            out.append("rev")

    for _ in range(steps // 4):
        step("fill")
    for _ in range(steps // 2):
        step("churn")
    for w in sorted(windows):
        out.append(f"commit {w}")
    windows.clear()
    for _ in range(steps // 4):
        step("drain")
    out += [f"inval {b}" for b in bundles] + ["rev", f"find {cids[0]} 0", "look 0 0"]
    return out


def check_script(exe: Path, commands: list[str], timeout: float) -> None:
    model = Model()
    want = [model.apply(c) for c in commands]
    got = batch(exe, commands, timeout)
    assert len(got) == len(want), got[-3:]
    for command, g, w in zip(commands, got, want):
        assert g == w, f"{command!r}: registry says {g!r}, the model {w!r}"
    assert len(model.slots) > 3 * 256, "the run should span several slot chunks"


def test_long_run_matches_the_model(driver_exe: Path) -> None:
    check_script(driver_exe, long_script(seed=19, steps=4000), timeout=60)


def test_long_run_under_asan_and_ubsan() -> None:
    check_script(_build(sanitize=True), long_script(seed=20, steps=4000), timeout=300)


# ── provider order and the major floor, spelled out ──────────────────────────


def conversation(driver: Driver) -> Callable[[str], str]:
    """``ask(command)``: the driver's answer, checked against a fresh model's."""
    model = Model()

    def ask(command: str) -> str:
        got, want = driver.ask(command), model.apply(command)
        assert got == want, (command, got, want)
        return got

    ask("reset")
    return ask


def test_provider_order_and_major_floor(driver: Driver) -> None:
    ask = conversation(driver)
    x = 42
    # three providers, majors 1, 3, 2, in that order of registration
    assert ask(f"reg 1 {x} x@1 1 one 1") == "PP_OK 0"
    assert ask(f"reg 2 {x} x@1 3 two 2") == "PP_OK 0"
    assert ask(f"reg 3 {x} x@1 2 three 3") == "PP_OK 0"
    assert ask(f"find {x} 0") == "0 0"  # first registered wins
    assert ask(f"find {x} 2") == "1 0"  # the first whose major is high enough
    assert ask(f"find {x} 3") == "1 0"
    assert ask(f"find {x} 4") == NULL
    assert ask(f"all {x} 2") == "2 1 0 2 0"  # registration order, filtered
    assert ask(f"findb 3 {x} 2") == "2 0" and ask(f"findb 3 {x} 3") == NULL
    # a reload of the first provider keeps its place, slot and generation
    ask("begin 1")
    assert ask(f"reg 1 {x} x@1 1 one-v2 9") == "PP_OK 0"
    assert ask(f"find {x} 0") == "0 0" and ask("look 0 0") == "1 1"  # pending: invisible
    ask("commit 1")
    assert ask(f"all {x} 0") == "3 0 0 1 0 2 0" and ask("look 0 0") == "9 1"
    # unloading the first hands the contract to the second; its slot is reused first
    assert ask("inval 1") == "1"
    assert ask(f"find {x} 0") == "1 0" and ask("look 0 0") == "stale"
    assert ask(f"reg 4 {x} x@1 5 four 4") == "PP_OK 0"
    assert ask(f"all {x} 0") == "3 1 0 2 0 0 1"  # slot 0, generation 1, last in order
    assert ask(f"find {x} 4") == "0 1"
    # a failed reload leaves everything as it was
    ask("begin 2")
    assert ask(f"reg 2 {x} x@1 1 two-v2 7") == "PP_OK 0"
    ask("abort 2")
    assert ask(f"all {x} 0") == "3 1 0 2 0 0 1" and ask("look 1 0") == "2 3"


def test_an_id_collision_published_through_a_window(driver: Driver) -> None:
    """Pending registrations are not checked against each other, so two names that
    share an id can both end up published (upstream lets this happen too); from then
    on a registration clashes with whichever of them has the other name."""
    ask = conversation(driver)
    ask("begin 1")
    assert ask("reg 1 5 a@1 1 p 1") == "PP_OK 0"   # pending: nobody sees it
    assert ask("reg 2 5 b@1 1 p 2") == "PP_OK 0"   # so `b` takes the id
    ask("commit 1")
    assert ask("all 5 0") == "2 1 0 0 0"           # both published, `b` first
    assert ask("reg 3 5 b@1 1 p 3") == "PP_ERR_ID_COLLISION 1"  # clashes with `a`
    assert ask("reg 3 5 a@1 1 p 3") == "PP_ERR_ID_COLLISION 1"  # clashes with `b`
    assert ask("inval 2") == "1"                   # `a` alone again
    assert ask("reg 3 5 a@1 1 p 3") == "PP_OK 0"
    assert ask("reg 4 5 b@1 1 p 4") == "PP_ERR_ID_COLLISION 1"


# ── the hash map underneath ──────────────────────────────────────────────────


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "asan"])
def test_hash_map_against_an_array(driver_exe: Path, sanitize: bool) -> None:
    """csrc/pp_map.c directly: random puts, overwrites, gets, removes and iterations
    over key pairs (zero and all-ones halves included) while the map grows to
    thousands of entries, shrinks and grows again, checked against a plain array."""
    exe = _build(sanitize=True) if sanitize else driver_exe
    ops = "60000" if sanitize else "400000"
    got = batch(exe, [f"maptest {seed} {ops} 6000" for seed in (1, 19, 2**63 + 5)],
                timeout=300)
    assert len(got) == 3 and all(line.startswith("ok ") for line in got), got
