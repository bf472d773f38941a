"""docs/optim.md's examples and gradwise.optim's docstring examples run as written."""

from __future__ import annotations

import doctest

import pytest

from gradwise import optim
from tests.doc_examples import docstring_examples, run_example, run_page_examples


def test_the_page_examples_run() -> None:
    run_page_examples("optim.md")


@pytest.mark.parametrize("example", docstring_examples(optim), ids=lambda test: test.name)
def test_docstring_examples_run(example: doctest.DocTest) -> None:
    run_example(example)
