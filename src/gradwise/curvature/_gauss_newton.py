"""The Gauss-Newton split of a Hessian, H = G + R: tr G exactly, R as an operator.

For a loss L(z(theta)) of the network's outputs z, H = J^T H_L J + sum_k (dL/dz_k)
nabla^2 z_k: the generalized Gauss-Newton matrix G (J the output Jacobian, H_L the loss's
Hessian in the outputs) plus a residual R. tr G is a sum over samples of tr(H_L,s J_s
J_s^T), exact from the per-sample Jacobians (one backward pass per output, vectorized over
the samples by torch.func). R is the Hessian of <stop_grad(dL/dz), z>, so R v costs one
Hessian-vector product like H v. For a network that is piecewise linear in each parameter
tensor (ReLU, max pooling) the diagonal blocks of R vanish, and so does its trace.

For a network of linear layers (an MLP) both come layer by layer, from derivatives in
the layers' outputs instead of their weights: a layer a_s = W h_s + b enters the loss only
through its outputs. Its block of J_s is B_s (x) [h_s, 1] with B_s = dz_s / da_s, so tr G
needs the B_s (the same C backward passes, in samples x outputs x units entries instead of
samples x outputs x parameters) and the inputs' norms. R's block of (W, b) is sum_s M_s
(x) (h_s h_s^T + 1 if b) with M_s the Hessian of <sg(dL/dz), z> in a_s, so its trace is
sum_s tr(M_s) (||h_s||^2 + 1): the diagonal of every M_s takes one product per unit (all
samples at once), and the h_s h_s^T factor, whose off-diagonal terms are most of the
variance of a probe in the weights, is summed exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import jacrev, vmap

from gradwise._functional import call_with, tensor_slots
from gradwise._objective import parameters_reached
from gradwise.curvature._hessian import Hessian, batch_size

if TYPE_CHECKING:
    from gradwise.curvature._hessian import Batch

#: The most per-sample Jacobian entries (samples x outputs x parameters) tr G is computed
#: from, where the network is not made of linear layers alone. Their cost is memory
#: traffic, not the C backward passes' arithmetic: measured (benchmarks/hessian.py's MLP,
#: 256 x 6 x 1,358 = 2.1M entries) 3-8 ms, the time of 8-11 Hessian-vector products; on an
#: MLP 784-128-128-10 with 128 samples (151M entries) 442 ms, the time of 311, more than
#: the probes it saves.
MAX_JACOBIAN_ENTRIES = 1 << 22
_NO_JACOBIANS = "the model mixes samples or torch.func cannot take per-sample Jacobians"
_MIXES_SAMPLES = "the model mixes samples (a sample alone gives other outputs)"


@dataclass(frozen=True)
class GaussNewtonSplit:
    """tr G (exact), R = H - G as an operator, and the backward passes tr G cost."""

    trace: float
    residual: Hessian
    cost: int


def split_gauss_newton(hessian: Hessian, *, max_outputs: int) -> GaussNewtonSplit | str:
    """The split, or why it does not apply (a sentence) where it does not.

    It applies in eval mode, to a loss that is a sum of per-sample terms and reaches the
    parameters through the model's outputs alone (a penalty in ``loss_fn`` on the weights
    or on activations is in neither G nor R), and a model whose outputs for one sample
    depend on that sample only, all checked here, with at most
    ``max_outputs`` outputs per sample (tr G costs one backward pass per output) and, unless
    every trainable parameter belongs to a linear layer run once on (samples, features),
    at most :data:`MAX_JACOBIAN_ENTRIES` per-sample Jacobian entries in all.
    """
    if hessian._mode != "eval":
        return "the Hessian is taken in train mode, where samples may interact"
    num_samples = sum(batch_size(batch) for batch in hessian._batches)
    traces: list[float] = []
    weights: list[int] = []
    residual_batches: list[Batch] = []
    num_outputs = 0
    for index, batch in enumerate(hessian._batches):
        parts = _batch_parts(hessian, index, max_outputs, num_samples)
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
    """tr R summed over linear layers (exact, or estimated where the units outnumber the
    products) and the products in their outputs it cost."""

    trace: float
    cost: int


def linear_residual_trace(
    residual: Hessian, *, max_products: int, generator: torch.Generator
) -> LinearResidualTrace | str:
    """tr R layer by layer when every trainable parameter belongs to a linear layer; or why
    not.

    ``residual`` is :attr:`GaussNewtonSplit.residual` (eval mode, samples independent,
    both checked by :func:`split_gauss_newton`). It applies when every trainable parameter
    is the weight or bias of an ``nn.Linear`` (its own forward) that runs once per forward
    pass on a (samples, features) input. The layers whose outputs the loss is not linear
    in (all but the last of an MLP) need one product per unit for an exact trace; if
    their units outnumber ``max_products``, the products are shared among them in
    proportion to their units and each is a Rademacher probe in the layer's outputs,
    independent per sample: sum_s (||h_s||^2 + 1) v_s^T M_s v_s, whose variance comes from
    the off-diagonal entries of the M_s alone (a reason if there are more such layers than
    products).
    """
    layers = _linear_layers(residual)
    if isinstance(layers, str):
        return layers
    weights = [batch_size(batch) for batch in residual._batches]
    total, probes = 0.0, []
    for weight, (inputs, loss_gradient) in zip(weights, residual._batches, strict=True):
        with residual._forward_context():
            shifted = _shifted_forward(residual, inputs, layers)
        if isinstance(shifted, str):
            return shifted
        names = list(layers)
        derivatives = torch.autograd.grad(
            _linearized_loss(shifted.outputs, loss_gradient),
            [shifted.shifts[n] for n in names],
            create_graph=True,
            materialize_grads=True,
        )
        curved = [(n, d) for n, d in zip(names, derivatives, strict=True) if d.requires_grad]
        probes = _share([derivative.shape[1] for _, derivative in curved], max_products)
        if len(probes) < len(curved):
            return (
                f"{len(curved)} layers with curvature in their outputs need a product each, "
                f"more than the {max_products} left"
            )
        for (name, derivative), count in zip(curved, probes, strict=True):
            scale = shifted.input_scale(name, layers[name])
            shift = shifted.shifts[name]
            if count >= derivative.shape[1]:
                total += weight * float(scale @ _per_sample_diagonal(derivative, shift).sum(1))
            else:
                total += weight * _rademacher_trace(derivative, shift, scale, count, generator)
    return LinearResidualTrace(trace=total / sum(weights), cost=sum(probes))


def _share(units: list[int], budget: int) -> list[int]:
    """Products per layer: every unit if they all fit, else ``budget`` shared in proportion
    to the units (largest remainders, at least one each); [] if ``budget`` is smaller than
    the number of layers."""
    if sum(units) <= budget:
        return list(units)
    if budget < len(units):
        return []
    quotas = [budget * u / sum(units) for u in units]
    counts = [max(1, int(q)) for q in quotas]
    while sum(counts) > budget:  # the ones raised to 1 are paid by the largest
        counts[counts.index(max(counts))] -= 1
    by_remainder = sorted(range(len(units)), key=lambda i: counts[i] - quotas[i])
    for index in by_remainder[: budget - sum(counts)]:
        counts[index] += 1
    return counts


def _rademacher_trace(
    first_derivative: Tensor, shift: Tensor, scale: Tensor, count: int, generator: torch.Generator
) -> float:
    """sum_s scale_s tr(M_s) from ``count`` Rademacher probes, each independent per sample."""
    total = 0.0
    for _ in range(count):
        signs = torch.randint(
            0, 2, first_derivative.shape, generator=generator, device=first_derivative.device
        )
        probe = (2 * signs - 1).to(first_derivative.dtype)
        (product,) = torch.autograd.grad(
            first_derivative, shift, grad_outputs=probe, retain_graph=True,
            materialize_grads=True,
        )  # fmt: skip
        total += float(scale @ (probe * product).sum(1))
    return total / count


@dataclass(frozen=True)
class _Shifted:
    """A forward pass with a zero shift added to each linear layer's outputs."""

    outputs: Tensor
    shifts: dict[str, Tensor]  # the variables: d/d shift is d/d the layer's outputs
    layer_inputs: dict[str, Tensor]

    def input_scale(self, name: str, kinds: frozenset[str]) -> Tensor:
        """||h_s||^2 (if the weight is trainable) + 1 (if the bias is), per sample: the
        factor h_s h_s^T + 1 of the layer's parameter block, traced."""
        inputs = self.layer_inputs[name]
        scale = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
        if "weight" in kinds:
            scale += inputs.square().sum(1)
        if "bias" in kinds:
            scale += 1
        return scale


def _linear_layers(hessian: Hessian) -> dict[str, frozenset[str]] | str:
    """Each linear layer's name and which of its weight and bias are trainable, if every
    trainable parameter belongs to one; otherwise why not."""
    model = hessian._model
    modules = dict(model.named_modules())
    owners: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(parameter), []).append(name)
    parameters = dict(model.named_parameters())
    layers: dict[str, set[str]] = {}
    for name in hessian._names:
        owner, _, kind = name.rpartition(".")
        if not (_is_plain_linear(modules.get(owner)) and kind in ("weight", "bias")):
            return f"the parameter {name!r} is not the weight or bias of an nn.Linear"
        if _hooked(modules[owner]):
            return f"the layer {owner!r} has forward hooks (they may change its input or output)"
        shared = owners.get(id(parameters[name]), [name])
        if len(shared) > 1:
            # Tied weights: the layer that shares it would be missed by the layered sums.
            return f"the parameter {name!r} is shared ({', '.join(shared)})"
        layers.setdefault(owner, set()).add(kind)
    return {name: frozenset(kinds) for name, kinds in layers.items()}


def _is_plain_linear(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _hooked(module: nn.Module) -> bool:
    """Whether forward hooks run around ``module`` (its own or global ones): they may change
    the input or the output ``W h + b`` that the layered sums differentiate."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


def _shifted_forward(
    hessian: Hessian, inputs: Tensor, layers: dict[str, frozenset[str]]
) -> _Shifted | str:
    """The model's forward pass (in the caller's forward context) with a zero shift that
    requires grad added to each of ``layers``' outputs; or why the layers do not allow it
    (one that runs twice, or on an input whose rows are not the samples)."""
    modules = dict(hessian._model.named_modules())
    num_samples = len(inputs)
    shifts: dict[str, Tensor] = {}
    layer_inputs: dict[str, Tensor] = {}
    problems: list[str] = []

    def hook_for(name: str) -> Callable[[nn.Module, Any, Tensor], Tensor]:
        def shift(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            if name in shifts:
                problems.append(f"the layer {name!r} runs more than once per forward pass")
                return output
            if not args:
                problems.append(f"the layer {name!r} takes its input as a keyword argument")
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

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        outputs = _model_outputs(hessian, _detached_parameters(hessian), inputs)
    finally:
        for handle in handles:
            handle.remove()
    if problems or len(shifts) != len(layers):
        return problems[0] if problems else "a linear layer does not run in the forward pass"
    return _Shifted(outputs, shifts, layer_inputs)


def _per_sample_diagonal(first_derivative: Tensor, shift: Tensor) -> Tensor:
    """(samples, units): the diagonal of each sample's Hessian in the layer's outputs.

    The samples are independent, so the product with the vector that is 1 at unit u of
    every sample is column u of every sample's block, whose entry u is the diagonal's.
    """
    columns = []
    for unit in range(first_derivative.shape[1]):
        (product,) = torch.autograd.grad(
            first_derivative, shift, grad_outputs=_column_indicator(first_derivative, unit),
            retain_graph=True, materialize_grads=True,
        )  # fmt: skip
        columns.append(product[:, unit])
    return torch.stack(columns, dim=1)


def _model_outputs(hessian: Hessian, parameters: dict[str, Tensor], inputs: Tensor) -> Any:
    """The model's outputs on ``inputs`` with ``parameters`` standing in for its own (one
    swap per module attribute: a submodule registered twice keeps its Parameters)."""
    model = hessian._model
    return call_with(model, tensor_slots(model), parameters, (inputs,))


def _detached_parameters(hessian: Hessian) -> dict[str, Tensor]:
    """The trainable parameters by name, detached: what the forward passes here run on."""
    return {n: p.detach() for n, p in zip(hessian._names, hessian._parameters, strict=True)}


def _linearized_loss(outputs: Tensor, loss_gradient: Tensor) -> Tensor:
    """<g, z> with g = dL/dz held fixed: its Hessian in the parameters is R."""
    return (outputs * loss_gradient).sum()


def _batch_parts(
    hessian: Hessian, index: int, max_outputs: int, total_samples: int
) -> tuple[float, Tensor, int] | str:
    """tr G of batch ``index``, dL/dz (detached) and the outputs per sample; or a reason."""
    inputs = hessian._batches[index][0]
    params = _detached_parameters(hessian)
    with hessian._forward_context():
        loss = _loss_in_outputs(hessian, index, max_outputs)
        if isinstance(loss, str):
            return loss
        outputs, value = loss
        num_outputs = outputs[0].numel()
        blocks, loss_gradient = _loss_hessian_blocks(outputs, value)
        if blocks is None:
            return "the loss couples samples (its Hessian in the outputs is not block-diagonal)"
        outputs = outputs.detach()
        layers = _linear_layers(hessian)
        gram = (
            layers
            if isinstance(layers, str)
            else _linear_per_sample_gram(hessian, params, layers, inputs, outputs)
        )
        if isinstance(gram, str) and gram != _MIXES_SAMPLES:  # per-sample Jacobians instead
            entries = total_samples * num_outputs * hessian.num_parameters
            if entries > MAX_JACOBIAN_ENTRIES:
                return (
                    f"the per-sample Jacobians would hold {entries:,} entries, more than "
                    f"{MAX_JACOBIAN_ENTRIES:,}: costlier than the probes they save"
                )
            gram = _per_sample_gram(hessian, params, inputs, outputs)
        if isinstance(gram, str):
            return gram
    trace = float((blocks * gram).sum())
    return trace, loss_gradient, num_outputs


def _loss_in_outputs(hessian: Hessian, index: int, max_outputs: int) -> tuple[Tensor, Tensor] | str:
    """The model's outputs on batch ``index`` as a leaf and the loss taken of them, if the
    loss depends on the parameters through those outputs alone; or why the split does not
    apply. A penalty in ``loss_fn`` on the parameters (weight decay written into the loss)
    or on activations (read from a forward hook) adds curvature that is neither in G nor
    in R, the Hessian of <sg(dL/dz), z>."""
    leaves, loss, outputs = hessian._loss_of_outputs(index)
    if loss is None or outputs.dim() == 0:
        return "the model's output is not one tensor with a batch dimension"
    if outputs.shape[0] != batch_size(hessian._batches[index]):
        return "the model's output has no batch dimension in front"
    if outputs[0].numel() > max_outputs:
        return f"{outputs[0].numel()} outputs per sample cost more than a quarter of the probes"
    if parameters_reached(loss, leaves):
        return (
            "the loss_fn depends on the parameters other than through the model's outputs "
            "(a penalty on the weights or activations), whose curvature G + R leaves out"
        )
    return outputs, loss


def _loss_hessian_blocks(leaf: Tensor, loss: Tensor) -> tuple[Tensor | None, Tensor]:
    """The per-sample blocks (S, C, C) of the loss's Hessian in the outputs, and dL/dz.

    ``loss`` is taken of ``leaf``, the model's outputs detached. If the blocks are the whole
    Hessian, C products recover them: the product with the vector that is 1 at output c of
    every sample is column c of every block. A product with a random vector checks that
    nothing lies outside the blocks (``None`` if it does).
    """
    num_samples, num_outputs = leaf.shape[0], leaf[0].numel()
    (gradient,) = torch.autograd.grad(loss, leaf, create_graph=True, materialize_grads=True)
    flat = gradient.reshape(num_samples, num_outputs)
    if not flat.requires_grad:  # the loss is linear in the outputs: H_L = 0
        zeros = leaf.new_zeros(num_samples, num_outputs, num_outputs)
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
) -> Tensor | str:
    """J_s J_s^T (S, C, C) from per-sample Jacobians; or why not (the model mixes samples)."""
    model = hessian._model
    slots = tensor_slots(model)

    def one_sample(parameters: dict[str, Tensor], sample: Tensor) -> tuple[Tensor, Tensor]:
        output = call_with(model, slots, parameters, (sample.unsqueeze(0),))
        output = output.reshape(-1)
        return output, output

    per_sample = vmap(jacrev(one_sample, has_aux=True), in_dims=(None, 0))
    try:  # all samples at once: at most MAX_JACOBIAN_ENTRIES entries
        jacobians, values = per_sample(params, inputs)
    except RuntimeError:  # an operation torch.func cannot batch, or data-dependent flow
        return _NO_JACOBIANS
    expected = outputs.reshape(values.shape)
    scale = float(expected.abs().amax().clamp(min=1))
    if not torch.allclose(values, expected, rtol=0, atol=_tolerance(values) * scale):
        return _NO_JACOBIANS
    grams = [torch.einsum("sc...,sd...->scd", j, j) for j in jacobians.values()]
    return torch.stack(grams).sum(0)


def _linear_per_sample_gram(
    hessian: Hessian,
    params: dict[str, Tensor],
    layers: dict[str, frozenset[str]],
    inputs: Tensor,
    outputs: Tensor,
) -> Tensor | str:
    """J_s J_s^T (S, C, C) layer by layer, for a network of linear layers; or a reason.

    A layer's block of J_s is B_s (x) [h_s, 1], with B_s = dz_s / da_s the Jacobian of the
    sample's outputs in the layer's outputs, so its share of J_s J_s^T is B_s B_s^T
    (||h_s||^2 + 1): C backward passes give every B_s (output c of every sample at once),
    in samples x outputs x units entries, not samples x outputs x parameters (the
    per-sample gradient norm trick of Goodfellow 2015). The samples must be independent:
    the first sample alone and the second half alone must give the batch's outputs.
    """
    scale = float(outputs.abs().amax().clamp(min=1))
    for part in (slice(0, 1), slice(len(inputs) // 2, len(inputs))):
        alone = _model_outputs(hessian, params, inputs[part])
        if not torch.allclose(alone, outputs[part], rtol=0, atol=_tolerance(alone) * scale):
            return _MIXES_SAMPLES
    shifted = _shifted_forward(hessian, inputs, layers)
    if isinstance(shifted, str):
        return shifted
    num_samples = len(inputs)
    flat = shifted.outputs.reshape(num_samples, -1)
    names = list(layers)
    variables = [shifted.shifts[name] for name in names]
    rows: list[list[Tensor]] = [[] for _ in names]  # per layer, dz_c / da for each output c
    for output in range(flat.shape[1]):
        derivatives = torch.autograd.grad(
            flat[:, output].sum(), variables, retain_graph=True, materialize_grads=True
        )
        for row, derivative in zip(rows, derivatives, strict=True):
            row.append(derivative)
    gram = outputs.new_zeros(num_samples, flat.shape[1], flat.shape[1])
    for name, row in zip(names, rows, strict=True):
        jacobian = torch.stack(row, dim=1)  # (S, C, units)
        factor = shifted.input_scale(name, layers[name])
        gram += torch.einsum("scu,sdu->scd", jacobian, jacobian) * factor[:, None, None]
    return gram


def _tolerance(tensor: Tensor) -> float:
    """sqrt(machine epsilon) of the dtype: rounding differences pass, real ones do not."""
    return torch.finfo(tensor.dtype).eps ** 0.5
