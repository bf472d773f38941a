"""Every public name of gradwise.prune carries a runnable example; the docs page runs."""

import pytest

import gradwise.prune
from tests.doc_examples import run_docstring_examples, run_page_examples

CONSTANTS = {"SPARSITY_FILE"}


@pytest.mark.parametrize("name", sorted(set(gradwise.prune.__all__) - CONSTANTS))
def test_docstring_examples_run(name: str) -> None:
    run_docstring_examples(getattr(gradwise.prune, name), name)


def test_the_docs_page_examples_run() -> None:
    run_page_examples("prune.md")
