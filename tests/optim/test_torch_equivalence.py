"""Where torch.optim has the algorithm, gradwise gives torch's numbers (float64, 1e-10)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch

from tests.optim.problems import gradient_stream
from tests.optim.registry import REGISTRY, OptimizerEntry

STEPS = 100
LR_CHANGE_AT = 50
TOLERANCE = 1e-10

CASES = [
    (entry, variant)
    for entry in REGISTRY
    if entry.torch_class is not None
    for variant in entry.torch_variants
]


def _two_groups(params: list[torch.nn.Parameter], variant: dict[str, Any]) -> list[dict[str, Any]]:
    """A matrix in the default group; a bias in a group with its own lr (and decay, if any)."""
    override: dict[str, Any] = {"lr": variant["lr"] * 0.5}
    if "weight_decay" in variant:
        override["weight_decay"] = variant["weight_decay"] * 2
    return [{"params": [params[0]]}, {"params": [params[1]], **override}]


def _train(
    make: Any, variant: dict[str, Any]
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(5, 3, generator=generator, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64)),
    ]
    optimizer = make(_two_groups(params, variant), **variant)
    for step, grads in enumerate(gradient_stream([p.shape for p in params], STEPS, torch.float64)):
        if step == LR_CHANGE_AT:
            for group in optimizer.param_groups:
                group["lr"] *= 0.3
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer.step()
    return params, optimizer


def _assert_same_as_torch(
    entry: OptimizerEntry, variant: dict[str, Any], implementation: str
) -> None:
    assert entry.torch_class is not None
    ours, ours_optimizer = _train(
        lambda groups, **kw: entry.cls(groups, implementation=implementation, **kw), variant
    )
    theirs, torch_optimizer = _train(
        lambda groups, **kw: entry.torch_class(groups, foreach=False, **kw), variant
    )
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=TOLERANCE, atol=0)
        our_state, torch_state = ours_optimizer.state[mine], torch_optimizer.state[reference]
        assert set(our_state) == set(torch_state)
        for key, expected in torch_state.items():
            torch.testing.assert_close(
                our_state[key], expected, rtol=TOLERANCE, atol=0, check_dtype=key != "step", msg=key
            )


@pytest.mark.parametrize(("entry", "variant"), CASES, ids=str)
def test_reference_path_matches_torch(entry: OptimizerEntry, variant: dict[str, Any]) -> None:
    _assert_same_as_torch(entry, variant, "reference")


@pytest.mark.parametrize(
    ("entry", "variant"), [c for c in CASES if "fused" in c[0].fast_paths], ids=str
)
def test_fused_path_matches_torch(entry: OptimizerEntry, variant: dict[str, Any]) -> None:
    _assert_same_as_torch(entry, variant, "fused")


@pytest.mark.parametrize(
    "entry",
    [e for e in REGISTRY if e.torch_class is not None and "compiled" in e.fast_paths],
    ids=str,
)
def test_compiled_path_matches_torch(entry: OptimizerEntry) -> None:
    # The richest variant (the second, where there is one): one compile per optimizer.
    _assert_same_as_torch(
        entry, entry.torch_variants[min(1, len(entry.torch_variants) - 1)], "compiled"
    )


@pytest.mark.parametrize("entry", [e for e in REGISTRY if e.torch_class is not None], ids=str)
def test_torch_continues_from_a_gradwise_state_dict_and_back(entry: OptimizerEntry) -> None:
    # "state_dict() has torch's layout": each side loads the other's checkpoint mid-run
    # and continues with the numbers of an uninterrupted run.
    assert entry.torch_class is not None
    variant = entry.torch_variants[-1]
    torch_class = entry.torch_class

    def run(first: Any, second: Any) -> list[torch.nn.Parameter]:
        generator = torch.Generator().manual_seed(0)
        params = [
            torch.nn.Parameter(torch.randn(5, 3, generator=generator, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64)),
        ]
        stream = gradient_stream([p.shape for p in params], 20, torch.float64)
        optimizer = first(_two_groups(params, variant), **variant)
        for step, grads in enumerate(stream):
            if step == 10:
                state = optimizer.state_dict()
                optimizer = second(_two_groups(params, variant), **variant)
                optimizer.load_state_dict(state)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
        return params

    def ours(groups: Any, **kw: Any) -> torch.optim.Optimizer:
        return entry.cls(groups, **kw)

    def theirs(groups: Any, **kw: Any) -> torch.optim.Optimizer:
        return torch_class(groups, foreach=False, **kw)

    uninterrupted = run(theirs, theirs)
    for first, second in ((ours, theirs), (theirs, ours)):
        for mine, reference in zip(run(first, second), uninterrupted, strict=True):
            torch.testing.assert_close(mine, reference, rtol=TOLERANCE, atol=0)


@pytest.mark.parametrize(("entry", "variant"), CASES, ids=str)
def test_a_parameter_whose_first_gradient_comes_late_joins_its_group(
    entry: OptimizerEntry, variant: dict[str, Any]
) -> None:
    # One group; the bias has no gradient for the first 5 steps (a layer unused or frozen
    # until then), so its state starts while the matrix's is under way: the default path
    # (fused where torch has a kernel) once failed on the mixed momentum buffers.
    assert entry.torch_class is not None
    torch_class = entry.torch_class

    def run(make: Any) -> list[torch.nn.Parameter]:
        generator = torch.Generator().manual_seed(0)
        params = [
            torch.nn.Parameter(torch.randn(5, 3, generator=generator, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(3, generator=generator, dtype=torch.float64)),
        ]
        optimizer = make(params, **variant)
        stream = gradient_stream([p.shape for p in params], 12, torch.float64)
        for step, grads in enumerate(stream):
            params[0].grad = grads[0]
            params[1].grad = grads[1] if step >= 5 else None
            optimizer.step()
        return params

    expected = run(lambda params, **kw: torch_class(params, foreach=False, **kw))
    for implementation in ("auto", "reference"):
        mine = run(partial(entry.cls, implementation=implementation))
        for ours, theirs in zip(mine, expected, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=TOLERANCE, atol=0, msg=implementation)


@pytest.mark.parametrize("entry", [e for e in REGISTRY if e.torch_class is not None], ids=str)
def test_complex_parameters_keep_torchs_state_layout(entry: OptimizerEntry) -> None:
    # torch keeps a complex parameter's state complex, of its shape; gradwise's transforms
    # work on the real view: each side must load the other's checkpoint and continue.
    assert entry.torch_class is not None
    variant = entry.torch_variants[-1]
    torch_class = entry.torch_class

    def run(first: Any, second: Any) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        param = torch.nn.Parameter(torch.randn(4, dtype=torch.complex128, generator=generator))
        grads = torch.randn(12, 4, dtype=torch.complex128, generator=generator)
        optimizer = first([param], **variant)
        for step, grad in enumerate(grads):
            if step == 6:
                state = optimizer.state_dict()
                optimizer = second([param], **variant)
                optimizer.load_state_dict(state)
            param.grad = grad.clone()
            optimizer.step()
        return param.detach()

    def ours(params: Any, **kw: Any) -> torch.optim.Optimizer:
        return entry.cls(params, **kw)

    def theirs(params: Any, **kw: Any) -> torch.optim.Optimizer:
        return torch_class(params, foreach=False, **kw)

    uninterrupted = run(theirs, theirs)
    for first, second in ((ours, theirs), (theirs, ours), (ours, ours)):
        torch.testing.assert_close(run(first, second), uninterrupted, rtol=TOLERANCE, atol=0)
