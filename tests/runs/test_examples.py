"""Every example in the public docstrings of gradwise.runs runs and prints what it shows."""

import tempfile

import pytest

import gradwise.runs
from tests.doc_examples import docstring_examples, run_example

EXAMPLES = docstring_examples(gradwise.runs)


def test_the_public_api_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example(example, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples' folders go here
    run_example(example)
