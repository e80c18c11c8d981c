"""Every dataset's docstring example runs as written: each ``datasets/*_dataset.py`` module has one, and it passes."""
from __future__ import annotations

import doctest
import importlib
import logging
from pathlib import Path

import pytest

import multimodal_suite.datasets

DATASET_MODULES = sorted(
    f"multimodal_suite.datasets.{path.stem}"
    for path in Path(multimodal_suite.datasets.__file__).parent.glob("*_dataset.py")
)


def test_every_exported_dataset_has_its_module_here() -> None:
    exported = {getattr(multimodal_suite.datasets, name).__module__ for name in multimodal_suite.datasets.__all__}
    assert exported <= set(DATASET_MODULES)


@pytest.mark.parametrize("module_name", DATASET_MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    tests = [test for test in doctest.DocTestFinder().find(module) if test.examples]
    assert tests, f"{module_name} has no docstring example"
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    # A Kedro session earlier in the run leaves a console log handler behind; its lines are not the example's output.
    logging.disable(logging.CRITICAL)
    try:
        for test in tests:
            runner.run(test, out=report.append)
    finally:
        logging.disable(logging.NOTSET)
    assert runner.tries > 0 and runner.failures == 0, "".join(report)
