"""The Hessian of a model's loss as a linear operator: products H v without forming H."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from gradwise._functional import call_with, tensor_slots
from gradwise._modes import module_modes, restore_modes
from gradwise._objective import LossFunction, Objective, held_parameters_error, parameters_reached
from gradwise._validation import NON_NEGATIVE_INT, OneOf, Satisfies, check, invalid_value_error

if TYPE_CHECKING:
    from gradwise.curvature._spectrum import (
        EigenvalueDensity,
        NegativeCurvature,
        TraceMethod,
        Which,
    )

Batch = tuple[Tensor, Any]
Mode = Literal["eval", "train"]


class _Shown:
    """A value shown in an error message by a short description instead of its repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class Hessian:
    r"""The Hessian :math:`H = \nabla^2_\theta L(\theta)` of a model's loss, as an operator.

    ``hessian @ v`` (or :meth:`matvec`) returns :math:`Hv` for a flat vector ``v`` with one
    entry per trainable parameter (``model.named_parameters()`` order, parameters with
    ``requires_grad=False`` held fixed), by double backward: the gradient is computed with
    ``create_graph=True`` and differentiated once more along ``v`` (Pearlmutter 1994). The
    loss is evaluated through ``torch.func.functional_call`` on detached copies of the
    parameters and cloned buffers, so the model's parameters, buffers, ``.grad`` and
    train/eval flags are never changed, and torch's RNG state is restored after each pass;
    that holds for a model that registers a submodule twice (``self.b = self.a``,
    ``nn.ModuleList([block] * 3)``) too, whose shared tensors are swapped once each.
    The copies stand in for the parameters while ``loss_fn`` runs too, so a penalty in it
    that reads them from the model (``model.parameters()``, ``model.weight``,
    ``l2_penalty(model, ...)``) is part of :math:`H`; one that reaches them through tensors
    held from before (a list of ``model.parameters()``, a ``regularize.Penalty``) would
    be left out, and is refused with a ValueError.

    ``data`` is one ``(inputs, targets)`` batch or an iterable of such batches. With several
    batches, :math:`H` is the batch-size-weighted mean of the batches' Hessians (exact for a
    mean-reduced loss: it is then the Hessian of the loss over all the samples); the batches
    are held in a list, on the model's device, with floating-point inputs in its dtype (that
    of its first floating-point parameter, which a frozen float32 backbone sets) and
    floating-point targets widened to the trainable parameters' (a gradwise Dataset's
    float32 batches work with a float64 model). With one batch, the
    gradient's graph is built once and kept, so each product is a single backward pass
    through it.

    ``mode="eval"`` (the default, as in PyHessian) evaluates the model in eval mode
    (``model.eval()``): dropout off, batch norm with its running statistics.
    ``mode="train"`` evaluates it as it trains. A model in training mode is taken as it
    is: every module keeps its own flag, so a layer put in eval mode inside it (a frozen
    batch norm) stays in eval mode; a model in eval mode gets ``model.train()`` first (with
    any ``train`` override of its modules), as a training loop does. Every pass then
    starts from the same RNG state, so dropout draws the same masks each time and
    :math:`H` is the Hessian of one fixed sub-network. Either way every module's flag is
    restored after each pass.

    Non-finite parameters, a batch without samples, a loss that is not finite and a
    product that is not finite are refused with a ValueError that says which and where.

    Args:
        model: the network; its parameters' dtype (float64 for accurate spectra) and
            device are used for every vector.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar tensor``, mean-reduced; it
            may add penalties on the parameters that it reads from the model.
        data: an ``(inputs, targets)`` batch or an iterable of batches, each with at
            least one sample.
        mode: "eval" or "train".
        keep_graphs: with up to this many batches (default 16), each batch's gradient
            graph is built once and kept, so a product is one double backward per batch;
            with more, graphs are rebuilt for every product to bound memory.

    Attributes:
        num_parameters: the length of the vectors (number of trainable scalars).
        num_products: Hessian-vector products computed so far (the cost unit of the
            spectral methods).

    Example:
        >>> import torch
        >>> from gradwise.curvature import Hessian
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, -1.0]]))
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> y = torch.zeros(2, 1, dtype=torch.float64)
        >>> hessian = Hessian(model, torch.nn.functional.mse_loss, (x, y))
        >>> hessian @ torch.tensor([1.0, 0.0], dtype=torch.float64)  # H = X^T X (2/2)
        tensor([1., 0.], dtype=torch.float64)
        >>> hessian.num_products
        1
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFunction,
        data: Any,
        *,
        mode: Mode = "eval",
        keep_graphs: int = 16,
    ) -> None:
        owner = type(self).__name__
        check("model", owner, model, Satisfies(lambda m: isinstance(m, nn.Module), "a Module"))
        check("loss_fn", owner, loss_fn, Satisfies(callable, "a callable"))
        check("mode", owner, mode, OneOf(("eval", "train")))
        self._model = model
        self._objective = Objective(model, loss_fn)
        self._mode = mode
        self._batches = as_batches(data, owner)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        _check_parameters(named, owner)
        _check_finite_parameters(model, owner)
        self._names = [name for name, _ in named]
        # One path per module attribute, each swapped once: functional_call's own tying left
        # a submodule registered twice (self.b = self.a) holding a leaf, not its Parameter.
        self._slots = tensor_slots(model, prefix="model.")
        self._parameters = [p for _, p in named]
        self._sizes = [p.numel() for p in self._parameters]
        self.num_parameters = sum(self._sizes)
        self.dtype = self._parameters[0].dtype
        self.device = self._parameters[0].device
        self._input_dtype = _input_dtype(model, self.dtype)
        # A gradwise Dataset holds float32 inputs; a float64 model (for accurate spectra)
        # takes them in its own dtype, as the landscape functions do.
        self._batches = [self._to_model(batch) for batch in self._batches]
        self.num_products = 0
        self._cpu_rng = torch.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state(self.device) if self._on_cuda else None
        check("keep_graphs", owner, keep_graphs, NON_NEGATIVE_INT)
        # Up to this many batches, each batch's gradient graph is built once and kept, so a
        # product costs one double backward per batch (about 1.5x a gradient) instead of
        # a forward, a create_graph backward and a double backward (4-7x, measured in
        # benchmarks/hessian.py); the price is the batches' activations held in memory.
        self._keep_graphs = keep_graphs
        self._graphs: list[tuple[list[Tensor], Tensor]] | None = None
        self._walked: set[int] = set()  # batches whose loss graph was searched (once each)

    @property
    def parameter_sizes(self) -> tuple[int, ...]:
        """The number of entries of each parameter tensor, in the flat vector's order."""
        return tuple(self._sizes)

    def _to_model(self, batch: Batch) -> Batch:
        """The batch on the model's device, floating-point inputs in the model's dtype and
        floating-point targets widened to it (exact), as a Dataset's float32 regression
        targets next to a float64 model: F.huber_loss's derivatives refused the mix
        ("Found dtype Float but expected Double"). Narrower model dtypes leave them as
        given, so the loss is the one the user wrote."""
        inputs, targets = batch
        dtype = self._input_dtype if inputs.is_floating_point() else inputs.dtype
        if isinstance(targets, Tensor):
            widen = targets.is_floating_point() and (
                torch.promote_types(targets.dtype, self.dtype) == self.dtype
            )
            targets = targets.to(device=self.device, dtype=self.dtype if widen else None)
        return inputs.to(device=self.device, dtype=dtype), targets

    @property
    def _on_cuda(self) -> bool:
        return self.device.type == "cuda"

    def __matmul__(self, vector: Tensor) -> Tensor:
        return self.matvec(vector)

    def matvec(self, vector: Tensor) -> Tensor:
        """:math:`Hv` for a flat vector ``v`` of length :attr:`num_parameters`."""
        self._check_vector(vector)
        self.num_products += 1
        keep = len(self._batches) <= max(self._keep_graphs, 1)
        if keep and self._graphs is None:
            self._graphs = [self._gradient_graph(index) for index in range(len(self._batches))]
        total = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
        weights = 0
        for index, batch in enumerate(self._batches):
            leaves, gradient = self._graphs[index] if self._graphs else self._gradient_graph(index)
            weight = batch_size(batch)
            total += weight * _differentiate(leaves, gradient, vector, retain_graph=keep)
            weights += weight
        product = total / weights
        if not _all_finite(product):
            raise ValueError(
                "The Hessian-vector product is not finite, though the loss, the parameters "
                f"and the vector are: {_count_non_finite(product)}. The loss's second "
                "derivative is infinite or undefined at these parameters (sqrt or abs at 0, "
                "say) or overflows the model's dtype; move off that point, or evaluate in "
                "float64 (model.double())."
            )
        return product

    def gradient(self) -> Tensor:
        """The flat gradient of the loss (batch-size-weighted mean over the batches)."""
        total = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
        weights = 0
        for index, batch in enumerate(self._batches):
            leaves, loss = self._loss(index)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
            weight = batch_size(batch)
            total += weight * torch.cat([g.reshape(-1) for g in grads])
            weights += weight
        return total / weights

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector into one tensor per trainable parameter, by name."""
        self._check_vector(vector)
        pieces = torch.split(vector, self._sizes)
        return {
            name: piece.view_as(p)
            for name, piece, p in zip(self._names, pieces, self._parameters, strict=True)
        }

    def eigenvalues(
        self,
        k: int = 5,
        which: Which = "largest",
        *,
        tol: float = 1e-5,
        max_iterations: int = 100,
        seed: int = 0,
    ) -> tuple[Tensor, Tensor]:
        """The k extreme eigenvalues, each to ``tol`` of itself, and their eigenvectors
        (columns): see :func:`eigenvalues`."""
        return _spectrum().eigenvalues_of(
            self, k, which, tol=tol, max_iterations=max_iterations, seed=seed,
            owner="eigenvalues",
        )  # fmt: skip

    def trace(
        self, *, num_probes: int = 100, seed: int = 0, method: TraceMethod = "gauss-newton"
    ) -> float:
        """Trace estimate from at most ``num_probes`` products (exact Gauss-Newton part plus
        the rest layer by layer or by stratified Hutchinson, stratified Hutchinson by
        parameter tensor, Hutchinson or Hutch++), exact from the ``num_parameters`` unit
        vectors where ``num_probes >= num_parameters``: see :func:`trace`."""
        return _spectrum().trace_of(
            self, num_probes=num_probes, seed=seed, method=method, owner="trace"
        )

    def eigenvalue_density(
        self, *, num_iterations: int = 64, num_probes: int = 1, seed: int = 0
    ) -> EigenvalueDensity:
        """Stochastic Lanczos quadrature: see :func:`eigenvalue_density`."""
        return _spectrum().density_of(
            self, num_iterations=num_iterations, num_probes=num_probes, seed=seed,
            owner="eigenvalue_density",
        )  # fmt: skip

    def condition_number(
        self, *, tol: float = 1e-5, max_iterations: int = 100, seed: int = 0
    ) -> float:
        """lambda_max / lambda_min, each to ``tol`` of itself (inf unless positive definite
        to working precision): see :func:`condition_number`."""
        return _spectrum().condition_number_of(
            self, tol=tol, max_iterations=max_iterations, seed=seed, owner="condition_number"
        )

    def negative_curvature(
        self,
        *,
        tolerance: float = 1e-3,
        tol: float = 1e-5,
        max_iterations: int = 100,
        seed: int = 0,
    ) -> NegativeCurvature:
        """Extreme eigenvalues, most negative direction: see :func:`find_negative_curvature`."""
        return _spectrum().negative_curvature_of(
            self, tolerance=tolerance, tol=tol, max_iterations=max_iterations, seed=seed,
            owner="find_negative_curvature",
        )  # fmt: skip

    def _gradient_graph(self, index: int) -> tuple[list[Tensor], Tensor]:
        leaves, loss = self._loss(index)
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        flat = [
            torch.zeros_like(leaf).reshape(-1) if g is None else g.reshape(-1)
            for g, leaf in zip(grads, leaves, strict=True)
        ]
        return leaves, torch.cat(flat)

    def _loss(self, index: int) -> tuple[list[Tensor], Tensor]:
        """The loss on batch ``index`` and the leaves it is differentiated in."""
        leaves, loss, _ = self._run(index, cut_outputs=False)
        return leaves, self._checked(loss, index)

    def _loss_of_outputs(self, index: int) -> tuple[list[Tensor], Tensor | None, Any]:
        """``(leaves, loss, outputs)``: the loss on batch ``index`` taken of a detached copy
        of the model's outputs that requires grad (``outputs``); the loss is None where
        the outputs are not one tensor. What else the loss depends on (a penalty on the
        parameters, say) still reaches the leaves."""
        leaves, loss, outputs = self._run(index, cut_outputs=True)
        return leaves, None if loss is None else self._checked(loss, index), outputs

    def _run(self, index: int, *, cut_outputs: bool) -> tuple[list[Tensor], Any, Any]:
        """``loss_fn(model(inputs), targets)`` on batch ``index`` with the trainable
        parameters replaced by fresh leaves for the model's forward pass and ``loss_fn``
        alike, so that a penalty in ``loss_fn`` reading ``model.parameters()`` is
        differentiated too; run after the swap, it would see the originals."""
        inputs, targets = self._batches[index]
        leaves = [p.detach().requires_grad_(True) for p in self._parameters]
        state = dict(zip(self._names, leaves, strict=True))
        if self._mode == "train":
            # Batch norm updates its running statistics in place in train mode: on clones.
            state.update({n: b.clone() for n, b in self._model.named_buffers()})
        with self._forward_context():
            loss, outputs = call_with(
                self._objective, self._slots, state, (inputs, targets, cut_outputs)
            )
        return leaves, loss, outputs

    def _checked(self, loss: Any, index: int) -> Tensor:
        """``loss`` as a 0-d tensor that is finite and reaches the trainable parameters
        only through the leaves; otherwise the error that says which."""
        loss = scalar_loss(loss)
        self._check_loss(loss, index)
        return loss

    def _check_loss(self, loss: Tensor, index: int) -> None:
        """A finite loss that reaches the trainable parameters only through the leaves."""
        count = len(self._batches)
        where = "the batch" if count == 1 else f"batch {index + 1} of {count}"
        if not bool(torch.isfinite(loss)):
            raise ValueError(
                "The 'loss_fn' parameter of Hessian must return a finite loss. Got "
                f"{float(loss.detach())} on {where} instead. The trainable parameters are "
                "finite: look for NaN or inf in that batch's inputs or targets, in the model's "
                "frozen parameters or buffers (batch-norm statistics), or for a loss that "
                "overflows (the log of 0)."
            )
        if index in self._walked:
            return
        reached = parameters_reached(loss, self._parameters)
        if reached:
            names = [self._names[i] for i in reached]
            raise held_parameters_error("Hessian", names, "whose curvature H would leave out")
        self._walked.add(index)

    @contextlib.contextmanager
    def _forward_context(self) -> Iterator[None]:
        flags = module_modes(self._model)
        devices = [self.device] if self._on_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._cpu_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state(self._cuda_rng, self.device)
            # "train" with the model in training mode keeps every module's own flag (a
            # batch norm the user put in eval stays there); from eval mode it is
            # model.train(), as a training loop does. "eval" is model.eval().
            if self._mode == "eval" or not self._model.training:
                self._model.train(self._mode == "train")
            try:
                yield
            finally:
                restore_modes(flags)

    def _check_vector(self, vector: Any) -> None:
        expected = f"a {self.dtype} tensor of shape ({self.num_parameters},) on {self.device}"
        if not (
            isinstance(vector, Tensor)
            and vector.shape == (self.num_parameters,)
            and vector.dtype == self.dtype
            and vector.device == self.device
        ):
            shown = _Shown(_describe(vector))
            raise invalid_value_error("vector", "Hessian.matvec", expected, shown)
        if not _all_finite(vector):
            shown = _Shown(f"{_describe(vector)} with {_count_non_finite(vector)}")
            raise invalid_value_error("vector", "Hessian.matvec", "finite", shown)


def hessian_vector_product(
    model: nn.Module, loss_fn: LossFunction, data: Any, vector: Tensor, *, mode: Mode = "eval"
) -> Tensor:
    r"""One Hessian-vector product :math:`Hv`: shorthand for ``Hessian(...) @ vector``.

    For several products with the same model and data build a :class:`Hessian` once: with a
    single batch it keeps the gradient's graph and each product is one backward pass.

    Example:
        >>> import torch
        >>> from gradwise.curvature import hessian_vector_product
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> x = torch.tensor([[3.0]], dtype=torch.float64)
        >>> loss = lambda out, y: (out - y).pow(2).sum()  # H = 2 x^2 = 18
        >>> hessian_vector_product(model, loss, (x, x), torch.ones(1, dtype=torch.float64))
        tensor([18.], dtype=torch.float64)
    """
    return Hessian(model, loss_fn, data, mode=mode).matvec(vector)


def as_batches(data: Any, owner: str) -> list[Batch]:
    """One ``(inputs, targets)`` batch, or an iterable of them, as a non-empty list."""
    expected = "an (inputs, targets) batch or an iterable of such batches"
    if _is_batch(data):
        return _check_samples([(data[0], data[1])], owner)
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise invalid_value_error("data", owner, expected, _Shown(_describe(data)))
    batches = list(data)
    if not batches or not all(_is_batch(batch) for batch in batches):
        shown = "an empty iterable" if not batches else "an iterable with a non-batch item"
        raise invalid_value_error("data", owner, expected, _Shown(shown))
    return _check_samples([(batch[0], batch[1]) for batch in batches], owner)


def _check_samples(batches: list[Batch], owner: str) -> list[Batch]:
    """``batches``, or the error for one without samples (whose mean loss is 0 / 0)."""
    for index, (inputs, _) in enumerate(batches):
        if batch_size((inputs, None)) == 0:
            where = "the batch" if len(batches) == 1 else f"batch {index + 1} of {len(batches)}"
            raise ValueError(
                f"The 'data' parameter of {owner} must hold batches with at least one sample "
                f"each. Got {where} with inputs of shape {tuple(inputs.shape)} instead; leave "
                "the empty batches out."
            )
    return batches


def batch_size(batch: Batch) -> int:
    inputs = batch[0]
    return int(inputs.shape[0]) if inputs.dim() > 0 else 1


def _is_batch(data: Any) -> bool:
    return isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor)


def _check_parameters(named: list[tuple[str, nn.Parameter]], owner: str) -> None:
    if not named:
        raise invalid_value_error(
            "model", owner, "a Module with trainable parameters", _Shown("one with none")
        )
    kinds = {(p.dtype, p.device) for _, p in named}
    if len(kinds) > 1:
        shown = ", ".join(sorted(f"{dtype} on {device}" for dtype, device in kinds))
        raise invalid_value_error(
            "model", owner, "a Module whose trainable parameters share one dtype and device",
            _Shown(f"a Module with {shown}"),
        )  # fmt: skip


def _check_finite_parameters(model: nn.Module, owner: str) -> None:
    """Every parameter finite, or the error that names those that are not: a NaN or inf
    would otherwise surface as a failed eigensolver deep inside Lanczos."""
    bad = [
        f"{name!r} ({_count_non_finite(p)})"
        for name, p in model.named_parameters()
        if not bool(torch.isfinite(p).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(
            f"The 'model' parameter of {owner} must be a Module with finite parameters. Got "
            f"a Module with non-finite entries in {shown} instead; reload them from a "
            "checkpoint taken before they diverged (a lower learning rate or gradient "
            "clipping keeps them finite)."
        )


def _input_dtype(model: nn.Module, trainable: torch.dtype) -> torch.dtype:
    """The dtype floating-point inputs take: that of the model's first floating-point
    parameter or buffer, trainable or not (the layer the inputs enter, in registration
    order, as gradwise.checks does). Casting them to the trainable parameters' dtype broke
    a frozen float32 backbone under a float64 head: its first layer got float64 inputs."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return trainable


def _all_finite(tensor: Tensor) -> bool:
    """Whether every entry is finite. A sum is NaN or inf whenever an entry is, and costs
    a fourteenth of ``isfinite(tensor).all()`` (20 against 280 us on 118k entries), which
    doubled the per-product overhead of :meth:`Hessian.matvec`; only a sum that is not
    finite (or that overflowed on finite entries) is checked entry by entry."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _count_non_finite(tensor: Tensor) -> str:
    """How many NaN and infinite entries ``tensor`` holds, in words: "1 NaN of 32 entries"."""
    counts = ((int(torch.isnan(tensor).sum()), "NaN"), (int(torch.isinf(tensor).sum()), "inf"))
    found = " and ".join(f"{count} {kind}" for count, kind in counts if count)
    return f"{found} of {tensor.numel()} entries"


def _differentiate(
    leaves: list[Tensor], gradient: Tensor, vector: Tensor, *, retain_graph: bool
) -> Tensor:
    if not gradient.requires_grad:  # the gradient does not depend on the parameters: H = 0
        return torch.zeros_like(vector)
    products = torch.autograd.grad(
        gradient,
        leaves,
        grad_outputs=vector,
        retain_graph=retain_graph,
        allow_unused=True,
        materialize_grads=True,
    )
    return torch.cat([product.reshape(-1) for product in products])


def _spectrum() -> ModuleType:
    # The estimators take a Hessian; importing them here at call time avoids a cycle.
    from gradwise.curvature import _spectrum as module

    return module


def scalar_loss(loss: Any) -> Tensor:
    """``loss`` as a 0-d tensor, or the error every curvature function gives for a loss
    that is not one number (``reduction="none"``, a Python float)."""
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(
            "The 'loss_fn' parameter of Hessian must return a scalar tensor (a "
            f"mean-reduced loss). Got {_describe(loss)} instead."
        )
    return loss.reshape(())


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"
