"""Every Python example in docs/data.md runs, and prints what its comments say."""

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).parents[2] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _expected_prints(code: str) -> list[str]:
    """The output each top-level print promises: its trailing comment, or the next line's."""
    lines = code.splitlines()
    expected = []
    for i, line in enumerate(lines):
        if not line.startswith("print("):
            continue
        if "  # " in line:
            expected.append(line.split("  # ", 1)[1])
        elif i + 1 < len(lines) and lines[i + 1].startswith("# "):
            expected.append(lines[i + 1][2:])
    return expected


@pytest.mark.parametrize("code", BLOCKS, ids=lambda code: code.splitlines()[0][:40])
def test_doc_example(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    finally:
        sys.modules.pop("my_task", None)
    printed = output.getvalue().splitlines()
    assert printed == _expected_prints(code)


def test_the_docs_have_examples():
    assert len(BLOCKS) >= 5
