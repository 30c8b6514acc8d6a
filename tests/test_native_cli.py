"""The command line with native bundles: ``new --native`` scaffolds a C bundle that builds,
loads, answers ``call`` and passes its own tests; ``load``, ``call`` and ``watch`` work on
native bundles beside Lua ones (the CLI registers both loaders)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import native_plugins as plugins
from test_cli import ENV, EXAMPLES, STAMP, Watch, run_cli

from polyplug import bundle_id, guest_contract_id, read_manifest


def make(d: Path) -> None:
    proc = subprocess.run(["make", "-C", str(d)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_new_native_scaffolds_a_c_bundle_that_builds_and_passes_its_tests(tmp_path: Path
                                                                          ) -> None:
    proc = run_cli("new", "my-greeter", "--native", "--dir", tmp_path)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    d = tmp_path / "my-greeter"
    files = ["manifest.toml", "my_greeter.c", "Makefile", "polyplug_abi.h", ".gitignore",
             "test_my_greeter.py"]
    assert sorted(p.name for p in d.iterdir()) == sorted(files)
    assert proc.stdout.splitlines() == [
        f"created {d}/", *(f"  {f}" for f in files),
        f"build: make -C {d}   (needs a C compiler)",
        f"try:  python -m polyplug call {d} my_greeter.greet@1 hello you",
        f"test: python -m pytest {d}   (needs pytest: python -m pip install pytest)"]
    # the header is the one the host is built with
    assert (d / "polyplug_abi.h").read_bytes() == (
        Path(__file__).resolve().parent.parent / "csrc" / "include" / "polyplug_abi.h"
    ).read_bytes()
    assert f"{guest_contract_id('my_greeter.greet', 1)}ULL" in (d / "my_greeter.c").read_text()
    m = read_manifest(d)
    assert (m.name, m.id, m.loader, m.file) == ("my-greeter", bundle_id("my-greeter"), "native",
                                                "libmy_greeter.so")

    proc = run_cli("load", d)  # not built yet: a clear error, not a crash
    assert proc.returncode == 1
    assert "failed to canonicalize artifact path" in proc.stdout + proc.stderr

    make(d)
    assert (d / "libmy_greeter.so").is_file()
    proc = run_cli("load", d)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^my-greeter\s+0\.1\.0\s+native\s+my_greeter\.greet@1\s+1\s",
                     proc.stdout, re.M), proc.stdout
    proc = run_cli("call", d, "my_greeter.greet@1", "hello", "you")
    assert (proc.returncode, proc.stdout) == (0, "Hello, you!\n")
    proc = run_cli("call", d, "my_greeter.greet", "hello", "", "--json")
    assert json.loads(proc.stdout) == {"result": "Hello, world!"}
    proc = run_cli("call", d, "my_greeter.greet", "hello", "x" * 300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: GuestError: hello: the name is longer than 200 bytes"

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(d)], capture_output=True, text=True, cwd=d, env=ENV,
                           timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout


def test_load_and_call_native_and_lua_bundles_together(tmp_path: Path) -> None:
    plugins.bundle(tmp_path, "nplug", "plug", extra=(
        '\n[contracts."native.math@1".functions]\n'
        'add = { id = 0, args = ["u32", "u32"], returns = "u32" }\n'))
    (tmp_path / "arith").symlink_to(EXAMPLES / "arith")
    proc = run_cli("load", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^nplug\s+1\.0\.0\s+native\s+native\.math@1\s+9\s", proc.stdout, re.M)
    assert re.search(r"^arith\s+1\.0\.0\s+lua\s+example\.arith@1\s+3\s", proc.stdout, re.M)
    assert proc.stdout.splitlines()[-1] == "2 bundle(s) loaded, 0 failed"
    proc = run_cli("call", tmp_path, "native.math@1", "add", "40", "2")
    assert (proc.returncode, proc.stdout) == (0, "42\n")


def test_watch_reloads_a_rebuilt_native_bundle(tmp_path: Path) -> None:
    d = plugins.bundle(tmp_path, "nplug", "plug")
    w = Watch(d, "--interval", "0.05", "--debounce", "0.1", "--max-reloads", "2",
              "--timeout", "120")
    try:
        w.wait_for(STAMP + r"nplug: Loaded 1\.0\.0 \(native\.math@1\)")
        w.wait_for("watching 1 bundle")
        plugins.install("plug_v2", d / "libplug.so")  # a rebuild
        w.wait_for(STAMP + "nplug: Preparing$")
        w.wait_for(STAMP + "nplug: Reloaded$")
        (d / "libplug.so").write_text("a broken build\n" * 16)
        w.wait_for(STAMP + "nplug: Preparing$")
        failed = w.wait_for(STAMP + "nplug: Failed: ")
        assert "invalid ELF header" in failed
        code, err = w.finish()
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
    assert code == 1, err  # the last reload failed
    assert "Traceback" not in err
