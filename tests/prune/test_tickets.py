"""Ticket and mask files: what a wrong file or a misfitting model gets told."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from gradwise.config import ConfigError, load_config
from gradwise.prune import Masks, Ticket, magnitude_masks
from gradwise.train import prepare_run


def _model(width: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


def _write_files_that_are_not_torch_files(folder: Path) -> list[Path]:
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    text = folder / "config.yaml"
    text.write_text("train:\n  epochs: 3\n")
    whole_model = folder / "model.pt"
    torch.save(_model(), whole_model)  # a pickled module: weights_only refuses it
    return [empty, text, whole_model]


@pytest.mark.parametrize("load", [Ticket.load, Masks.load], ids=["Ticket", "Masks"])
def test_a_file_torch_cannot_read_as_tensors_is_a_value_error_naming_it(
    load: object, tmp_path: Path
) -> None:
    # Before: EOFError, IndexError ("pop from empty list") or pickle's UnpicklingError
    # from deep inside torch.load, which a run config's ticket did not turn into a
    # ConfigError either.
    for path in _write_files_that_are_not_torch_files(tmp_path):
        with pytest.raises(ValueError, match="is not a") as caught:
            load(path)  # type: ignore[operator]
        assert str(path) in str(caught.value)


def test_a_run_config_naming_an_unreadable_ticket_gets_a_config_error(tmp_path: Path) -> None:
    for path in _write_files_that_are_not_torch_files(tmp_path):
        config = load_config(
            overrides=["data.dataset=spirals", "model.name=mlp", f"prune.ticket={path}"]
        )
        with pytest.raises(ConfigError, match="is not a ticket file"):
            prepare_run(config)


def test_a_bad_masks_mapping_is_named_by_its_entry_not_printed_whole() -> None:
    # Before: the message held the repr of every tensor in the mapping (21,000 characters
    # for Masks.load of a LeNet-300-100 ticket file).
    model = nn.Sequential(nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10))
    state = {name: p.detach() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="must be a mapping of parameter names") as caught:
        Masks({name: value > 0 for name, value in state.items()} | {"2.bias": state["2.bias"]})
    message = str(caught.value)
    assert "'2.bias'" in message
    assert "float32" in message
    assert len(message) < 400


def test_masks_load_of_a_ticket_file_says_to_load_the_ticket(tmp_path: Path) -> None:
    model = _model()
    Ticket(magnitude_masks(model, 0.5), model.state_dict()).save(tmp_path / "ticket.pt")
    with pytest.raises(ValueError, match=r"is a ticket file.*Ticket\.load") as caught:
        Masks.load(tmp_path / "ticket.pt")
    assert len(str(caught.value)) < 400


def test_a_ticket_that_does_not_fit_leaves_the_model_as_it_was() -> None:
    # Before: load_state_dict copied every tensor that fitted, then raised, so the model
    # was left half overwritten with the ticket's weights.
    source, other = _model(), nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    ticket = Ticket(magnitude_masks(source, 0.5), source.state_dict())
    before = {name: value.clone() for name, value in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"must fit the model.*2\.weight"):
        ticket.apply_(other)
    assert all(torch.equal(other.state_dict()[name], before[name]) for name in before)


@pytest.mark.parametrize("counter", ["missing", "shape (1,)"])
def test_a_batch_norm_counter_that_torch_accepts_is_accepted(counter: str) -> None:
    # torch's load_state_dict fills in a missing num_batches_tracked (old checkpoints) and
    # takes a (1,) one for its 0-d counter; the fit check refused both.
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    weights = dict(model.state_dict())
    if counter == "missing":
        del weights["1.num_batches_tracked"]
    else:
        weights["1.num_batches_tracked"] = torch.tensor([7])
    torch.nn.Sequential(*model).load_state_dict(weights)  # the oracle: torch takes it
    target = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    Ticket(magnitude_masks(model, 0.5), weights).apply_(target)
    assert torch.equal(target[0].weight, model[0].weight * magnitude_masks(model, 0.5)["0.weight"])


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Set RLIMIT_FSIZE for the test's duration: writes past it fail with EFBIG (SIGXFSZ
    ignored), as on a full disk."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(size: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_ticket_save_that_fails_half_way_leaves_the_old_ticket(
    tmp_path: Path, file_size_limit: Callable[[int], None]
) -> None:
    # gradwise prune takes a ticket file's presence to mean the round's tickets are
    # written: a save cut short must not leave a truncated one behind.
    path = tmp_path / "round-1.pt"
    small = _model()
    old = Ticket(magnitude_masks(small, 0.5), small.state_dict())
    old.save(path)
    large = _model(width=4000)
    file_size_limit(path.stat().st_size + 4096)
    with pytest.raises((OSError, RuntimeError)):
        Ticket(magnitude_masks(large, 0.5), large.state_dict()).save(path)
    file_size_limit(10**12)
    assert Ticket.load(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["round-1.pt"]  # no temporary file left
