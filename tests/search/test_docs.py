"""The examples of docs/search.md run, and its config example is a valid search."""

from __future__ import annotations

import re

import yaml

from gradwise.config import parse_config
from gradwise.search import parse_search
from tests.doc_examples import DOCS, run_page_examples


def test_page_examples_run() -> None:
    run_page_examples("search.md")


def test_the_page_config_declares_a_valid_search() -> None:
    (block,) = re.findall(r"```yaml\n(.*?)```", (DOCS / "search.md").read_text(), re.DOTALL)
    content = yaml.safe_load(block)
    spec = parse_search(content)
    assert [p.path for p in spec.parameters] == list(content["search"]["space"])
    assert [p.kind for p in spec.parameters] == [
        "log_uniform",
        "log_uniform",
        "int",
        "categorical",
        "categorical",
        "grid",
    ]
    # gradwise train reads the same file and ignores the search section.
    assert parse_config(content).search == content["search"]
