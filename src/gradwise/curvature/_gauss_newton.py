"""The Gauss-Newton split of a Hessian, H = G + R: tr G exactly, R as an operator.

For a loss L(z(theta)) of the network's outputs z, H = J^T H_L J + sum_k (dL/dz_k)
nabla^2 z_k: the generalized Gauss-Newton matrix G (J the output Jacobian, H_L the loss's
Hessian in the outputs) plus a residual R. tr G is a sum over samples of tr(H_L,s J_s
J_s^T), exact from the per-sample Jacobians (one backward pass per output, vectorized over
the samples by torch.func). R is the Hessian of <stop_grad(dL/dz), z>, so R v costs one
Hessian-vector product like H v. For a network that is piecewise linear in each parameter
tensor (ReLU, max pooling) the diagonal blocks of R vanish, and so does its trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.func import functional_call, jacrev, vmap

from gradwise.curvature._hessian import Hessian, batch_size

if TYPE_CHECKING:
    from gradwise.curvature._hessian import Batch

#: The most per-sample Jacobian entries (samples x outputs x parameters) tr G is computed
#: from. Their cost is memory traffic, not the C backward passes' arithmetic: measured
#: (benchmarks/hessian.py's MLP, 256 x 6 x 1,358 = 2.1M entries) 3-8 ms, the time of 8-11
#: Hessian-vector products; on an MLP 784-128-128-10 with 128 samples (151M entries) 442
#: ms, the time of 311, more than the probes it saves.
MAX_JACOBIAN_ENTRIES = 1 << 22


@dataclass(frozen=True)
class GaussNewtonSplit:
    """tr G (exact), R = H - G as an operator, and the backward passes tr G cost."""

    trace: float
    residual: Hessian
    cost: int


def split_gauss_newton(hessian: Hessian, *, max_outputs: int) -> GaussNewtonSplit | str:
    """The split, or why it does not apply (a sentence) where it does not.

    It applies in eval mode, to a loss that is a sum of per-sample terms and a model whose
    outputs for one sample depend on that sample only, both checked here, with at most
    ``max_outputs`` outputs per sample (tr G costs one backward pass per output) and at
    most :data:`MAX_JACOBIAN_ENTRIES` per-sample Jacobian entries in all.
    """
    if hessian._mode != "eval":
        return "the Hessian is taken in train mode, where samples may interact"
    num_samples = sum(batch_size(batch) for batch in hessian._batches)
    traces: list[float] = []
    weights: list[int] = []
    residual_batches: list[Batch] = []
    num_outputs = 0
    for batch in hessian._batches:
        parts = _batch_parts(hessian, batch, max_outputs, num_samples)
        if isinstance(parts, str):
            return parts
        trace, loss_gradient, num_outputs = parts
        traces.append(trace)
        weights.append(batch_size(batch))
        residual_batches.append((batch[0], loss_gradient))
    residual = Hessian(
        hessian._model,
        _linearized_loss,
        residual_batches,
        mode="eval",
        keep_graphs=hessian._keep_graphs,
    )
    mean = sum(w * t for w, t in zip(weights, traces, strict=True)) / sum(weights)
    return GaussNewtonSplit(trace=mean, residual=residual, cost=num_outputs)


def _linearized_loss(outputs: Tensor, loss_gradient: Tensor) -> Tensor:
    """<g, z> with g = dL/dz held fixed: its Hessian in the parameters is R."""
    return (outputs * loss_gradient).sum()


def _batch_parts(
    hessian: Hessian, batch: Batch, max_outputs: int, total_samples: int
) -> tuple[float, Tensor, int] | str:
    """tr G of one batch, dL/dz (detached) and the outputs per sample; or a reason."""
    inputs, targets = batch
    params = {n: p.detach() for n, p in zip(hessian._names, hessian._parameters, strict=True)}
    with hessian._forward_context():
        outputs = functional_call(hessian._model, params, (inputs,), strict=False)
        if not isinstance(outputs, Tensor) or outputs.dim() == 0:
            return "the model's output is not one tensor with a batch dimension"
        num_samples = outputs.shape[0]
        num_outputs = outputs[0].numel()
        if num_samples != batch_size(batch):
            return "the model's output has no batch dimension in front"
        if num_outputs > max_outputs:
            return f"{num_outputs} outputs per sample cost more than a quarter of the probes"
        entries = total_samples * num_outputs * hessian.num_parameters
        if entries > MAX_JACOBIAN_ENTRIES:
            return (
                f"the per-sample Jacobians would hold {entries:,} entries, more than "
                f"{MAX_JACOBIAN_ENTRIES:,}: costlier than the probes they save"
            )
        blocks, loss_gradient = _loss_hessian_blocks(hessian, outputs.detach(), targets)
        if blocks is None:
            return "the loss couples samples (its Hessian in the outputs is not block-diagonal)"
        gram = _per_sample_gram(hessian, params, inputs, outputs.detach())
        if gram is None:
            return "the model mixes samples or torch.func cannot take per-sample Jacobians"
    trace = float((blocks * gram).sum())
    return trace, loss_gradient, num_outputs


def _loss_hessian_blocks(
    hessian: Hessian, outputs: Tensor, targets: Any
) -> tuple[Tensor | None, Tensor]:
    """The per-sample blocks (S, C, C) of the loss's Hessian in the outputs, and dL/dz.

    If the blocks are the whole Hessian, C products recover them: the product with the
    vector that is 1 at output c of every sample is column c of every block. A product with
    a random vector checks that nothing lies outside the blocks (``None`` if it does).
    """
    num_samples, num_outputs = outputs.shape[0], outputs[0].numel()
    leaf = outputs.detach().requires_grad_(True)
    loss = hessian._loss_fn(leaf, targets)
    (gradient,) = torch.autograd.grad(loss, leaf, create_graph=True)
    flat = gradient.reshape(num_samples, num_outputs)
    if not flat.requires_grad:  # the loss is linear in the outputs: H_L = 0
        zeros = outputs.new_zeros(num_samples, num_outputs, num_outputs)
        return zeros, gradient.detach()

    def product(vector: Tensor) -> Tensor:
        (result,) = torch.autograd.grad(
            flat, leaf, grad_outputs=vector, retain_graph=True, materialize_grads=True
        )
        return result.reshape(num_samples, num_outputs)

    columns = [product(_column_indicator(flat, c)) for c in range(num_outputs)]
    blocks = torch.stack(columns, dim=2)  # blocks[s, :, c] = column c of sample s's block
    check = torch.randn(flat.shape, dtype=flat.dtype, device=flat.device)
    expected = torch.einsum("scd,sd->sc", blocks, check)
    found = product(check)
    scale = blocks.abs().amax() * check.abs().amax() * num_outputs
    if (found - expected).abs().amax() > _tolerance(flat) * scale:
        return None, gradient.detach()
    return blocks, gradient.detach()


def _column_indicator(flat: Tensor, column: int) -> Tensor:
    vector = torch.zeros_like(flat)
    vector[:, column] = 1
    return vector


def _per_sample_gram(
    hessian: Hessian, params: dict[str, Tensor], inputs: Tensor, outputs: Tensor
) -> Tensor | None:
    """J_s J_s^T (S, C, C) from per-sample Jacobians; ``None`` if the model mixes samples."""
    model = hessian._model

    def one_sample(parameters: dict[str, Tensor], sample: Tensor) -> tuple[Tensor, Tensor]:
        output = functional_call(model, parameters, (sample.unsqueeze(0),), strict=False)
        output = output.reshape(-1)
        return output, output

    per_sample = vmap(jacrev(one_sample, has_aux=True), in_dims=(None, 0))
    try:  # all samples at once: at most MAX_JACOBIAN_ENTRIES entries
        jacobians, values = per_sample(params, inputs)
    except RuntimeError:  # an operation torch.func cannot batch, or data-dependent flow
        return None
    expected = outputs.reshape(values.shape)
    scale = float(expected.abs().amax().clamp(min=1))
    if not torch.allclose(values, expected, rtol=0, atol=_tolerance(values) * scale):
        return None
    grams = [torch.einsum("sc...,sd...->scd", j, j) for j in jacobians.values()]
    return torch.stack(grams).sum(0)


def _tolerance(tensor: Tensor) -> float:
    """sqrt(machine epsilon) of the dtype: rounding differences pass, real ones do not."""
    return torch.finfo(tensor.dtype).eps ** 0.5
