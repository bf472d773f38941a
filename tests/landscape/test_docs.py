"""The examples in docs/landscape.md and in gradwise.landscape's docstrings run as written."""

from __future__ import annotations

import pytest

from gradwise import landscape
from tests.doc_examples import run_docstring_examples, run_page_examples


def test_the_docs_page_examples_run() -> None:
    run_page_examples("landscape.md")


@pytest.mark.parametrize("name", landscape.__all__)
def test_every_public_name_has_a_running_example(name: str) -> None:
    public = getattr(landscape, name)
    assert public.__doc__, f"{name} has no docstring"
    run_docstring_examples(public, name)
