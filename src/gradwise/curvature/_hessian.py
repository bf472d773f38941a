"""The Hessian of a model's loss as a linear operator: products H v without forming H."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gradwise._validation import NON_NEGATIVE_INT, OneOf, Satisfies, check, invalid_value_error

if TYPE_CHECKING:
    from gradwise.curvature._spectrum import (
        EigenvalueDensity,
        NegativeCurvature,
        TraceMethod,
        Which,
    )

LossFunction = Callable[[Any, Any], Tensor]
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
    train/eval flags are never changed, and torch's RNG state is restored after each pass.

    ``data`` is one ``(inputs, targets)`` batch or an iterable of such batches. With several
    batches, :math:`H` is the batch-size-weighted mean of the batches' Hessians (exact for a
    mean-reduced loss: it is then the Hessian of the loss over all the samples); the batches
    are held in a list. With one batch, the gradient's graph is built once and kept, so each
    product is a single backward pass through it.

    ``mode="eval"`` (the default, as in PyHessian) evaluates the model in eval mode:
    dropout off, batch norm with its running statistics. ``mode="train"`` keeps training
    behavior; every pass then starts from the same RNG state, so dropout draws the same
    masks each time and :math:`H` is the Hessian of one fixed sub-network.

    Args:
        model: the network; its parameters' dtype (float64 for accurate spectra) and
            device are used for every vector.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar tensor``, mean-reduced.
        data: an ``(inputs, targets)`` batch or an iterable of batches.
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
        self._loss_fn = loss_fn
        self._mode = mode
        self._batches = as_batches(data, owner)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        _check_parameters(named, owner)
        self._names = [name for name, _ in named]
        self._parameters = [p for _, p in named]
        self._sizes = [p.numel() for p in self._parameters]
        self.num_parameters = sum(self._sizes)
        self.dtype = self._parameters[0].dtype
        self.device = self._parameters[0].device
        self.num_products = 0
        self._cpu_rng = torch.get_rng_state()
        self._cuda_rng = torch.cuda.get_rng_state(self.device) if self._on_cuda else None
        check("keep_graphs", owner, keep_graphs, NON_NEGATIVE_INT)
        # Up to this many batches, each batch's gradient graph is built once and kept, so a
        # product costs one double backward per batch (about 1.5x a gradient) instead of
        # a forward, a create_graph backward and a double backward (4.3-5.5x, measured in
        # benchmarks/hessian.py); the price is the batches' activations held in memory.
        self._keep_graphs = keep_graphs
        self._graphs: list[tuple[list[Tensor], Tensor]] | None = None

    @property
    def parameter_sizes(self) -> tuple[int, ...]:
        """The number of entries of each parameter tensor, in the flat vector's order."""
        return tuple(self._sizes)

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
            self._graphs = [self._gradient_graph(batch) for batch in self._batches]
        total = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
        weights = 0
        for index, batch in enumerate(self._batches):
            leaves, gradient = self._graphs[index] if self._graphs else self._gradient_graph(batch)
            weight = batch_size(batch)
            total += weight * _differentiate(leaves, gradient, vector, retain_graph=keep)
            weights += weight
        return total / weights

    def gradient(self) -> Tensor:
        """The flat gradient of the loss (batch-size-weighted mean over the batches)."""
        total = torch.zeros(self.num_parameters, dtype=self.dtype, device=self.device)
        weights = 0
        for batch in self._batches:
            leaves, loss = self._loss(batch)
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
        """The k extreme eigenvalues and eigenvectors (columns): see :func:`eigenvalues`."""
        return _spectrum().eigenvalues_of(
            self, k, which, tol=tol, max_iterations=max_iterations, seed=seed,
            owner="eigenvalues",
        )  # fmt: skip

    def trace(
        self, *, num_probes: int = 100, seed: int = 0, method: TraceMethod = "gauss-newton"
    ) -> float:
        """Trace estimate from at most ``num_probes`` products (exact Gauss-Newton part plus
        the rest layer by layer or by stratified Hutchinson, stratified Hutchinson by
        parameter tensor, Hutchinson or Hutch++): see :func:`trace`."""
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
        """lambda_max / lambda_min (inf unless positive definite): see :func:`condition_number`."""
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

    def _gradient_graph(self, batch: Batch) -> tuple[list[Tensor], Tensor]:
        leaves, loss = self._loss(batch)
        grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        flat = [
            torch.zeros_like(leaf).reshape(-1) if g is None else g.reshape(-1)
            for g, leaf in zip(grads, leaves, strict=True)
        ]
        return leaves, torch.cat(flat)

    def _loss(self, batch: Batch) -> tuple[list[Tensor], Tensor]:
        inputs, targets = batch
        leaves = [p.detach().requires_grad_(True) for p in self._parameters]
        state: dict[str, Tensor] = dict(zip(self._names, leaves, strict=True))
        if self._mode == "train":
            # Batch norm updates its running statistics in place in train mode: on clones.
            state.update({name: b.clone() for name, b in self._model.named_buffers()})
        with self._forward_context():
            outputs = functional_call(self._model, state, (inputs,), strict=False)
            loss = self._loss_fn(outputs, targets)
        return leaves, scalar_loss(loss)

    @contextlib.contextmanager
    def _forward_context(self) -> Iterator[None]:
        flags = [(module, module.training) for module in self._model.modules()]
        devices = [self.device] if self._on_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._cpu_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state(self._cuda_rng, self.device)
            self._model.train(self._mode == "train")
            try:
                yield
            finally:
                for module, training in flags:
                    module.training = training

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
        return [(data[0], data[1])]
    if isinstance(data, Tensor) or not isinstance(data, Iterable):
        raise invalid_value_error("data", owner, expected, _Shown(_describe(data)))
    batches = list(data)
    if not batches or not all(_is_batch(batch) for batch in batches):
        shown = "an empty iterable" if not batches else "an iterable with a non-batch item"
        raise invalid_value_error("data", owner, expected, _Shown(shown))
    return [(batch[0], batch[1]) for batch in batches]


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
