"""Every public function carries a runnable docstring example (STYLE.md section 10)."""

import doctest

import pytest

import gradwise.losses

CONSTANTS = {"LOSS_NAMES", "Loss"}


@pytest.mark.parametrize("name", sorted(set(gradwise.losses.__all__) - CONSTANTS))
def test_docstring_examples_run(name):
    public = getattr(gradwise.losses, name)
    tests = doctest.DocTestFinder(recurse=False).find(public, name, globs={})
    assert sum(len(test.examples) for test in tests) > 0, f"{name} has no example"
    for test in tests:
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0, name


def test_the_docs_page_examples_run():
    import re
    from pathlib import Path

    page = Path(__file__).parents[2] / "docs" / "losses.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        exec(compile(block, str(page), "exec"), {})  # noqa: S102 - our own docs
