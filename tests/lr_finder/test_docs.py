"""The docs page and every public docstring example run as written."""

import pytest

from gradwise import lr_finder
from tests.doc_examples import run_docstring_examples, run_page_examples


def test_the_docs_page_examples_run() -> None:
    run_page_examples("lr_finder.md")


@pytest.mark.parametrize("name", lr_finder.__all__)
def test_docstring_examples_run(name: str) -> None:
    run_docstring_examples(getattr(lr_finder, name), name)


@pytest.mark.parametrize("name", lr_finder.__all__)
def test_the_docs_page_signatures_match_the_code(name: str) -> None:
    # The page's table lists each function as ``name(a, b=..., *, c=...)``: the same
    # parameter names, in order, and the same keyword-only marker as the code.
    import inspect
    import re

    from tests.doc_examples import DOCS

    obj = getattr(lr_finder, name)
    if inspect.isclass(obj):
        return
    page = (DOCS / "lr_finder.md").read_text()
    match = re.search(rf"`{name}\(([^`]*)\)`", page)
    assert match, f"{name} is not in the table of docs/lr_finder.md"
    documented = [part.split("=")[0].strip() for part in match.group(1).split(",")]
    actual: list[str] = []
    for parameter in inspect.signature(obj).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and "*" not in actual:
            actual.append("*")
        actual.append(parameter.name)
    assert documented == actual
