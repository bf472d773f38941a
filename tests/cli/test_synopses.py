"""The command synopses of the docs pages say what ``--help`` says: the same options, and
the positional argument optional where the command takes it as optional."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradwise.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")
_WORD = re.compile(r"\[?([A-Za-z_]+)\]?")


def _doc_synopsis(page: str, command: str) -> str:
    """The code block of ``page`` that starts with ``gradwise <command>``."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line.startswith(f"gradwise {command} ") and lines[index - 1].startswith("```"):
            end = next(i for i in range(index, len(lines)) if lines[i].startswith("```"))
            return " ".join(lines[index:end])
    raise AssertionError(f"no synopsis of gradwise {command} in docs/{page}")


def _help_usage(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    return " ".join(usage.split())


def _positionals(synopsis: str, command: str) -> list[str]:
    """Each positional argument, as written: ``CONFIG`` or ``[CONFIG]`` (lower-cased)."""
    tokens = synopsis.split(f"gradwise {command} ", 1)[1].split()
    found = []
    for before, token in zip(["]", *tokens], tokens, strict=False):
        takes_a_value = before.lstrip("[").startswith("-") and not before.endswith("]")
        if not takes_a_value and not token.lstrip("[").startswith("-") and _WORD.fullmatch(token):
            found.append(token.lower())
    return found


@pytest.mark.parametrize(
    ("page", "command"),
    [
        ("doctor.md", "doctor"),
        ("lr_finder.md", "lr-find"),
        ("prune.md", "prune"),
        ("viz.md", "viz"),
        ("landscape.md", "landscape"),
    ],
)
def test_the_docs_synopsis_matches_the_commands_help(
    page: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # QA: doctor.md left out --runs-dir, prune.md --no-progress, and lr_finder.md wrote
    # CONFIG as required.
    documented = _doc_synopsis(page, command)
    usage = _help_usage(command, capsys)
    assert set(_FLAG.findall(documented)) == set(_FLAG.findall(usage)), documented
    assert _positionals(documented, command) == _positionals(usage, command), documented


def test_viz_help_says_how_to_write_a_negative_start(capsys: pytest.CaptureFixture[str]) -> None:
    # "--start -1.2,1" is taken by argparse for an option; docs/viz.md says to use "=".
    with pytest.raises(SystemExit):
        main(["viz", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--start=-1.2,1" in help_text
