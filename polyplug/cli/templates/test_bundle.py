"""Tests of the $name bundle: `python -m pytest` in this directory (needs pytest)."""

from pathlib import Path

import pytest

import polyplug

BUNDLE = Path(__file__).resolve().parent


@pytest.fixture
def greet():
    with polyplug.RuntimeBuilder().loader(polyplug.LuaLoader()).build() as rt:
        rt.load_bundle(BUNDLE)
        yield rt.contract("$contract", 1)


def test_hello(greet):
    assert greet.hello("polyplug") == "Hello, polyplug!"


def test_hello_defaults_to_world(greet):
    assert greet.hello("") == "Hello, world!"


def test_hello_on_an_instance(greet):
    with greet.instance() as inst:
        assert inst.hello("instance") == "Hello, instance!"
