"""Minibatches: coverage, per-epoch reshuffling, the documented seed formula, and resume."""

import pytest
import torch

from gradwise.data import Batches, Dataset, iterate_once


def _tagged(size: int, num_classes: int = 3) -> Dataset:
    """Sample i has input i (in two features) and target i % num_classes."""
    ids = torch.arange(size, dtype=torch.float32)
    return Dataset(torch.stack([ids, -ids], dim=1), torch.arange(size) % num_classes)


def _ids(batches) -> list[list[int]]:
    return [inputs[:, 0].long().tolist() for inputs, _ in batches]


def _splitmix_seed(seed: int, epoch: int) -> int:
    """The generator seed as docs/data.md writes it, independently of the implementation."""
    mask = 2**64 - 1
    z = (seed * 0x9E3779B97F4A7C15 + epoch + 1) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return (z ^ (z >> 31)) & (2**63 - 1)


@pytest.mark.parametrize(("size", "batch_size"), [(10, 3), (12, 4), (7, 10), (1, 1)])
def test_every_sample_once_per_epoch(size, batch_size):
    batches = Batches(_tagged(size), batch_size, seed=1)
    for epoch in range(3):
        served = _ids(batches.epoch(epoch))
        assert len(served) == len(batches) == -(-size // batch_size)
        assert all(len(batch) == batch_size for batch in served[:-1])
        assert sorted(sum(served, [])) == list(range(size))


def test_inputs_and_targets_stay_paired():
    data = _tagged(50, num_classes=7)
    for inputs, targets in Batches(data, 8, seed=3).epoch(2):
        assert torch.equal(targets, inputs[:, 0].long() % 7)
        assert torch.equal(inputs[:, 1], -inputs[:, 0])


def test_order_follows_the_documented_formula():
    data = _tagged(100)
    batches = Batches(data, 16, seed=42)
    for epoch in (0, 1, 7):
        generator = torch.Generator().manual_seed(_splitmix_seed(42, epoch))
        expected = torch.randperm(100, generator=generator)
        assert torch.equal(batches.order(epoch), expected)
        assert sum(_ids(batches.epoch(epoch)), []) == expected.tolist()


def test_reshuffled_between_epochs_and_reproducible_across_instances():
    data = _tagged(64)
    first = Batches(data, 8, seed=5)
    second = Batches(data, 8, seed=5)
    other_seed = Batches(data, 8, seed=6)
    orders = [_ids(first.epoch(e)) for e in range(4)]
    assert all(orders[i] != orders[j] for i in range(4) for j in range(i))
    assert orders == [_ids(second.epoch(e)) for e in range(4)]
    assert orders[0] != _ids(other_seed.epoch(0))
    # Asking for an epoch again, or out of order, gives the same batches: no hidden state.
    assert _ids(first.epoch(2)) == orders[2]


@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_from_any_batch_equals_the_tail_of_the_epoch(drop_last):
    data = _tagged(23)
    batches = Batches(data, 5, seed=9, drop_last=drop_last)
    for epoch in (0, 3):
        full = list(batches.epoch(epoch))
        for start in range(len(batches) + 1):
            resumed = list(Batches(data, 5, seed=9, drop_last=drop_last).epoch(epoch, start))
            assert len(resumed) == len(full) - start
            for (x, y), (x_full, y_full) in zip(resumed, full[start:], strict=True):
                assert torch.equal(x, x_full)
                assert torch.equal(y, y_full)


def test_drop_last_drops_only_the_short_batch():
    batches = Batches(_tagged(23), 5, seed=0, drop_last=True)
    served = _ids(batches.epoch(0))
    assert len(batches) == len(served) == 4
    assert all(len(batch) == 5 for batch in served)
    # The dropped samples are the last 3 of this epoch's order, so they change per epoch.
    dropped = [set(range(23)) - set(sum(_ids(batches.epoch(e)), [])) for e in range(4)]
    assert all(len(d) == 3 for d in dropped)
    assert len({frozenset(d) for d in dropped}) > 1
    exact = Batches(_tagged(20), 5, drop_last=True)
    assert len(exact) == 4


@pytest.mark.parametrize("shuffle", [True, False])
def test_min_last_batch_size_drops_only_a_smaller_last_batch(shuffle):
    # 21 = 4 x 5 + 1: the last batch of 1 sample is dropped, a different one each epoch.
    batches = Batches(_tagged(21), 5, shuffle=shuffle, min_last_batch_size=2, seed=0)
    served = [_ids(batches.epoch(e)) for e in range(4)]
    assert len(batches) == 4
    assert all(len(epoch) == 4 and all(len(b) == 5 for b in epoch) for epoch in served)
    dropped = [set(range(21)) - set(sum(epoch, [])) for epoch in served]
    assert all(len(d) == 1 for d in dropped)
    distinct = len({frozenset(d) for d in dropped})
    assert distinct > 1 if shuffle else distinct == 1
    assert _ids(batches.epoch(2, start_batch=4)) == []
    # A last batch of 2 or more (22 = 4 x 5 + 2) is served, as with the default of 1.
    kept = Batches(_tagged(22), 5, shuffle=shuffle, min_last_batch_size=2, seed=0)
    default = Batches(_tagged(22), 5, shuffle=shuffle, seed=0)
    assert len(kept) == len(default) == 5
    assert _ids(kept.epoch(3)) == _ids(default.epoch(3))
    # Full batches are never dropped, whatever their size.
    assert len(Batches(_tagged(4), 1, min_last_batch_size=2)) == 4
    assert len(Batches(_tagged(21), 5, min_last_batch_size=5)) == 4


def test_no_shuffle_keeps_the_dataset_order():
    batches = Batches(_tagged(10), 4, shuffle=False)
    assert _ids(batches.epoch(0)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _ids(batches.epoch(5, start_batch=1)) == [[4, 5, 6, 7], [8, 9]]
    assert torch.equal(batches.order(3), torch.arange(10))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_moves_the_dataset_and_keeps_the_order(device):
    data = _tagged(50)
    on_device = Batches(data, 8, seed=2, device=device)
    assert on_device.dataset.inputs.device.type == device  # moved once, up front
    reference = [targets.tolist() for _, targets in Batches(data, 8, seed=2).epoch(1)]
    served = list(on_device.epoch(1))
    assert [targets.tolist() for _, targets in served] == reference
    inputs, targets = served[0]
    assert inputs.device.type == targets.device.type == device
    assert inputs.dtype == torch.float32
    assert targets.dtype == torch.int64


def test_regression_targets_keep_their_shape():
    data = Dataset(torch.randn(10, 3), torch.randn(10))
    shapes = [tuple(targets.shape) for _, targets in Batches(data, 4).epoch(0)]
    assert shapes == [(4, 1), (4, 1), (2, 1)]


def test_iterate_once_serves_everything_in_order():
    data = _tagged(11)
    served = list(iterate_once(data, 4))
    assert [len(targets) for _, targets in served] == [4, 4, 3]
    assert torch.equal(torch.cat([inputs for inputs, _ in served]), data.inputs)
    assert torch.equal(torch.cat([targets for _, targets in served]), data.targets)
    assert len(list(iterate_once(data, 100))) == 1
    on_cpu = next(iterate_once(data, 4, device="cpu"))
    assert on_cpu[0].device.type == "cpu"


def test_large_epoch_is_served_quickly():
    # Not a timing assertion: a Python loop over 200k samples would still pass, but this
    # keeps a realistic size in the suite so a regression to per-sample work shows up.
    data = Dataset(torch.randn(200_000, 8), torch.randint(0, 10, (200_000,)))
    batches = Batches(data, 1024, seed=0)
    total = sum(len(targets) for _, targets in batches.epoch(0))
    assert total == 200_000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, r"'batch_size' parameter of Batches must be an int >= 1. Got 0"),
        ({"batch_size": 2.5}, r"'batch_size' parameter of Batches must be an int >= 1"),
        ({"batch_size": 2, "seed": -3}, r"'seed' parameter of Batches must be an int in"),
        ({"batch_size": 2, "shuffle": 1}, r"'shuffle' parameter of Batches must be a bool"),
        ({"batch_size": 20, "drop_last": True}, r"must be <= the 10 samples when drop_last=True"),
        (
            {"batch_size": 2, "min_last_batch_size": 0},
            r"'min_last_batch_size' parameter of Batches must be an int >= 1. Got 0",
        ),
        (
            {"batch_size": 20, "min_last_batch_size": 11},
            r"'dataset' parameter of Batches must hold 11 samples or more with "
            r"min_last_batch_size=11 and batch_size 20, or its one batch is dropped. Got 10",
        ),
        (
            # One full batch of 4 would do: the message asked for 11 samples.
            {"batch_size": 4, "min_last_batch_size": 11, "size": 3},
            r"'dataset' parameter of Batches must hold 4 samples or more with "
            r"min_last_batch_size=11 and batch_size 4, or its one batch is dropped. Got 3",
        ),
    ],
)
def test_batches_argument_errors(kwargs, match):
    kwargs = dict(kwargs)  # the parametrized dict is shared: pop from a copy
    size = kwargs.pop("size", 10)
    with pytest.raises(ValueError, match=match):
        Batches(_tagged(size), **kwargs)


def test_epoch_argument_errors_are_raised_at_the_call():
    batches = Batches(_tagged(10), 4)
    with pytest.raises(ValueError, match=r"'start_batch' parameter of Batches.epoch must be <= 3"):
        batches.epoch(0, start_batch=4)
    with pytest.raises(ValueError, match=r"'epoch' parameter of Batches.epoch must be an int >= 0"):
        batches.epoch(-1)
    with pytest.raises(ValueError, match=r"'start_batch' parameter of Batches.epoch"):
        batches.epoch(0, start_batch=-1)


def test_a_dataset_is_required():
    with pytest.raises(TypeError, match="'dataset' parameter of Batches must be a gradwise"):
        Batches((torch.zeros(3, 1), torch.zeros(3)), 2)
    with pytest.raises(TypeError, match="'dataset' parameter of iterate_once must be"):
        iterate_once([1, 2, 3], 2)
    with pytest.raises(ValueError, match="'batch_size' parameter of iterate_once"):
        iterate_once(_tagged(3), 0)
