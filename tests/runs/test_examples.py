"""Every example in the public docstrings of gradwise.runs runs and prints what it shows."""

import doctest
import tempfile

import pytest

import gradwise.runs

FINDER = doctest.DocTestFinder(exclude_empty=True)
EXAMPLES = [
    test
    for name in gradwise.runs.__all__
    for test in FINDER.find(getattr(gradwise.runs, name), name)
    if test.examples
]


def test_the_public_api_has_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda test: test.name)
def test_docstring_example(example, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples' folders go here
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(example)
    assert result.failed == 0
