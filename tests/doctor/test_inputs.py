"""UNNORMALIZED_INPUTS: the doctor's look at what the model is fed."""

from __future__ import annotations

import torch

from gradwise import Finding
from gradwise.doctor import check_input_scale


def _features(*scales: float, offset: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    columns = [torch.randn(500, generator=generator) * scale + offset for scale in scales]
    return torch.stack(columns, dim=1)


def test_standardized_and_mildly_uneven_inputs_pass() -> None:
    assert check_input_scale(_features(1.0, 1.0, 1.0)) is None
    assert check_input_scale(_features(0.5, 2.0, 10.0)) is None  # within a factor 100


def test_features_on_scales_1e3_apart_are_named_with_a_standardize_fix() -> None:
    finding = check_input_scale(_features(1.0, 1e3, 1e-1))
    assert finding is not None
    assert finding.kind is Finding.UNNORMALIZED_INPUTS
    assert finding.evidence["std_ratio"] > 1e3
    assert finding.fix == {"data.preprocess": ["standardize"]}


def test_large_offsets_and_raw_pixel_scales_are_named() -> None:
    offset = check_input_scale(_features(1.0, 1.0, offset=50.0))
    assert offset is not None
    assert offset.kind is Finding.UNNORMALIZED_INPUTS
    pixels = torch.rand(64, 1, 8, 8) * 255  # raw 0..255 images
    finding = check_input_scale(pixels)
    assert finding is not None
    assert finding.fix == {"data.preprocess": [{"name": "standardize", "per": "channel"}]}


def test_constant_features_are_ignored() -> None:
    inputs = _features(1.0, 1.0)
    inputs = torch.cat([inputs, torch.zeros(500, 1)], dim=1)
    assert check_input_scale(inputs) is None


def test_a_feature_on_a_tiny_scale_is_not_taken_for_a_constant_one() -> None:
    # std 1e-13 next to std 1: 1e13 apart, badly scaled; only a spread at the rounding
    # level of the feature's own mean makes it constant.
    finding = check_input_scale(_features(1.0, 1.0, 1e-13))
    assert finding is not None
    assert finding.evidence["std_ratio"] > 1e12
    near_constant = _features(1.0, 1.0)
    column = torch.full((500, 1), 3.0, dtype=torch.float64)
    column[0] = 3.0 + 4e-16  # one ulp of 3 in float64
    assert check_input_scale(torch.cat([near_constant.double(), column], dim=1)) is None


def test_token_ids_are_indices_not_features() -> None:
    # Ids from 0 to 5,000 read as features look like unstandardized inputs of huge scale;
    # standardizing them (the fix) would break the embedding they index.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5000, (500, 12), generator=generator)
    assert check_input_scale(ids.double()) is not None  # the same values as features
    assert check_input_scale(ids) is None
