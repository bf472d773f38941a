"""Every public builder carries a runnable docstring example (STYLE.md section 10)."""

import pytest

import gradwise.models
from tests.doc_examples import run_docstring_examples, run_page_examples

CONSTANTS = {"ACTIVATIONS", "MODELS"}


@pytest.mark.parametrize("name", sorted(set(gradwise.models.__all__) - CONSTANTS))
def test_docstring_examples_run(name):
    run_docstring_examples(getattr(gradwise.models, name), name)


def test_the_docs_page_examples_run():
    run_page_examples("models.md")
