"""The examples in docs/train.md and in gradwise.train's docstrings run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gradwise import config, train
from gradwise.config import RunConfig, config_to_dict
from tests.doc_examples import run_docstring_examples

DOCS = Path(__file__).parents[2] / "docs" / "train.md"


def test_the_docs_page_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own docs


def test_the_docs_page_config_is_the_default_config() -> None:
    block = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)[0]
    assert yaml.safe_load(block) == config_to_dict(RunConfig())


@pytest.mark.parametrize("module", [train, config])
def test_docstring_examples_run(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        run_docstring_examples(getattr(module, name), name, require=False)
