"""The Python examples of docs/runs.md run, top to bottom, as a reader would run them."""

import re
from pathlib import Path

DOCS = Path(__file__).parents[2] / "docs" / "runs.md"


def test_docs_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "runs" / "baseline" / "checkpoints").is_dir()
    report = namespace["path"]
    assert isinstance(report, Path)
    assert "Notes" in report.read_text()
    printed = capsys.readouterr().out
    assert "best val_loss" in printed
    assert "baseline" in printed
