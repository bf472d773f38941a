"""accuracy leaves out the samples cross-entropy leaves out (its ignore_index), with
scikit-learn over the kept samples as the oracle."""

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from gradwise.losses import accuracy, get_loss

GENERATOR = torch.Generator().manual_seed(1)


def _ignored_batch(ignore_index, batch=40, classes=5):
    scores = torch.randn(batch, classes, dtype=torch.float64, generator=GENERATOR)
    targets = torch.randint(classes, (batch,), generator=GENERATOR)
    left_out = torch.rand(batch, generator=GENERATOR) < 0.3
    left_out[:2] = torch.tensor([True, False])  # at least one of each
    return scores, torch.where(left_out, ignore_index, targets), left_out


def test_ignored_targets_are_neither_hits_nor_misses():
    scores, targets, left_out = _ignored_batch(-100)
    kept = ~left_out
    expected = accuracy_score(targets[kept].numpy(), scores[kept].argmax(dim=1).numpy())
    assert accuracy(scores, targets).item() == pytest.approx(expected, abs=1e-6)
    # Scores right on every kept sample: 1.0, as cross-entropy sees only those samples.
    right = F.one_hot(torch.where(kept, targets, 0), 5).double()
    assert accuracy(right, targets).item() == 1.0
    assert get_loss("cross_entropy")(10 * right, targets).item() < 1e-3


def test_another_ignore_index_leaves_out_its_class():
    # ignore_index 2: class 2 is left out even where the scores predict it rightly.
    scores, targets = torch.randn(30, 4, generator=GENERATOR), torch.arange(30) % 4
    scores[targets == 2] = F.one_hot(torch.tensor(2), 4).float()  # right on class 2
    kept = targets != 2
    expected = accuracy_score(targets[kept].numpy(), scores[kept].argmax(dim=1).numpy())
    assert accuracy(scores, targets, ignore_index=2).item() == pytest.approx(expected)
    assert expected < 1.0  # so that counting class 2 would have changed the value


def test_every_target_ignored_gives_nan_like_the_cross_entropy_mean():
    scores, targets = torch.randn(4, 3, generator=GENERATOR), torch.full((4,), -100)
    assert math.isnan(accuracy(scores, targets).item())
    assert math.isnan(get_loss("cross_entropy")(scores, targets).item())


def test_one_hot_rows_are_never_left_out():
    scores = torch.eye(3)
    rows = F.one_hot(torch.tensor([0, 1, 0]), 3)
    assert accuracy(scores, rows, ignore_index=0).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("bad", [1.5, "x", None, True])
def test_a_bad_ignore_index_is_refused_in_the_one_format(bad):
    expected = rf"^The 'ignore_index' parameter of accuracy must be a finite int\. Got {bad!r}"
    with pytest.raises(ValueError, match=expected):
        accuracy(torch.eye(2), torch.tensor([0, 1]), ignore_index=bad)
