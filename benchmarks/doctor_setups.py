"""Entry points for the doctor suite's setups that a config cannot express.

Each function is a gradwise ``module:function`` entry point (``data.dataset`` or
``model.name``): run from the repository root, ``benchmarks.doctor_setups:scaled_digits``
resolves with the working directory on ``sys.path``. Everything is generated or loaded
offline (scikit-learn's bundled digits).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from gradwise.data import Dataset, DataSplits, load_dataset

__all__ = [
    "SCALES",
    "WrongBackwardLinear",
    "scaled_digits",
    "shuffled",
    "shuffled_digits",
    "tiny",
    "tiny_digits",
    "wrong_backward_mlp",
    "wrong_relu_mlp",
    "ReluWithoutMask",
]

#: Column scales of :func:`scaled_digits`: cycling through 1, 1e3 and 1e-3, so neighbouring
#: features are three orders of magnitude apart (and 1e6 between the extremes).
SCALES = (1.0, 1e3, 1e-3)


def _digits(seed: int = 0) -> DataSplits:
    return load_dataset("digits", seed=seed)


def _with_inputs(split: Dataset | None, transform: Any) -> Dataset | None:
    if split is None:
        return None
    return dataclasses.replace(split, inputs=transform(split.inputs))


def scaled_digits(seed: int = 0) -> DataSplits:
    """Digits (8x8, pixel values 0..16) flattened, with feature j multiplied by
    ``SCALES[j % 3]``: unnormalized inputs on scales 1e3 apart."""
    data = _digits(seed)
    width = int(torch.tensor(data.train.inputs.shape[1:]).prod())
    scale = torch.tensor([SCALES[j % len(SCALES)] for j in range(width)])

    def transform(inputs: Tensor) -> Tensor:
        return inputs.reshape(len(inputs), -1) * scale

    return dataclasses.replace(
        data,
        train=dataclasses.replace(data.train, inputs=transform(data.train.inputs)),
        validation=_with_inputs(data.validation, transform),
        test=_with_inputs(data.test, transform),
        input_shape=(width,),
    )


def tiny_digits(samples: int = 40, seed: int = 0) -> DataSplits:
    """Digits with only ``samples`` training samples (validation and test unchanged)."""
    return tiny("digits", samples, seed)


def tiny(dataset: str, samples: int, seed: int = 0) -> DataSplits:
    """The built-in ``dataset`` with only ``samples`` training samples (validation and
    test unchanged)."""
    data = load_dataset(dataset, seed=seed)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    keep = order[:samples]
    train = dataclasses.replace(
        data.train, inputs=data.train.inputs[keep], targets=data.train.targets[keep]
    )
    return dataclasses.replace(data, train=train)


def shuffled_digits(seed: int = 0) -> DataSplits:
    """Digits whose training targets are randomly permuted (validation and test keep the
    true labels): nothing about the inputs predicts the training labels."""
    return shuffled("digits", seed)


def shuffled(dataset: str, seed: int = 0) -> DataSplits:
    """The built-in ``dataset`` with its training targets randomly permuted (validation
    and test keep the true labels)."""
    data = load_dataset(dataset, seed=seed)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed + 1))
    train = dataclasses.replace(data.train, targets=data.train.targets[order])
    return dataclasses.replace(data, train=train)


class _WrongLinearFunction(torch.autograd.Function):
    """y = x W^T + b, with a backward that halves dL/dx and dL/dW (dL/db is right)."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(inputs, weight)
        return inputs @ weight.T + bias

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        inputs, weight = ctx.saved_tensors
        # The bug: dL/dW should be grad^T x; here it is scaled by 0.5, and dL/dx drops
        # a factor too. A plausible "off by a constant" bug that training survives.
        return 0.5 * (grad @ weight), 0.5 * (grad.T @ inputs), grad.sum(dim=0)


class WrongBackwardLinear(nn.Linear):
    """A linear layer computed by a custom autograd Function whose backward is wrong."""

    def forward(self, inputs: Tensor) -> Tensor:
        output: Tensor = _WrongLinearFunction.apply(  # type: ignore[no-untyped-call]
            inputs, self.weight, self.bias
        )
        return output


def wrong_backward_mlp(inputs: int = 64, width: int = 128, classes: int = 10) -> nn.Module:
    """Flatten -> Linear -> ReLU -> WrongBackwardLinear -> ReLU -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, width),
        nn.ReLU(),
        WrongBackwardLinear(width, width),
        nn.ReLU(),
        nn.Linear(width, classes),
    )


class _ReluWithoutMaskFunction(torch.autograd.Function):
    """max(x, 0), with a backward that forgot the mask: the gradient passes where x < 0."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor) -> Tensor:
        return inputs.clamp_min(0.0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad  # the bug: should be grad * (inputs > 0)


class ReluWithoutMask(nn.Module):
    """A ReLU computed by a custom autograd Function whose backward has no mask."""

    def forward(self, inputs: Tensor) -> Tensor:
        output: Tensor = _ReluWithoutMaskFunction.apply(inputs)  # type: ignore[no-untyped-call]
        return output


def wrong_relu_mlp(inputs: int = 40, width: int = 128, classes: int = 10) -> nn.Module:
    """Flatten -> Linear -> ReLU -> Linear -> ReluWithoutMask -> Linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(inputs, width),
        nn.ReLU(),
        nn.Linear(width, width),
        ReluWithoutMask(),
        nn.Linear(width, classes),
    )
