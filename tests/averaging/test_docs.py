"""docs/averaging.md and gradwise.averaging's docstrings run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gradwise import averaging
from gradwise.config import AveragingConfig, config_to_dict
from tests.doc_examples import run_docstring_examples, run_page_examples

DOCS = Path(__file__).parents[2] / "docs" / "averaging.md"


def test_the_docs_page_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_page_examples("averaging.md")


def test_the_docs_page_config_is_the_default_section() -> None:
    block = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)[0]
    assert yaml.safe_load(block) == {"averaging": config_to_dict(AveragingConfig())}


@pytest.mark.parametrize("name", averaging.__all__)
def test_docstring_examples_run(name: str) -> None:
    public = getattr(averaging, name)
    run_docstring_examples(public, name, require=name != "WeightAverage")
