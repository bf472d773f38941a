"""The examples in docs/init.md and in the public docstrings run as written."""

import doctest
import inspect
import re
from pathlib import Path

import pytest

from gradwise import init

DOCS = Path(__file__).parents[2] / "docs" / "init.md"


def test_the_docs_page_examples_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 -- our own docs
    assert all(abs(variance - 1) < 0.05 for variance in namespace["variances"].values())
    assert namespace["caught"][0].category is init.SymmetryWarning


@pytest.mark.parametrize("name", init.__all__)
def test_docstring_examples_run(name):
    public = getattr(init, name)
    module = inspect.getmodule(public)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs=vars(module))
    assert public.__doc__, f"{name} has no docstring"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name
