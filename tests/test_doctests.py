"""The examples in the library's docstrings run, so the documentation cannot drift."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import analyzer

MODULES = sorted(m.name for m in pkgutil.walk_packages(analyzer.__path__, "analyzer.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_examples_exist():
    # the public face documents itself by example (STYLE: numpydoc with a runnable example)
    attempted = sum(doctest.testmod(importlib.import_module(name)).attempted
                    for name in ("analyzer", "analyzer.logger", "analyzer.events",
                                 "analyzer.integrity", "analyzer.sources", "analyzer.model"))
    assert attempted >= 15
