"""Small models and data for the landscape tests."""

from __future__ import annotations

import torch
from torch import nn


def classifier(seed: int = 0) -> nn.Module:
    """An MLP with BatchNorm and dropout, in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 4)
    ).double()


def conv_net(seed: int = 0) -> nn.Module:
    """A small CNN with BatchNorm, in float64."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).double()


def classification_data(
    size: int = 16, channels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (size, 3) if channels is None else (size, channels, 6, 6)
    # float32-representable, so a gradwise Dataset (float32) holds exactly the same values
    inputs = torch.randn(shape, generator=generator).double()
    targets = torch.randint(0, 3 if channels else 4, (size,), generator=generator)
    return inputs, targets


def trained_buffers(model: nn.Module, inputs: torch.Tensor) -> None:
    """A few training-mode forwards so BatchNorm's running statistics are not the defaults."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(inputs)
