"""Random directions: filter normalization (Li et al. 2018), seeding, validation."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from gradwise.landscape import random_directions


class Mixed(nn.Module):
    """Conv, BatchNorm, Linear, a LayerNorm over a 2-D shape (2-D weight) and an embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.norm = nn.BatchNorm2d(5)
        self.linear = nn.Linear(7, 4)
        self.layer_norm = nn.LayerNorm([2, 3])
        self.embedding = nn.Embedding(6, 4)
        self.group_norm = nn.GroupNorm(2, 4)


def test_each_filter_has_the_norm_of_the_weights_filter() -> None:
    torch.manual_seed(0)
    model = Mixed()
    with torch.no_grad():
        model.conv.weight[2].mul_(10.0)  # filters of very different scales
        model.linear.weight[0].mul_(0.01)
    for direction in random_directions(model, num=3, seed=4):
        for name in ("conv.weight", "linear.weight", "embedding.weight"):
            weight = dict(model.named_parameters())[name].detach()
            d = direction[name]
            assert d.shape == weight.shape
            expected = weight.flatten(1).norm(dim=1)
            torch.testing.assert_close(d.flatten(1).norm(dim=1), expected, rtol=1e-6, atol=0)
            # a random direction, not the weights rescaled
            cosine = torch.nn.functional.cosine_similarity(d.flatten(), weight.flatten(), dim=0)
            assert abs(cosine.item()) < 0.9


def test_biases_and_normalization_parameters_are_zero() -> None:
    model = Mixed()
    (direction,) = random_directions(model, num=1)
    zero = ["conv.bias", "norm.weight", "norm.bias", "linear.bias", "layer_norm.weight",
            "layer_norm.bias", "group_norm.weight", "group_norm.bias"]  # fmt: skip
    assert model.layer_norm.weight.dim() == 2  # zeroed by module type, not by rank
    for name in zero:
        assert torch.count_nonzero(direction[name]) == 0, name
    assert set(direction) == {name for name, _ in model.named_parameters()}


@pytest.mark.parametrize("filter_normalize", [True, False])
def test_frozen_parameters_are_zero_and_the_others_unchanged(filter_normalize: bool) -> None:
    torch.manual_seed(0)
    model = Mixed()
    unfrozen = random_directions(model, num=2, seed=5, filter_normalize=filter_normalize)
    model.conv.requires_grad_(False)  # a frozen layer, as in fine-tuning
    frozen = random_directions(model, num=2, seed=5, filter_normalize=filter_normalize)
    for before, after in zip(unfrozen, frozen, strict=True):
        for name, value in after.items():
            if name.startswith("conv."):
                assert torch.count_nonzero(value) == 0, name
            else:
                assert torch.equal(value, before[name]), name
        assert torch.count_nonzero(before["conv.weight"]) > 0


def test_without_filter_normalization_every_entry_is_standard_normal() -> None:
    model = nn.Linear(400, 50)
    (direction,) = random_directions(model, num=1, seed=3, filter_normalize=False)
    values = torch.cat([direction["weight"].flatten(), direction["bias"]])
    assert abs(values.mean().item()) < 0.02  # 20,050 draws: std of the mean is 0.007
    assert abs(values.std().item() - 1.0) < 0.02
    assert torch.count_nonzero(direction["bias"]) == 50


def test_seeded_reproducible_and_the_global_rng_is_untouched() -> None:
    model = Mixed()
    state = torch.get_rng_state()
    first = random_directions(model, num=2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = random_directions(model, num=2, seed=7)
    other = random_directions(model, num=2, seed=8)
    for name in first[0]:
        assert torch.equal(first[0][name], again[0][name])
        assert torch.equal(first[1][name], again[1][name])
    assert not torch.equal(first[0]["conv.weight"], other[0]["conv.weight"])
    assert not torch.equal(first[0]["conv.weight"], first[1]["conv.weight"])


def test_directions_follow_dtype_and_the_float32_draws_match_float64() -> None:
    model64 = nn.Linear(5, 3).double()
    model32 = nn.Linear(5, 3)
    with torch.no_grad():
        model32.weight.copy_(model64.weight)
    (d64,) = random_directions(model64, num=1)
    (d32,) = random_directions(model32, num=1)
    assert d64["weight"].dtype == torch.float64
    assert d32["weight"].dtype == torch.float32
    torch.testing.assert_close(d32["weight"], d64["weight"].float())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num": 0}, "The 'num' parameter of random_directions must be an int >= 1. Got 0"),
        (
            {"seed": -1},
            "The 'seed' parameter of random_directions must be an int in [0, 2**64 - 1]",
        ),
        (
            {"filter_normalize": 1},
            "'filter_normalize' parameter of random_directions must be a bool",
        ),
    ],
)
def test_bad_arguments_are_reported(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        random_directions(nn.Linear(2, 2), **arguments)  # type: ignore[arg-type]


def test_a_non_module_is_reported() -> None:
    with pytest.raises(
        ValueError, match="The 'model' parameter of random_directions must be a torch.nn.Module"
    ):
        random_directions("model")  # type: ignore[arg-type]


def test_a_seed_past_what_torch_takes_is_refused_and_the_largest_one_works() -> None:
    # 2**64 overflowed inside torch ("Overflow when unpacking long long"): the int
    # constraint compared in floats, where 2**64 - 1 and 2**64 are the same number.
    model = nn.Linear(3, 2)
    for seed in (2**64, 2**70, -1):
        with pytest.raises(
            ValueError, match=r"^The 'seed' parameter of random_directions"
        ) as caught:
            random_directions(model, seed=seed)
        assert str(caught.value) == (
            "The 'seed' parameter of random_directions must be an int in [0, 2**64 - 1] (the "
            f"seeds torch.Generator.manual_seed takes). Got {seed} instead, reduce it into that "
            "range, for example with seed % 2**64."
        )
    # The largest seed draws what torch's generator draws from it (the oracle).
    (direction,) = random_directions(model, num=1, seed=2**64 - 1, filter_normalize=False)
    generator = torch.Generator().manual_seed(2**64 - 1)
    weight = torch.randn((2, 3), generator=generator, dtype=torch.float64).float()
    assert torch.equal(direction["weight"], weight)
