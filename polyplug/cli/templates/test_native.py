"""Tests of the $name bundle: `python -m pytest` in this directory (needs pytest, make
and a C compiler)."""

import subprocess
from pathlib import Path

import pytest

import polyplug

BUNDLE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def library():
    """Build lib$module.so with the bundle's Makefile (a no-op when it is current)."""
    subprocess.run(["make", "-C", str(BUNDLE)], check=True, capture_output=True)


@pytest.fixture
def greet():
    with polyplug.RuntimeBuilder().loader(polyplug.NativeLoader()).build() as rt:
        rt.load_bundle(BUNDLE)
        yield rt.contract("$contract", 1)


def test_hello(greet):
    assert greet.hello("polyplug") == "Hello, polyplug!"


def test_hello_defaults_to_world(greet):
    assert greet.hello("") == "Hello, world!"


def test_hello_refuses_long_names(greet):
    with pytest.raises(polyplug.GuestError, match="longer than 200 bytes"):
        greet.hello("x" * 201)


def test_hello_on_an_instance(greet):
    with greet.instance() as inst:
        assert inst.hello("instance") == "Hello, instance!"
