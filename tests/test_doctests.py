"""The ``Example:`` sections of the package's docstrings run, and print what they say they print."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import srgan_med


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(srgan_med.__path__, prefix="srgan_med."):
        module = importlib.import_module(info.name)
        if any(test.examples for test in doctest.DocTestFinder().find(module)):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
