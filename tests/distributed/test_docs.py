"""The examples of docs/distributed.md run, and its config block is the default config."""

from __future__ import annotations

import re

import yaml

from gradwise.config import config_to_dict, load_config
from tests.doc_examples import DOCS, run_page_examples


def test_page_examples_run() -> None:
    run_page_examples("distributed.md")


def test_the_page_config_block_is_the_default_distributed_section() -> None:
    (block,) = re.findall(r"```yaml\n(.*?)```", (DOCS / "distributed.md").read_text(), re.DOTALL)
    assert yaml.safe_load(block)["distributed"] == config_to_dict(load_config().distributed)
