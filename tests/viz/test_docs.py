"""Every public name carries a runnable docstring example; the docs page runs."""

import pytest

import gradwise.viz
from tests.doc_examples import run_docstring_examples, run_page_examples

DATA = {
    "SURFACES",
    "SURFACE_NAMES",
    "OptimizerSpec",
    "CriticalPoint",
    "QuadraticLesson",
    "Trajectory",
}


@pytest.mark.parametrize("name", sorted(set(gradwise.viz.__all__) - DATA))
def test_docstring_examples_run(name):
    run_docstring_examples(getattr(gradwise.viz, name), name)


def test_the_docs_page_examples_run(capsys):
    run_page_examples("viz.md")
    assert "converges" in capsys.readouterr().out


def test_importing_viz_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import gradwise.viz, sys; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
