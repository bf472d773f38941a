"""Every public function carries a runnable docstring example (STYLE.md section 10)."""

import pytest

import gradwise.losses
from tests.doc_examples import run_docstring_examples, run_page_examples

CONSTANTS = {"LOSS_NAMES", "Loss"}


@pytest.mark.parametrize("name", sorted(set(gradwise.losses.__all__) - CONSTANTS))
def test_docstring_examples_run(name):
    run_docstring_examples(getattr(gradwise.losses, name), name)


def test_the_docs_page_examples_run():
    run_page_examples("losses.md")
