"""Each window's means (the log records', the epochs') are its own steps' alone: a loss
spike in one window leaves the next windows' losses exact, and states saved before each
window had sums of its own go on with the means they would have given."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from gradwise import optim
from gradwise.data import Dataset, DataSplits
from gradwise.runs import RunFolder, read_records
from gradwise.train import Trainer
from gradwise.train._evaluation import Accumulator

CPU = torch.device("cpu")
SPIKE = 1e17
CLASSES = 3
SAMPLES = 96
BATCH = 16  # six steps per epoch


def _add(totals: Accumulator, loss: float, correct: int, counted: int, count: int) -> None:
    hits = (torch.tensor(correct), torch.tensor(counted))
    totals.add(torch.tensor(loss, dtype=torch.float32), hits, count)


def test_a_window_after_a_huge_loss_has_the_mean_of_its_own_losses() -> None:
    totals = Accumulator(CPU, windows=("log", "epoch"))
    _add(totals, SPIKE, correct=1, counted=4, count=4)
    assert totals.take("log") == (pytest.approx(SPIKE, rel=1e-7), 0.25)
    for correct in (3, 2, 4):
        _add(totals, 0.5, correct=correct, counted=4, count=4)
    assert totals.take("log") == (0.5, 0.75)
    _add(totals, 0.25, correct=0, counted=4, count=4)
    assert totals.take("log") == (0.25, 0.0)
    # The epoch's window and everything added still hold the spike: it is theirs.
    epoch = (float(torch.tensor(SPIKE, dtype=torch.float32)) * 4 + 0.5 * 12 + 0.25 * 4) / 20
    assert totals.take("epoch") == (pytest.approx(epoch, rel=1e-12), 10 / 20)
    assert totals.means() == (pytest.approx(epoch, rel=1e-12), 10 / 20)
    loss, accuracy = totals.take("epoch")  # nothing added since
    assert math.isnan(loss)
    assert accuracy is None


def test_a_window_the_accumulator_was_not_made_with_is_refused() -> None:
    totals = Accumulator(CPU, windows=("log",))
    with pytest.raises(ValueError, match=r"no window 'epoch'.*windows=\(\.\.\., 'epoch'\)"):
        totals.take("epoch")


@pytest.mark.parametrize("with_counted", [True, False], ids=["marks", "marks-no-counted"])
def test_a_state_with_running_sums_and_marks_goes_on_with_the_means_it_would_give(
    with_counted: bool,
) -> None:
    # Batches of 4 (losses exact in binary, so every sum is exact) with their correct
    # predictions and samples counted for accuracy (all of them, as the oldest states did).
    batches = [(0.5, 3), (2.0, 1), (1.25, 4), (3.0, 2), (0.75, 0)]
    first, later = batches[:3], batches[3:]

    def sums(part: list[tuple[float, int]]) -> list[Tensor]:
        loss = torch.tensor(sum(4 * loss for loss, _ in part), dtype=torch.float64)
        correct = torch.tensor(sum(correct for _, correct in part))
        return [loss, correct, torch.tensor(4 * len(part))]

    # The state the older Accumulator saved after three batches, its "log" window taken
    # after the second one and its "epoch" window never: running sums since the start,
    # and the sums at each window's last take, as [loss, correct, count, counted].
    loss_sum, correct, counted = sums(first)
    log_mark = sums(first[:2])
    old: dict[str, object] = {
        "loss_sum": loss_sum,
        "correct": correct,
        "counted": counted,
        "count": 12,
        "has_accuracy": True,
        "marks": {"log": [log_mark[0], log_mark[1], 8, log_mark[2]]},
    }
    if not with_counted:
        del old["counted"]
        old["marks"] = {"log": [log_mark[0], log_mark[1], 8]}
    totals = Accumulator(CPU, windows=("log", "epoch"))
    totals.load_state_dict(old)
    for loss, right in later:
        _add(totals, loss, correct=right, counted=4, count=4)

    def means(part: list[tuple[float, int]]) -> tuple[float, float]:
        return sum(loss for loss, _ in part) / len(part), sum(c for _, c in part) / (4 * len(part))

    assert totals.take("log") == means(batches[2:])
    assert totals.take("epoch") == means(batches)
    assert totals.means() == means(batches)


class _SpikeAtFirstCall:
    """Cross-entropy, times 1e17 at its first call: the loss of the run's first step."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, outputs: Tensor, targets: Tensor) -> Tensor:
        self.calls += 1
        loss = F.cross_entropy(outputs, targets)
        return loss * SPIKE if self.calls == 1 else loss


def test_the_epochs_after_a_loss_spike_record_their_own_losses(tmp_path: Path) -> None:
    # At lr 0 the model stays as it was made: every epoch after the first (whose first step
    # has the spike) sees each sample once, so its mean loss is the whole split's.
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(SAMPLES, 4, generator=generator)
    train = Dataset(inputs, torch.randint(0, CLASSES, (SAMPLES,), generator=generator))
    data = DataSplits.from_datasets(train, train, train, name="toy")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, CLASSES))
    run = RunFolder.create(tmp_path, "spike")
    trainer = Trainer(
        model,
        optim.SGD(model.parameters(), lr=0.0),
        data,
        loss=_SpikeAtFirstCall(),
        batch_size=BATCH,
        epochs=3,
        log_every=SAMPLES // BATCH,  # one log record per epoch
        run=run,
        progress=False,
    )
    trainer.fit()

    with torch.no_grad():
        outputs = model(train.inputs).double()
    loss = F.cross_entropy(outputs, train.targets).item()
    accuracy = (outputs.argmax(dim=1) == train.targets).double().mean().item()
    records = read_records(run)
    steps = [(r["loss"], r["accuracy"]) for r in records if r["kind"] == "step"]
    epochs = [(r["train_loss"], r["train_accuracy"]) for r in records if r["kind"] == "epoch"]
    assert steps == epochs
    assert epochs[0][0] > SPIKE / BATCH
    assert epochs[0][1] == accuracy
    for later in epochs[1:]:
        assert later == (pytest.approx(loss, rel=1e-6), accuracy)
