"""Findings are data: an enum kind, evidence and a prescription that round-trip through JSON."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

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


def test_to_dict_is_plain_data_that_json_and_a_weights_only_checkpoint_read_back() -> None:
    # QA: numpy scalars and tensors went into to_dict as they were: json.dumps raised
    # TypeError, and a Watch checkpoint holding the record failed torch.load(weights_only).
    diagnosis = Diagnosis(
        Finding.EXPLODING_GRADIENTS,
        "gradient norm 1e6",
        "clip gradients",
        {
            "grad_norm": np.float32(1.5),
            "layers": np.int64(3),
            "ratio": np.float64(0.25),
            "finite": np.bool_(True),
            "norm": torch.tensor(2.0),
            "norms": torch.tensor([1.0, 2.0]),
            "per_layer": {"0": (np.float32(0.5), 1)},
            "loss": float("inf"),
        },
        step=np.int64(40),
        fix={"optimizer.lr": np.float32(0.25)},
    )
    expected_evidence = {
        "grad_norm": 1.5, "layers": 3, "ratio": 0.25, "finite": True, "norm": 2.0,
        "norms": [1.0, 2.0], "per_layer": {"0": [0.5, 1]}, "loss": float("inf"),
    }  # fmt: skip
    record = diagnosis.to_dict()
    assert record["evidence"] == expected_evidence
    assert record["fix"] == {"optimizer.lr": 0.25}
    assert record["step"] == 40
    for value in (*record["evidence"].values(), record["step"], record["fix"]["optimizer.lr"]):
        assert type(value) in (bool, int, float, list, dict)
    restored = Diagnosis.from_dict(json.loads(json.dumps(record)))
    assert restored.to_dict() == record
    buffer = io.BytesIO()
    torch.save({"findings": [record]}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {"findings": [record]}


def test_to_dict_copies_the_evidence() -> None:
    diagnosis = Diagnosis(Finding.DEAD_UNITS, "a", "b", {"layers": ["0"]})
    diagnosis.to_dict()["evidence"]["layers"].append("2")
    assert diagnosis.evidence == {"layers": ["0"]}


@pytest.mark.parametrize(("name", "value"), [("evidence", None), ("evidence", [1]), ("fix", [])])
def test_evidence_and_fix_must_be_mappings(name: str, value: object) -> None:
    # QA: accepted, then to_dict raised TypeError (dict(None)) when the finding was written.
    with pytest.raises(ValueError, match=rf"'{name}' parameter of Diagnosis must be a mapping"):
        Diagnosis(Finding.PLATEAU, "a", "b", **{name: value})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([["kind", "plateau"]], r"'data' parameter of Diagnosis.from_dict must be a mapping"),
        (
            {"kind": ["plateau"], "summary": "", "prescription": ""},
            r"'kind' parameter of Diagnosis.from_dict must be a gradwise.Finding",
        ),
        (
            {"kind": "plateau", "summary": "", "prescription": "", "evidence": None},
            r"'evidence' parameter of Diagnosis.from_dict must be a mapping",
        ),
        (
            {"kind": "plateau", "summary": "", "prescription": "", "fix": "lr=0.1"},
            r"'fix' parameter of Diagnosis.from_dict must be a mapping",
        ),
    ],
)
def test_a_damaged_record_of_another_shape_is_a_clear_error(record: object, message: str) -> None:
    # QA: each raised a bare TypeError (unhashable list, dict(None)) or a dict() ValueError.
    with pytest.raises(ValueError, match=message):
        Diagnosis.from_dict(record)  # type: ignore[arg-type]
