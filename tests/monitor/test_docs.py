"""The examples in docs/monitor.md and in gradwise.monitor's docstrings run as written."""

from __future__ import annotations

import pytest

from gradwise import monitor
from tests.doc_examples import run_docstring_examples, run_page_examples


def test_the_docs_page_examples_run() -> None:
    run_page_examples("monitor.md")


@pytest.mark.parametrize("name", monitor.__all__)
def test_docstring_examples_run(name: str) -> None:
    public = getattr(monitor, name)
    assert public.__doc__, f"{name} has no docstring"
    run_docstring_examples(public, name, require=False)


@pytest.mark.parametrize("name", [n for n in monitor.__all__ if n != "DETECTORS"])
def test_every_public_function_and_class_has_a_running_example(name: str) -> None:
    run_docstring_examples(getattr(monitor, name), name)
