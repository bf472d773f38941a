"""The example of docs/bench.md runs as written."""

from __future__ import annotations

from tests.doc_examples import run_page_examples


def test_page_examples_run() -> None:
    run_page_examples("bench.md")
