"""The example third-party package's own tests run as part of memtune's suite (scripts/test
installs examples/*/ into the test environment; the root pytest only collects tests/)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "memtune-page-reporting"
# `pip install .[test]` alone does not install the example package: skip (with the reason) instead
# of failing collection; scripts/test installs it, so CI runs these tests
page_reporting = pytest.importorskip("memtune_page_reporting",
                                     reason="the example package is not installed (scripts/test installs it)")


def _example_tests():
    spec = importlib.util.spec_from_file_location("example_page_reporting_tests",
                                                  EXAMPLE / "tests" / "test_page_reporting.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(n, f) for n, f in vars(module).items() if n.startswith("test_") and inspect.isfunction(f)]


TESTS = _example_tests()


def test_example_package_is_installed_from_this_tree():
    assert Path(page_reporting.__file__).resolve().is_relative_to(EXAMPLE)
    assert len(TESTS) >= 7


@pytest.mark.slow
@pytest.mark.parametrize(("name", "func"), TESTS, ids=[n for n, _ in TESTS])
def test_example_package(name, func):
    assert not inspect.signature(func).parameters, f"{name} needs fixtures; run it with pytest instead"
    func()
