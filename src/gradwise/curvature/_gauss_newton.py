"""The Gauss-Newton split of a Hessian, H = G + R: tr G exactly, R as an operator.

For a loss L(z(theta)) of the network's outputs z, H = J^T H_L J + sum_k (dL/dz_k)
nabla^2 z_k: the generalized Gauss-Newton matrix G (J the output Jacobian, H_L the loss's
Hessian in the outputs) plus a residual R. tr G is a sum over samples of tr(H_L,s J_s
J_s^T), exact from the per-sample Jacobians (one backward pass per output, vectorized over
the samples by torch.func). R is the Hessian of <stop_grad(dL/dz), z>, so R v costs one
Hessian-vector product like H v. For a network that is piecewise linear in each parameter
tensor (ReLU, max pooling) the diagonal blocks of R vanish, and so does its trace.

For a network of linear layers (an MLP), tr R is exact as well, from products in the
layers' outputs instead of their weights: a layer a_s = W h_s + b enters the loss only
through its outputs, so R's block of (W, b) is sum_s M_s (x) (h_s h_s^T + 1 if b) with M_s
the Hessian of <sg(dL/dz), z> in a_s, and its trace sum_s tr(M_s) (||h_s||^2 + 1). The
diagonal of every M_s takes one product per unit (u for u units, all samples at once);
the h_s h_s^T factor, whose off-diagonal terms are most of the variance of a probe in
the weights, is summed exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
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


@dataclass(frozen=True)
class LinearResidualTrace:
    """tr R summed exactly over linear layers, and the products in their outputs it cost."""

    trace: float
    cost: int


def linear_residual_trace(residual: Hessian, *, max_products: int) -> LinearResidualTrace | str:
    """tr R exactly when every trainable parameter belongs to a linear layer; or why not.

    ``residual`` is :attr:`GaussNewtonSplit.residual` (eval mode, samples independent,
    both checked by :func:`split_gauss_newton`). It applies when every trainable parameter
    is the weight or bias of an ``nn.Linear`` (its own forward) that runs once per forward
    pass on a (samples, features) input, and the units of the layers whose outputs the
    loss is not linear in number at most ``max_products``; the cost is that many
    products, each in one layer's outputs over all samples (for the last layer of an MLP,
    whose outputs are the model's, none).
    """
    modules = dict(residual._model.named_modules())
    layers: dict[str, set[str]] = {}
    for name in residual._names:
        owner, _, kind = name.rpartition(".")
        module = modules.get(owner)
        if not (_is_plain_linear(module) and kind in ("weight", "bias")):
            return f"the parameter {name!r} is not the weight or bias of an nn.Linear"
        layers.setdefault(owner, set()).add(kind)
    weights = [batch_size(batch) for batch in residual._batches]
    total, cost = 0.0, 0
    for weight, batch in zip(weights, residual._batches, strict=True):
        parts = _layer_outputs_graph(residual, batch, {n: modules[n] for n in layers})
        if isinstance(parts, str):
            return parts
        first_derivatives, shifts, layer_inputs = parts
        curved = [n for n in layers if first_derivatives[n].requires_grad]
        cost = sum(first_derivatives[n].shape[1] for n in curved)
        if cost > max_products:
            return (
                f"the exact residual needs {cost} products (one per unit of the curved "
                f"layers), more than the {max_products} left"
            )
        for name in curved:
            inputs = layer_inputs[name]
            scale = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
            if "weight" in layers[name]:
                scale += inputs.square().sum(1)
            if "bias" in layers[name]:
                scale += 1
            diagonal = _per_sample_diagonal(first_derivatives[name], shifts[name])
            total += weight * float(scale @ diagonal.sum(1))
    return LinearResidualTrace(trace=total / sum(weights), cost=cost)


def _is_plain_linear(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _layer_outputs_graph(
    residual: Hessian, batch: Batch, layers: dict[str, nn.Module]
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]] | str:
    """<sg(dL/dz), z> differentiated once in each layer's outputs (with its graph), the
    zero shifts added to those outputs (the variables), and each layer's input."""
    shifts: dict[str, Tensor] = {}
    layer_inputs: dict[str, Tensor] = {}
    problems: list[str] = []

    def hook_for(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
        def shift(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            if name in shifts:
                problems.append(f"the layer {name!r} runs more than once per forward pass")
                return output
            if args[0].dim() != 2 or args[0].shape[0] != num_samples:
                problems.append(
                    f"the layer {name!r} takes an input of shape {tuple(args[0].shape)}, "
                    f"not (samples, features) with {num_samples} samples"
                )
                return output
            shifts[name] = torch.zeros_like(output, requires_grad=True)
            layer_inputs[name] = args[0].detach()
            return output + shifts[name]

        return shift

    num_samples = batch_size(batch)
    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    inputs, loss_gradient = batch
    params = {n: p.detach() for n, p in zip(residual._names, residual._parameters, strict=True)}
    try:
        with residual._forward_context():
            outputs = functional_call(residual._model, params, (inputs,), strict=False)
            linearized = _linearized_loss(outputs, loss_gradient)
    finally:
        for handle in handles:
            handle.remove()
    if problems or len(shifts) != len(layers):
        return problems[0] if problems else "a linear layer does not run in the forward pass"
    names = list(layers)
    derivatives = torch.autograd.grad(
        linearized, [shifts[n] for n in names], create_graph=True, materialize_grads=True
    )
    return dict(zip(names, derivatives, strict=True)), shifts, layer_inputs


def _per_sample_diagonal(first_derivative: Tensor, shift: Tensor) -> Tensor:
    """(samples, units): the diagonal of each sample's Hessian in the layer's outputs.

    The samples are independent, so the product with the vector that is 1 at unit u of
    every sample is column u of every sample's block, whose entry u is the diagonal's.
    """
    columns = []
    for unit in range(first_derivative.shape[1]):
        indicator = torch.zeros_like(first_derivative)
        indicator[:, unit] = 1
        (product,) = torch.autograd.grad(
            first_derivative, shift, grad_outputs=indicator, retain_graph=True,
            materialize_grads=True,
        )  # fmt: skip
        columns.append(product[:, unit])
    return torch.stack(columns, dim=1)


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
