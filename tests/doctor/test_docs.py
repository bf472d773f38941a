"""The examples in docs/doctor.md run as written."""

from tests.doc_examples import run_page_examples


def test_the_docs_page_examples_run() -> None:
    run_page_examples("doctor.md")
