"""Every public name is documented with a runnable example, and the docs page runs."""

import doctest
import re
from pathlib import Path

import pytest

import gradwise.regularize

DOCS_PAGE = Path(__file__).parents[2] / "docs" / "regularize.md"
DOCS_TEXT = DOCS_PAGE.read_text()
DOCS_EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS_TEXT, flags=re.DOTALL)
CONSTANTS = {"NORMALIZATION_KINDS"}


@pytest.mark.parametrize("name", sorted(set(gradwise.regularize.__all__) - CONSTANTS))
def test_docstring_examples_run(name):
    public = getattr(gradwise.regularize, name)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    assert sum(len(test.examples) for test in tests) > 0, f"{name} has no example"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name


@pytest.mark.parametrize("name", sorted(set(gradwise.regularize.__all__) - CONSTANTS))
def test_every_public_name_is_on_the_docs_page(name):
    assert f"`{name}" in DOCS_TEXT


@pytest.mark.parametrize("number", range(len(DOCS_EXAMPLES)))
def test_docs_page_examples_run(number):
    code = compile(DOCS_EXAMPLES[number], f"{DOCS_PAGE}, example {number}", "exec")
    exec(code, {})
