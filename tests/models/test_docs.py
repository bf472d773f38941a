"""Every public builder carries a runnable docstring example (STYLE.md section 10)."""

import doctest

import pytest

import gradwise.models

CONSTANTS = {"ACTIVATIONS", "MODELS"}


@pytest.mark.parametrize("name", sorted(set(gradwise.models.__all__) - CONSTANTS))
def test_docstring_examples_run(name):
    public = getattr(gradwise.models, name)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    assert sum(len(test.examples) for test in tests) > 0, f"{name} has no example"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name


def test_the_docs_page_examples_run():
    import re
    from pathlib import Path

    page = Path(__file__).parents[2] / "docs" / "models.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})  # noqa: S102 - our own docs
