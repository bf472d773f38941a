"""Pruned configured runs: the prune section, checkpoints with masks, exact resume, reports."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gradwise.config import ConfigError, RunConfig, config_to_dict, load_config
from gradwise.prune import Masks, Ticket, WeightSnapshot, magnitude_masks
from gradwise.runs import RunFolder, read_summary, write_config
from gradwise.train import load_checkpoint, make_trainer, prepare_run, train
from tests.train.stop_at import StopAt

SMALL_RUN = [
    "data.dataset=spirals",
    "data.batch_size=16",
    "model.name=mlp",
    "model.width=32",
    "model.norm=none",
    "epochs=3",
    "log_every=5",
    "optimizer={name: SGD, lr: 0.05, momentum: 0.9, weight_decay: 0.01}",
]


@pytest.fixture
def config(tmp_path: Path) -> RunConfig:
    return load_config(overrides=[*SMALL_RUN, f"runs_dir={tmp_path / 'runs'}"])


def _ticket(config: RunConfig, path: Path, amount: float = 0.8) -> Ticket:
    model = prepare_run(config).model
    ticket = Ticket(magnitude_masks(model, amount, include_output=True), model.state_dict())
    ticket.save(path)
    return ticket


def _pruned(config: RunConfig, ticket: Path, name: str) -> RunConfig:
    return load_config(
        overrides=[*SMALL_RUN, f"runs_dir={config.runs_dir}", f"name={name}",
                   f"prune.ticket={ticket}"]
    )  # fmt: skip


def test_a_pruned_run_keeps_the_masks_and_resumes_bit_identically(
    config: RunConfig, tmp_path: Path
) -> None:
    ticket = _ticket(config, tmp_path / "ticket.pt")
    whole = train(_pruned(config, tmp_path / "ticket.pt", "whole"), progress=False)
    assert whole.status == "completed"
    assert whole.run is not None
    final = load_checkpoint(whole.run.last_checkpoint)
    for name, mask in ticket.masks.items():
        assert bool((final["model"][name][~mask] == 0).all()), name
        assert bool((final["model"][name][mask] != 0).all()), name  # kept weights trained
    saved = Masks(final["callbacks"]["Pruning"]["masks"])
    assert all(torch.equal(saved[name], ticket.masks[name]) for name in ticket.masks)

    split_config = _pruned(config, tmp_path / "ticket.pt", "split")
    folder = RunFolder.create(split_config.runs_dir, "split")
    write_config(folder, config_to_dict(split_config))
    trainer = make_trainer(
        prepare_run(split_config), folder, progress=False, callbacks=[StopAt(17)]
    )
    assert trainer.fit().status == "stopped"
    resumed = make_trainer(prepare_run(split_config), folder, progress=False).fit(resume=True)
    assert resumed.status == "completed"
    after = load_checkpoint(folder.last_checkpoint)
    for name, tensor in final["model"].items():
        assert torch.equal(tensor, after["model"][name]), name


def test_a_pruned_run_reports_its_sparsity(config: RunConfig, tmp_path: Path) -> None:
    ticket = _ticket(config, tmp_path / "ticket.pt", amount=0.75)
    result = train(_pruned(config, tmp_path / "ticket.pt", "report"), progress=False)
    assert result.run is not None
    summary = read_summary(result.run)
    assert summary["weights_remaining"] == pytest.approx(ticket.masks.fraction_remaining())
    report = json.loads((result.run.path / "sparsity.json").read_text())
    assert report["total"]["sparsity"] == pytest.approx(0.75, abs=0.01)
    assert [layer["name"] for layer in report["layers"]] == list(ticket.masks)
    model = prepare_run(config).model
    num_parameters = sum(p.numel() for p in model.parameters())
    pruned = ticket.masks.num_weights() - ticket.masks.num_remaining()
    assert report["model"]["nonzero"] <= num_parameters - pruned
    html = result.run.report_path.read_text()
    assert "<h2>Sparsity</h2>" in html
    assert "Pruned weights" in html


def test_the_ticket_weights_are_the_runs_start(config: RunConfig, tmp_path: Path) -> None:
    model = prepare_run(replace(config, seed=7)).model
    masks = magnitude_masks(model, 0.5)
    Ticket(masks, model.state_dict()).save(tmp_path / "ticket.pt")
    Ticket(masks).save(tmp_path / "masks-only.pt")
    started = prepare_run(_pruned(config, tmp_path / "ticket.pt", "a")).model
    own_init = prepare_run(config).model
    masks_only = prepare_run(_pruned(config, tmp_path / "masks-only.pt", "b")).model
    for name, tensor in model.state_dict().items():
        expected = tensor * masks[name] if name in masks else tensor
        assert torch.equal(started.state_dict()[name], expected), name
        own = own_init.state_dict()[name]
        assert torch.equal(
            masks_only.state_dict()[name], own * masks[name] if name in masks else own
        )


def test_the_prune_section_is_checked_before_any_file_is_written(
    config: RunConfig, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="'train.prune' needs a 'ticket'"):
        prepare_run(load_config(overrides=[*SMALL_RUN, "prune={}"]))
    with pytest.raises(ConfigError, match="'train.prune.ticket' is 'nowhere.pt', which is not"):
        prepare_run(load_config(overrides=[*SMALL_RUN, "prune.ticket=nowhere.pt"]))
    torch.save({"0.weight": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="is not a ticket file"):
        prepare_run(_pruned(config, tmp_path / "other.pt", "x"))
    wider = load_config(overrides=[*SMALL_RUN, "model.width=8"])
    _ticket(wider, tmp_path / "narrow.pt")
    with pytest.raises(ConfigError, match="does not fit 'train.model'.*shape"):
        prepare_run(_pruned(config, tmp_path / "narrow.pt", "x"))
    assert not Path(config.runs_dir).exists()


def test_weight_snapshot_keeps_the_rewind_weights_through_a_resume(
    config: RunConfig, tmp_path: Path
) -> None:
    whole_snapshot = WeightSnapshot(step=20)
    train(replace(config, name="whole"), progress=False, callbacks=[whole_snapshot])
    folder = RunFolder.create(config.runs_dir, "split")
    split_config = replace(config, name="split")
    write_config(folder, config_to_dict(split_config))
    first = WeightSnapshot(step=20)
    make_trainer(prepare_run(split_config), folder, progress=False,
                 callbacks=[first, StopAt(25)]).fit()  # fmt: skip
    assert first.weights is not None
    resumed = WeightSnapshot(step=20)
    make_trainer(prepare_run(split_config), folder, progress=False,
                 callbacks=[resumed]).fit(resume=True)  # fmt: skip
    assert whole_snapshot.weights is not None
    assert resumed.weights is not None
    assert resumed.final_weights is not None
    for name, tensor in whole_snapshot.weights.items():
        assert torch.equal(resumed.weights[name], tensor), name
    assert not torch.equal(resumed.final_weights["1.weight"], resumed.weights["1.weight"])


def test_weight_snapshot_refuses_a_saved_copy_for_another_step() -> None:
    # Before, a resume with another step took the saved copy as this step's, silently.
    saved = {"step": 20, "weights": {"w": torch.zeros(2)}}
    with pytest.raises(ValueError, match="The saved WeightSnapshot is for step 20; this one is "):
        WeightSnapshot(step=5).load_state_dict(saved)
    snapshot = WeightSnapshot(step=20)
    snapshot.load_state_dict(saved)
    assert snapshot.weights is saved["weights"]
