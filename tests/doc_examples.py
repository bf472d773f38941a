"""Running the examples of the docs: docstrings (doctest) and a page's ```python blocks."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).parents[1] / "docs"


def run_docstring_examples(public: Any, name: str, *, require: bool = True) -> None:
    """Run ``public``'s docstring examples with no globals, so each must import what it uses."""
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    if require:
        assert sum(len(test.examples) for test in tests) > 0, f"{name} has no example"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name


def run_page_examples(page_name: str) -> None:
    """Run every ```python block of docs/<page_name>, each in a fresh namespace."""
    page = DOCS / page_name
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks, f"{page} has no python example"
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})  # noqa: S102 - our own docs


def docstring_examples(module: Any) -> list[doctest.DocTest]:
    """Every docstring example of a package's public names (``__all__``), for parametrize."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [
        test
        for name in module.__all__
        for test in finder.find(getattr(module, name), name)
        if test.examples
    ]


def run_example(example: doctest.DocTest) -> None:
    """Run one docstring example; it must pass."""
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(example)
    assert result.failed == 0, example.name
