"""The examples in docs/curvature.md and in the public docstrings run as written."""

import pytest

from gradwise import curvature
from tests.doc_examples import run_docstring_examples, run_page_examples


def test_the_docs_page_examples_run():
    run_page_examples("curvature.md")


@pytest.mark.parametrize("name", curvature.__all__)
def test_docstring_examples_run(name):
    public = getattr(curvature, name)
    assert public.__doc__, f"{name} has no docstring"
    require = name not in {"EigenvalueDensity", "NegativeCurvature"}  # results, made by functions
    run_docstring_examples(public, name, require=require)
