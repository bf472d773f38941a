"""Small float64 models whose exact Hessian torch.func.hessian can form (the oracle)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def mlp(sizes: tuple[int, ...] = (12, 32, 24, 6), seed: int = 0) -> nn.Sequential:
    """A tanh MLP in float64."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def classification_batch(
    num_samples: int = 64, num_features: int = 12, num_classes: int = 6, seed: int = 1
) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)
    return inputs, targets


def exact_hessian(model: nn.Module, loss_fn, inputs: Tensor, targets: Tensor) -> Tensor:
    """The dense Hessian over the flat trainable parameters, by torch.func.hessian."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    was_training = model.training
    model.eval()

    def loss_of(vector: Tensor) -> Tensor:
        pieces = torch.split(vector, sizes)
        params = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    try:
        with warnings.catch_warnings():
            # Raised inside torch the first time forward-mode AD loads its decompositions.
            warnings.filterwarnings(
                "ignore", "`torch.jit.script` is deprecated", DeprecationWarning
            )
            return torch.func.hessian(loss_of)(flat)
    finally:
        model.train(was_training)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets)


def dense_hessian(model: nn.Module, objective) -> Tensor:
    """The dense Hessian of ``objective(parameters)`` over the flat trainable parameters, by
    torch.autograd.functional.hessian: the oracle for losses that are more than
    ``loss_fn(model(inputs), targets)`` (a penalty written out on the parameters, say).

    ``objective`` gets the trainable parameters as a dict by name, views of one flat vector.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    names = [name for name, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(vector: Tensor) -> Tensor:
        pieces = torch.split(vector, sizes)
        return objective(
            {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes, strict=True)}
        )

    return torch.autograd.functional.hessian(loss_of, flat)
