"""Every module declares its public surface; the lists are complete and sorted."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import streamproc

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(streamproc.__path__, "streamproc.")
    if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions
    assert exported == sorted(exported, key=lambda s: (0 if s.isupper() else 1 if s[0].isupper() else 2, s))
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol}"


@pytest.mark.parametrize("name", MODULES)
def test_public_classes_and_functions_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", None) == name
    }
    assert defined <= set(module.__all__), (
        f"{name} defines but does not export {defined - set(module.__all__)}"
    )
