"""Findings are data: an enum kind, evidence and a prescription that round-trip through JSON."""

from __future__ import annotations

import json

import pytest

import gradwise
from gradwise import Finding
from gradwise.diagnosis import REMEDIES, Diagnosis
from tests.doc_examples import run_docstring_examples

REQUIRED = {
    "LEARNING_RATE_TOO_HIGH", "LEARNING_RATE_TOO_LOW", "NONFINITE_LOSS", "OSCILLATION",
    "PLATEAU", "VANISHING_GRADIENTS", "EXPLODING_GRADIENTS", "DEAD_UNITS", "SATURATED_UNITS",
    "SYMMETRIC_INIT", "UNNORMALIZED_INPUTS", "WRONG_GRADIENT", "INITIAL_LOSS_MISMATCH",
    "OVERFITTING", "NO_LEARNING_SIGNAL",
}  # fmt: skip


def test_every_kind_the_issue_names_exists_and_is_string_valued() -> None:
    assert {member.name for member in Finding} >= REQUIRED
    assert gradwise.Finding is Finding
    for member in Finding:
        assert member == member.value
        assert member.value == member.name.lower()


def test_every_kind_has_a_remedy() -> None:
    assert set(REMEDIES) == set(Finding)
    assert all(REMEDIES[kind] for kind in Finding)


def test_a_diagnosis_round_trips_through_json() -> None:
    diagnosis = Diagnosis(
        Finding.LEARNING_RATE_TOO_HIGH,
        "loss rose from 2.31 to 9.8e4 in 40 steps",
        "lower the learning rate ~10x",
        {"lr": 1.0, "factor": 10.0, "layers": ["0", "2"]},
        severity="error",
        step=40,
        fix={"optimizer.lr": 0.1},
    )
    restored = Diagnosis.from_dict(json.loads(json.dumps(diagnosis.to_dict())))
    assert restored == diagnosis
    assert restored.kind is Finding.LEARNING_RATE_TOO_HIGH


def test_docstring_examples_run() -> None:
    run_docstring_examples(Diagnosis, "Diagnosis")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # QA: a str kind was accepted, then str() failed on it
        (
            ("LEARNING_RATE_TOO_HIGH", "a", "b"),
            r"'kind' parameter of Diagnosis must be a gradwise.Finding",
        ),
        (
            (Finding.PLATEAU, "a", "b", {}, "fatal"),
            r"'severity' parameter of Diagnosis must be one of 'info', 'warning', 'error'",
        ),
        (
            (Finding.PLATEAU, "a", "b", {}, "error", -1),
            r"'step' parameter of Diagnosis must be an int >= 0 or None",
        ),
        ((Finding.PLATEAU, None, "b"), r"'summary' parameter of Diagnosis must be a str"),
    ],
)
def test_a_diagnosis_refuses_what_it_cannot_be(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Diagnosis(*arguments)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({}, r"needs 'kind', 'summary' and 'prescription'; this one has no 'kind', 'summary'"),
        (
            {"kind": "nope", "summary": "", "prescription": ""},
            r"'kind' parameter of Diagnosis.from_dict",
        ),
        (
            {"kind": "plateau", "summary": "", "prescription": "", "severity": "fatal"},
            r"'severity'",
        ),
    ],
)
def test_a_damaged_finding_record_is_a_clear_error(record: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Diagnosis.from_dict(record)
