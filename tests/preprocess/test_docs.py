"""Every docstring example and every example on docs/preprocess.md runs."""

import doctest
import re
from pathlib import Path

import pytest

from gradwise import preprocess


@pytest.mark.parametrize("name", preprocess.__all__)
def test_docstring_examples_run(name):
    public = getattr(preprocess, name)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    examples = [test for test in tests if test.examples]
    assert examples or name in {"ConstantFeatureWarning", "NotFittedError", "Preprocessor", "load"}
    for test in examples:
        result = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE).run(test)
        assert result.failed == 0, name


DOCS_PAGE = Path(__file__).parents[2] / "docs" / "preprocess.md"
DOCS_EXAMPLES = re.findall(r"```python\n(.*?)```", DOCS_PAGE.read_text(), flags=re.DOTALL)


def test_docs_page_has_examples():
    assert len(DOCS_EXAMPLES) >= 7


@pytest.mark.parametrize("number", range(len(DOCS_EXAMPLES)))
def test_docs_page_examples_run(number):
    code = compile(DOCS_EXAMPLES[number], f"{DOCS_PAGE}, example {number}", "exec")
    exec(code, {})
