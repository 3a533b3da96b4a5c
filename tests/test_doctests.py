"""Docstring examples of ``tfcroloss.models`` and ``tfcroloss.pipelines`` run, under their installed
names (pytest's ``--doctest-modules`` would import ``models/`` a second time as ``models``, and
register its Keras classes twice)."""

import doctest
import importlib
import pkgutil

import pytest

import tfcroloss.models
import tfcroloss.pipelines


def _modules() -> list[str]:
    names = []
    for package in (tfcroloss.models, tfcroloss.pipelines):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_modules_with_examples_are_found():
    names = _modules()
    assert "tfcroloss.pipelines.retrieval" in names and "tfcroloss.models.two_tower" in names
