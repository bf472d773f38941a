"""The docs page and every public docstring example run as written."""

import pytest

from gradwise import lr_finder
from tests.doc_examples import run_docstring_examples, run_page_examples


def test_the_docs_page_examples_run() -> None:
    run_page_examples("lr_finder.md")


@pytest.mark.parametrize("name", lr_finder.__all__)
def test_docstring_examples_run(name: str) -> None:
    run_docstring_examples(getattr(lr_finder, name), name)
