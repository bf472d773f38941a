"""gradwise.distributed's compression hooks, on 2 gloo ranks, against oracles computed here.

Two spawns carry the multi-process checks (each costs seconds on this 2-core machine):
``probe_runs`` feeds known gradients through a real DDP model and records what every hook
returns, and ``training_runs`` trains, and resumes from checkpoints. The oracles below are
written from the methods' definitions, loop by loop in float64, independently of the
vectorized hooks (no bit packing, no chunk index tables).
"""

from __future__ import annotations

import copy
import gc
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from gradwise.distributed import (
    COMPRESSIONS,
    CompressionState,
    pack_bits,
    register_compression,
    unpack_bits,
)
from tests.distributed.multiprocess import run_on_ranks
from tests.doc_examples import run_docstring_examples

WORLD_SIZE = 2
# Tensors of several shapes, one of a single element (its second chunk is empty).
SHAPES = {"a": (5, 7), "b": (5,), "c": (3, 4, 2), "d": (1,)}
NUM_PARAMETERS = sum(math.prod(shape) for shape in SHAPES.values())
PROBE_STEPS = 4  # 2 warmup steps of plain allreduce, then 2 compressed ones
HOOKS = ("fp16", "powersgd", "one_bit", "sign_majority", "one_bit_two_phase")
MOMENTUM = 0.5  # the momentum option's probe: exact in binary
# A scale per tensor; the default of one_bit and one_bit_two_phase is two per row.
PER_TENSOR = {"granularity": "tensor", "two_level": False}
# The probes of the one_bit and one_bit_two_phase options: (label, name, options). The
# probes named after a hook ("one_bit", "one_bit_two_phase") run its defaults.
OPTION_PROBES = (
    ("one_bit_without_feedback", "one_bit", {"error_feedback": False}),
    ("one_bit_tensor", "one_bit", PER_TENSOR),
    ("one_bit_rows", "one_bit", {"granularity": "row", "two_level": False}),
    ("one_bit_rows_two_level", "one_bit", {"granularity": "row", "two_level": True}),
    ("one_bit_tensor_two_level", "one_bit", {"granularity": "tensor", "two_level": True}),
    ("one_bit_momentum", "one_bit", {"momentum": MOMENTUM}),
    ("two_phase_tensor", "one_bit_two_phase", PER_TENSOR),
    ("two_phase_momentum", "one_bit_two_phase", {"momentum": MOMENTUM}),
    ("two_phase_rows_two_level", "one_bit_two_phase", {"granularity": "row", "two_level": True}),
    ("two_phase_rows", "one_bit_two_phase", {"granularity": "row", "two_level": False}),
    ("two_phase_two_level", "one_bit_two_phase", {"granularity": "tensor", "two_level": True}),
)


def known_gradients(rank: int, step: int) -> dict[str, Tensor]:
    """The gradient each rank feeds in at each step, with exact zeros (sent as +1 bits)."""
    generator = torch.Generator().manual_seed(100 * step + rank)
    gradients = {}
    for index, (name, shape) in enumerate(SHAPES.items()):
        g = torch.randn(shape, generator=generator) * (1 + index)
        g.view(-1)[rank::4] = 0.0
        gradients[name] = g
    return gradients


class Probe(torch.nn.Module):
    """forward(gradients) = sum_t <w_t, G_t>, so backward leaves exactly G_t in w_t.grad."""

    def __init__(self) -> None:
        super().__init__()
        for name, shape in SHAPES.items():
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))

    def forward(self, gradients: dict[str, Tensor]) -> Tensor:
        return torch.stack([(getattr(self, n) * g).sum() for n, g in gradients.items()]).sum()


def _snapshot(memory: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in memory.items()}


def _probe(rank: int, name: str, **options: Any) -> dict[str, Any]:
    """The averaged gradients, memories and bytes after each step of ``name`` on a Probe."""
    module = Probe()
    # Small buckets: one at the first step, then DDP regroups the parameters into two,
    # [d, c, b] and [a]; the results must not depend on that.
    model = DistributedDataParallel(module, bucket_cap_mb=1e-4)
    state = register_compression(model, name, **options)
    record: dict[str, Any] = {
        "grads": [],
        "worker_error": [],
        "server_error": [],
        "worker_momentum": [],
        "bytes": [],
    }
    for step in range(PROBE_STEPS):
        model(known_gradients(rank, step)).backward()
        record["grads"].append({n: p.grad.clone() for n, p in module.named_parameters()})
        module.zero_grad(set_to_none=True)
        if state is not None:
            record["worker_error"].append(_snapshot(state.worker_error))
            record["server_error"].append(_snapshot(state.server_error))
            record["worker_momentum"].append(_snapshot(state.worker_momentum))
            record["bytes"].append(state.bytes_sent)
    record["state_is_none"] = state is None
    return record


def _bytes_per_step(rank: int, name: str, **options: Any) -> list[int]:
    """bytes_sent after each of 3 steps on a 10,100-parameter Linear (one DDP bucket)."""
    model = DistributedDataParallel(torch.nn.Linear(100, 100))
    state = register_compression(model, name, **options)
    assert state is not None
    sent = []
    for _ in range(3):
        model(torch.randn(4, 100)).square().mean().backward()
        sent.append(state.bytes_sent)
    return sent


class _DeadUnit(torch.nn.Module):
    """Linear(4, 3), ReLU, Linear(3, 2), plus a gate times 0, on inputs in [-1, 1]^4.
    Hidden unit 0 never fires (bias -100 against |w x| <= 2), so its weight row, its bias
    and its outgoing weights get exactly zero gradient on every rank, inside tensors that
    do train: units 1 and 2 always fire (bias 5), so no rank's gradient of a layer is all
    zero. The gate's whole gradient is zero."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(4, 3)
        self.out = torch.nn.Linear(3, 2)
        self.gate = torch.nn.Parameter(torch.ones(2))
        with torch.no_grad():
            self.hidden.bias.copy_(torch.tensor([-100.0, 5.0, 5.0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x))) + 0.0 * self.gate


def _dead_unit(rank: int) -> dict[str, Any]:
    """sign_majority training _DeadUnit (SGD with momentum, 2 warmup and 4 compressed
    steps): its parameters before and after, and whether each rank's own gradients of the
    dead unit and the gate were all exactly zero."""
    module = _DeadUnit()
    initial = _snapshot(dict(module.named_parameters()))
    model = DistributedDataParallel(module)
    register_compression(model, "sign_majority")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(rank)
    local_zero = live = True
    for _ in range(6):
        x = torch.rand(8, 4, generator=generator) * 2 - 1
        reference = copy.deepcopy(module)  # this rank's own gradient, without DDP
        reference(x).square().mean().backward()
        dead = (
            reference.hidden.weight.grad[0],
            reference.hidden.bias.grad[0],
            reference.out.weight.grad[:, 0],
            reference.gate.grad,
        )
        local_zero = local_zero and all(bool((g == 0).all()) for g in dead)
        layers = (reference.hidden.weight, reference.hidden.bias, reference.out.weight)
        live = live and all(bool((p.grad != 0).any()) for p in layers)
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    final = _snapshot(dict(module.named_parameters()))
    return {"initial": initial, "final": final, "local_zero": local_zero, "live": live}


def _probe_all(rank: int) -> dict[str, Any]:
    return {
        "dead_unit": _dead_unit(rank),
        "probe": {name: _probe(rank, name) for name in ("none", *HOOKS)}
        | {label: _probe(rank, name, **options) for label, name, options in OPTION_PROBES},
        "bytes": {name: _bytes_per_step(rank, name) for name in HOOKS}
        | {
            "one_bit_tensor": _bytes_per_step(rank, "one_bit", **PER_TENSOR),
            "two_phase_tensor": _bytes_per_step(rank, "one_bit_two_phase", **PER_TENSOR),
        },
    }


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_ranks(_probe_all, (), tmp_path_factory.mktemp("probe"))


# Oracles: each method written out from its definition.


def _scaled_sign(p: Tensor) -> Tensor:
    """mean|p| * sign(p) with sign(0) = +1; the scale travels as a float32."""
    if p.numel() == 0:
        return p.clone()
    scale = p.abs().mean().to(torch.float32).to(torch.float64)
    return torch.where(p >= 0, scale, -scale)


def _two_level_sign(p: Tensor) -> Tensor:
    """Seide et al.'s reconstruction: the mean of the entries >= 0 where p >= 0, minus the
    mean of |p| over the negative entries elsewhere (each a float32 on the wire)."""
    levels = []
    for part in (p[p >= 0], -p[p < 0]):
        level = part.mean() if part.numel() else torch.zeros((), dtype=p.dtype)
        levels.append(level.to(torch.float32).to(torch.float64))
    return torch.where(p >= 0, levels[0], -levels[1])


Quantizer = Callable[[Tensor, tuple[int, ...]], Tensor]


def _per_tensor(sign: Callable[[Tensor], Tensor]) -> Quantizer:
    return lambda p, shape: sign(p)


def _per_row(sign: Callable[[Tensor], Tensor]) -> Quantizer:
    """Rows along the first dimension of a tensor of 2 or more dimensions, else one."""

    def quantize(p: Tensor, shape: tuple[int, ...]) -> Tensor:
        rows = shape[0] if len(shape) >= 2 else 1
        return torch.cat([sign(row) for row in p.reshape(rows, -1)])

    return quantize


def _one_bit_oracle(
    gradients: list[dict[str, Tensor]],
    errors: list[dict[str, Tensor]],
    quantize: Quantizer | None = None,
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """(the average of every rank's q, each rank's new error p - q); a scale per tensor
    unless ``quantize`` says otherwise."""
    quantize = quantize or _per_tensor(_scaled_sign)
    average, new_errors = {}, [{} for _ in gradients]
    for name in SHAPES:
        qs = []
        for rank, g in enumerate(gradients):
            p = g[name].double().reshape(-1) + errors[rank].get(name, torch.zeros(1)).double()
            q = quantize(p, SHAPES[name])
            qs.append(q)
            new_errors[rank][name] = p - q
        average[name] = torch.stack(qs).mean(0).reshape(SHAPES[name])
    return average, new_errors


def _sign_majority_oracle(
    gradients: list[dict[str, Tensor]],
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Per tensor: mean over ranks of mean|g_r| times the majority sign, where a rank whose
    tensor is all zero does not vote, and an exact zero of a voting rank votes +1 or -1
    (a coin): the results with every such vote at -1, and at +1 (equal where no zero)."""
    low, high = {}, {}
    for name in SHAPES:
        g = torch.stack([each[name].double() for each in gradients])  # (ranks, *shape)
        scales = [x.abs().mean().to(torch.float32).double() for x in g]
        magnitude = torch.stack(scales).mean()
        voting = torch.stack(
            [torch.full_like(x, float(s > 0)) for x, s in zip(g, scales, strict=True)]
        )
        votes = (torch.sign(g) * voting).sum(0)
        coins = ((g == 0) * voting).sum(0)
        low[name] = magnitude * torch.sign(votes - coins)
        high[name] = magnitude * torch.sign(votes + coins)
    return low, high


def _two_phase_oracle(
    gradients: list[dict[str, Tensor]],
    worker_errors: list[dict[str, Tensor]],
    server_errors: list[dict[str, Tensor]],
    sign: Callable[[Tensor], Tensor] = _scaled_sign,
    by_row: bool = False,
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Tensor by tensor (or row by row with ``by_row``): worker r compresses chunk j of
    (g + e) for server j, which averages, adds its error, compresses again; everyone
    receives every server's chunk. A server memory is its chunks of the tensor's rows, one
    after the other, each padded to ceil(row / W)."""
    world = len(gradients)
    result: dict[str, Tensor] = {}
    new_worker: list[dict[str, Tensor]] = [{} for _ in range(world)]
    new_server: list[dict[str, Tensor]] = [{} for _ in range(world)]
    for name, shape in SHAPES.items():
        rows = shape[0] if by_row and len(shape) >= 2 else 1
        ps = [
            g[name].double().reshape(-1) + worker_errors[r].get(name, torch.zeros(1)).double()
            for r, g in enumerate(gradients)
        ]
        size = math.ceil(math.prod(shape) / rows / world)
        servers = [
            server_errors[j].get(name, torch.zeros(rows * size)).double().reshape(rows, size)
            for j in range(world)
        ]
        units = [
            _two_phase_unit([p.reshape(rows, -1)[i] for p in ps], [e[i] for e in servers], sign)
            for i in range(rows)
        ]
        result[name] = torch.cat([unit[0] for unit in units]).reshape(shape)
        for r in range(world):
            new_worker[r][name] = torch.cat([unit[1][r] for unit in units])
            new_server[r][name] = torch.cat([unit[2][r] for unit in units])
    return result, new_worker, new_server


def _two_phase_unit(
    ps: list[Tensor], server_errors: list[Tensor], sign: Callable[[Tensor], Tensor]
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """One scale segment (a tensor or a row) of the two-phase exchange: (result, each
    worker's new error, each server's new padded error). Worker r sends its chunk j to
    server j compressed, and keeps its own chunk (j = r) exact."""
    world, numel = len(ps), ps[0].numel()
    size = math.ceil(numel / world)
    bounds = [(min(j * size, numel), min((j + 1) * size, numel)) for j in range(world)]
    qs = [
        torch.cat([p[lo:hi] if j == r else sign(p[lo:hi]) for j, (lo, hi) in enumerate(bounds)])
        for r, p in enumerate(ps)
    ]
    pieces, new_server = [], []
    for j, (lo, hi) in enumerate(bounds):
        server_p = torch.stack([q[lo:hi] for q in qs]).mean(0) + server_errors[j][: hi - lo]
        server_q = sign(server_p)
        padding = torch.zeros(size - (hi - lo), dtype=torch.float64)
        new_server.append(torch.cat([server_p - server_q, padding]))
        pieces.append(server_q)
    return torch.cat(pieces), [p - q for p, q in zip(ps, qs, strict=True)], new_server


def _inputs(step: int) -> list[dict[str, Tensor]]:
    return [known_gradients(rank, step) for rank in range(WORLD_SIZE)]


def _plain_average(step: int) -> dict[str, Tensor]:
    return {n: sum(g[n].double() for g in _inputs(step)) / WORLD_SIZE for n in SHAPES}


def _assert_close(actual: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        torch.testing.assert_close(
            actual[name].double().reshape(expected[name].shape),
            expected[name],
            rtol=1e-5,
            atol=1e-6,
        )


# Plain allreduce: "none", and every hook's warmup.


def test_none_registers_nothing_and_averages(probe_runs: list[dict[str, Any]]) -> None:
    for rank_run in probe_runs:
        record = rank_run["probe"]["none"]
        assert record["state_is_none"]
        for step in range(PROBE_STEPS):
            _assert_close(record["grads"][step], _plain_average(step))


@pytest.mark.parametrize("name", HOOKS)
def test_warmup_steps_are_plain_ddp(probe_runs: list[dict[str, Any]], name: str) -> None:
    for rank_run in probe_runs:
        plain = rank_run["probe"]["none"]["grads"]
        hooked = rank_run["probe"][name]["grads"]
        for step in (0, 1):
            for parameter in SHAPES:
                assert torch.equal(hooked[step][parameter], plain[step][parameter])
        # ... and the compressed steps are not.
        assert not torch.equal(hooked[2]["a"], plain[2]["a"])
        assert rank_run["probe"][name]["bytes"][1] == 2 * 4 * NUM_PARAMETERS


# One compressed step (step 2, error memory still zero), then one with memory (step 3).


def test_one_bit_with_a_scale_per_tensor_averages_scaled_signs_and_keeps_the_error(
    probe_runs: list[dict[str, Any]],
) -> None:
    records = [run["probe"]["one_bit_tensor"] for run in probe_runs]
    errors: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in (2, 3):
        expected, expected_errors = _one_bit_oracle(_inputs(step), errors)
        for rank, record in enumerate(records):
            _assert_close(record["grads"][step], expected)
            _assert_close(record["worker_error"][step], expected_errors[rank])
        # The next step starts from the hooks' own (checked) memories: the sign of p = g + e
        # must not hinge on float32 vs float64 rounding of e.
        errors = [record["worker_error"][step] for record in records]


def test_one_bit_without_error_feedback_sends_a_plain_scaled_sign(
    probe_runs: list[dict[str, Any]],
) -> None:
    """Without error feedback the defaults stay a scale per tensor (the scaled sign)."""
    records = [run["probe"]["one_bit_without_feedback"] for run in probe_runs]
    for step in (2, 3):  # every step quantizes its own gradient; nothing is carried over
        no_errors: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
        expected, _ = _one_bit_oracle(_inputs(step), no_errors)
        for record in records:
            _assert_close(record["grads"][step], expected)
            assert record["worker_error"][step] == {}


@pytest.mark.parametrize(
    ("label", "quantize"),
    [
        ("one_bit", _per_row(_two_level_sign)),  # the defaults
        ("one_bit_rows", _per_row(_scaled_sign)),
        ("one_bit_rows_two_level", _per_row(_two_level_sign)),
        ("one_bit_tensor_two_level", _per_tensor(_two_level_sign)),
    ],
)
def test_one_bit_with_finer_scales_matches_its_oracle(
    probe_runs: list[dict[str, Any]], label: str, quantize: Quantizer
) -> None:
    records = [run["probe"][label] for run in probe_runs]
    errors: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in (2, 3):
        expected, expected_errors = _one_bit_oracle(_inputs(step), errors, quantize)
        for rank, record in enumerate(records):
            _assert_close(record["grads"][step], expected)
            _assert_close(record["worker_error"][step], expected_errors[rank])
        errors = [record["worker_error"][step] for record in records]
    # Finer scales cost 4 bytes per extra scale: per row, a has 5 rows and c 3 (b and d
    # one each, 10 segments against 4); two-level doubles the scales.
    scales = {
        "one_bit": 20,
        "one_bit_rows": 10,
        "one_bit_rows_two_level": 20,
        "one_bit_tensor_two_level": 8,
    }
    # Step 2 runs on DDP's rebuilt buckets, [d, c, b] (30 elements) and [a] (35).
    bits = math.ceil(30 / 8) + math.ceil(35 / 8)
    for record in records:
        assert record["bytes"][2] - record["bytes"][1] == bits + 4 * scales[label]


def _momenta(records: list[dict[str, Any]], step: int) -> list[dict[str, Tensor]]:
    """Each rank's m = MOMENTUM * m_prev + g, m_prev the hook's own memory of the last step."""
    momenta = []
    for rank, g in enumerate(_inputs(step)):
        previous = records[rank]["worker_momentum"][step - 1] if step else {}
        m = {}
        for n, shape in SHAPES.items():
            kept = previous[n].double().reshape(shape) if n in previous else torch.zeros(shape)
            m[n] = MOMENTUM * kept + g[n].double()
        momenta.append(m)
    return momenta


def test_the_momentum_option_compresses_each_ranks_momentum(
    probe_runs: list[dict[str, Any]],
) -> None:
    """Warmup averages the momenta exactly; later steps compress m + e (one_bit's code,
    with its default two scales per row)."""
    records = [run["probe"]["one_bit_momentum"] for run in probe_runs]
    errors: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in range(PROBE_STEPS):
        momenta = _momenta(records, step)
        for rank, record in enumerate(records):
            _assert_close(record["worker_momentum"][step], momenta[rank])
        if step < 2:
            expected = {n: sum(m[n] for m in momenta) / WORLD_SIZE for n in SHAPES}
        else:
            expected, expected_errors = _one_bit_oracle(momenta, errors, _per_row(_two_level_sign))
            for rank, record in enumerate(records):
                _assert_close(record["worker_error"][step], expected_errors[rank])
            errors = [record["worker_error"][step] for record in records]
        for record in records:
            _assert_close(record["grads"][step], expected)
    # The warmup's second step is plain DDP with momentum, not the plain gradient average.
    assert not torch.allclose(records[0]["grads"][1]["a"].double(), _plain_average(1)["a"])


def test_the_momentum_option_of_two_phase_compresses_the_momentum(
    probe_runs: list[dict[str, Any]],
) -> None:
    records = [run["probe"]["two_phase_momentum"] for run in probe_runs]
    worker: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    server: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in (2, 3):
        momenta = _momenta(records, step)
        expected, expected_worker, expected_server = _two_phase_oracle(
            momenta, worker, server, _two_level_sign, by_row=True
        )
        for rank, record in enumerate(records):
            _assert_close(record["grads"][step], expected)
            _assert_close(record["worker_error"][step], expected_worker[rank])
            _assert_close(record["server_error"][step], expected_server[rank])
        worker = [record["worker_error"][step] for record in records]
        server = [record["server_error"][step] for record in records]


@pytest.mark.parametrize(
    ("label", "sign", "by_row"),
    [
        ("one_bit_two_phase", _two_level_sign, True),  # the defaults
        ("two_phase_rows_two_level", _two_level_sign, True),
        ("two_phase_rows", _scaled_sign, True),
        ("two_phase_two_level", _two_level_sign, False),
    ],
)
def test_two_phase_with_finer_scales_matches_its_oracle(
    probe_runs: list[dict[str, Any]], label: str, sign: Callable[[Tensor], Tensor], by_row: bool
) -> None:
    records = [run["probe"][label] for run in probe_runs]
    worker: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    server: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in (2, 3):
        expected, expected_worker, expected_server = _two_phase_oracle(
            _inputs(step), worker, server, sign, by_row
        )
        for rank, record in enumerate(records):
            _assert_close(record["grads"][step], expected)
            _assert_close(record["worker_error"][step], expected_worker[rank])
            _assert_close(record["server_error"][step], expected_server[rank])
        worker = [record["worker_error"][step] for record in records]
        server = [record["server_error"][step] for record in records]


def test_sign_majority_is_the_majority_sign_times_the_mean_magnitude(
    probe_runs: list[dict[str, Any]],
) -> None:
    """Zeros push nothing: parameter d is all zero on rank 0, which abstains, so d follows
    rank 1's negative sign (counted as a +1 vote, the zero made it a tie, 0). Elsewhere
    each rank has exact zeros at other places; each is a coin, which comes up either way."""
    sides = {"low": 0, "high": 0}
    for step in (2, 3):  # no error feedback: both steps see only their own gradients
        low, high = _sign_majority_oracle(_inputs(step))
        for run in probe_runs:
            record = run["probe"]["sign_majority"]
            assert record["worker_error"][step] == {}
            for name in SHAPES:
                result = record["grads"][step][name].double()
                at_low = torch.isclose(result, low[name], rtol=1e-5, atol=1e-6)
                at_high = torch.isclose(result, high[name], rtol=1e-5, atol=1e-6)
                assert bool((at_low | at_high).all()), name
                coin = low[name] != high[name]
                sides["low"] += int((at_low & coin).sum())
                sides["high"] += int((at_high & coin).sum())
        assert low["d"].item() < 0
        assert torch.equal(low["d"], high["d"])
    assert sides["low"] > 0
    assert sides["high"] > 0
    # With 2 ranks, disagreeing signs tie: those elements get 0.
    assert (low["a"] == high["a"]).logical_and(low["a"] == 0).any()


def test_sign_majority_leaves_parameters_without_gradient_where_they_were(
    probe_runs: list[dict[str, Any]],
) -> None:
    """A dead ReLU unit's weights and bias, and a parameter times 0, have zero gradient on
    every rank: they must not move. Counted as +1 votes, the unit's weights, inside
    tensors with a nonzero mean |g|, moved by lr times it at every step. Now the two
    ranks' coins for them cancel (both ranks vote on those tensors: see _DeadUnit), and
    the gate's tensor has no voter."""
    for run in probe_runs:
        record = run["dead_unit"]
        assert record["local_zero"]  # the premise: zero on each rank, not just on average
        assert record["live"]
        before, after = record["initial"], record["final"]
        assert torch.equal(after["hidden.weight"][0], before["hidden.weight"][0])
        assert torch.equal(after["hidden.bias"][0], before["hidden.bias"][0])
        assert torch.equal(after["out.weight"][:, 0], before["out.weight"][:, 0])
        assert torch.equal(after["gate"], before["gate"])
        # The live units did train.
        assert not torch.equal(after["hidden.weight"][1:], before["hidden.weight"][1:])
        assert not torch.equal(after["out.weight"][:, 1:], before["out.weight"][:, 1:])


@pytest.mark.usefixtures("world_of_one")
def test_sign_majority_votes_a_fair_coin_for_an_exact_zero() -> None:
    """One rank, a gradient of 1 on half the weights and exactly 0 on the other half: the
    result is mean|g| = 0.5 times the vote. A zero counted as +1 moved all of them up; a
    coin moves about half up and half down, anew at each step."""
    module = torch.nn.Linear(4000, 1, bias=False)
    model = DistributedDataParallel(module)
    register_compression(model, "sign_majority")
    x = torch.zeros(1, 4000)
    x[0, ::2] = 1.0
    grads = []
    for _ in range(4):
        module.zero_grad()
        model(x).sum().backward()
        grads.append(module.weight.grad[0].clone())
    for grad in grads[2:]:  # after the warmup
        assert torch.equal(grad[::2], torch.full((2000,), 0.5))
        zeros = grad[1::2]
        assert bool((zeros.abs() == 0.5).all())
        assert 0.45 < (zeros > 0).double().mean().item() < 0.55
    assert not torch.equal(grads[2], grads[3])


def test_two_phase_with_a_scale_per_tensor_matches_the_chunked_oracle_on_both_sides(
    probe_runs: list[dict[str, Any]],
) -> None:
    records = [run["probe"]["two_phase_tensor"] for run in probe_runs]
    worker: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    server: list[dict[str, Tensor]] = [{} for _ in range(WORLD_SIZE)]
    for step in (2, 3):
        expected, expected_worker, expected_server = _two_phase_oracle(
            _inputs(step), worker, server
        )
        for rank, record in enumerate(records):
            _assert_close(record["grads"][step], expected)
            _assert_close(record["worker_error"][step], expected_worker[rank])
            _assert_close(record["server_error"][step], expected_server[rank])
        worker = [record["worker_error"][step] for record in records]
        server = [record["server_error"][step] for record in records]


def test_fp16_is_an_allreduce_of_halves(probe_runs: list[dict[str, Any]]) -> None:
    for step in (2, 3):
        halves = {n: sum(g[n].half().double() / WORLD_SIZE for g in _inputs(step)) for n in SHAPES}
        for run in probe_runs:
            grads = run["probe"]["fp16"]["grads"][step]
            for name in SHAPES:
                torch.testing.assert_close(grads[name].double(), halves[name], rtol=2e-3, atol=2e-3)
            assert not torch.equal(grads["a"].double(), _plain_average(step)["a"])


def test_powersgd_projects_the_average_on_a_rank_one_subspace(
    probe_runs: list[dict[str, Any]],
) -> None:
    """PowerSGD (rank 1, first compressed step): M_hat = u u^T M with M the average
    gradient matrix and u a unit vector (orthogonalized M Q for a random Q); vectors (too
    small to compress) are averaged exactly."""
    average = _plain_average(2)
    for run in probe_runs:
        grads = run["probe"]["powersgd"]["grads"][2]
        for name in ("a", "c"):
            matrix = average[name].reshape(SHAPES[name][0], -1)
            approximation = grads[name].double().reshape(matrix.shape)
            column = approximation[:, approximation.norm(dim=0).argmax()]
            u = column / column.norm()
            torch.testing.assert_close(
                approximation, torch.outer(u, u @ matrix), rtol=1e-4, atol=1e-5
            )
            assert torch.linalg.matrix_rank(matrix) > 1  # so the projection is a real loss
        for name in ("b", "d"):
            torch.testing.assert_close(grads[name].double(), average[name], rtol=1e-6, atol=1e-7)


def _powersgd_where_a_gpu_is_present(rank: int) -> dict[str, Any]:
    """The powersgd probe on CPU tensors with ``torch.cuda.is_available()`` true, as on a
    machine with a GPU that trains on the CPU (gloo)."""
    torch.cuda.is_available = lambda: True  # this rank's process only
    return _probe(rank, "powersgd")


def test_powersgd_on_cpu_tensors_runs_on_a_machine_with_a_gpu(
    probe_runs: list[dict[str, Any]], tmp_path
) -> None:
    # torch's hook synchronized the bucket's device whenever a GPU existed, and raised for
    # a CPU bucket ("Expected a cuda device, but got: cpu"), failing every powersgd step.
    ranks = run_on_ranks(_powersgd_where_a_gpu_is_present, (), tmp_path)
    for run, expected in zip(ranks, probe_runs, strict=True):
        for step, grads in enumerate(expected["probe"]["powersgd"]["grads"]):
            for name, value in grads.items():
                torch.testing.assert_close(run["grads"][step][name], value, rtol=0, atol=0)


# Bytes: the counting convention on a 10,100-parameter model in one bucket.


def test_bytes_sent_follow_the_documented_counts(probe_runs: list[dict[str, Any]]) -> None:
    numel, tensors, fp32_allreduce = 10_100, 2, 4 * 10_100
    # The defaults' segments: the weight's 100 rows and the bias, two scales each.
    rows, two_level_scales = 100 + 1, 2 * (100 + 1)
    chunk_bits = math.ceil(10_000 / 2) + math.ceil(100 / 2)  # L = sum ceil(d / W)
    assert chunk_bits == rows * math.ceil(100 / 2)  # cut row by row: the same L here
    two_phase_row = 4 * two_level_scales + math.ceil(chunk_bits / 8)
    two_phase_tensor_row = 4 * tensors + math.ceil(chunk_bits / 8)
    per_step = {
        "fp16": 2 * numel,
        "powersgd": 4 * ((100 + 100) * 1 + 100),  # P and Q of the weight, the bias as is
        "one_bit": math.ceil(numel / 8) + 4 * two_level_scales,
        "one_bit_tensor": math.ceil(numel / 8) + 4 * tensors,
        "sign_majority": math.ceil(numel / 8) + 4 * tensors,
        "one_bit_two_phase": WORLD_SIZE * two_phase_row + two_phase_row,
        "two_phase_tensor": WORLD_SIZE * two_phase_tensor_row + two_phase_tensor_row,
    }
    for run in probe_runs:
        assert set(run["bytes"]) == set(per_step)
        for name, expected in per_step.items():
            assert run["bytes"][name] == [
                fp32_allreduce,
                2 * fp32_allreduce,
                2 * fp32_allreduce + expected,
            ], name
    ratios = {
        name: fp32_allreduce / (sent[2] - sent[1]) for name, sent in probe_runs[0]["bytes"].items()
    }
    # Rows of 100 elements: 8 bytes of scales next to 12.5 bytes of bits each.
    assert ratios["one_bit_tensor"] >= 31.5
    assert 19 <= ratios["one_bit"] <= 20


# Training, and resuming from checkpoints (a second spawn).

TRAIN_STEPS = 60
RESUME_AT, RESUME_STEPS = 6, 4
# The trained runs: (label, compression, options); the defaults, and a scale per tensor.
TRAINED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("none", "none", {}),
    ("one_bit", "one_bit", {}),
    ("one_bit_two_phase", "one_bit_two_phase", {}),
    ("one_bit_tensor", "one_bit", PER_TENSOR),
    ("two_phase_tensor", "one_bit_two_phase", PER_TENSOR),
    ("sign_majority", "sign_majority", {}),
)
ERROR_FEEDBACK_RUNS = ("one_bit", "one_bit_two_phase", "one_bit_tensor", "two_phase_tensor")
# The resumed runs: (label, compression, options). The hook's momentum replaces SGD's.
RESUMED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("one_bit", "one_bit", {}),
    ("one_bit_two_phase", "one_bit_two_phase", {}),
    ("two_phase_tensor", "one_bit_two_phase", PER_TENSOR),
    ("one_bit_options", "one_bit", {"granularity": "row", "two_level": True, "momentum": 0.9}),
    (
        "two_phase_options",
        "one_bit_two_phase",
        {"granularity": "row", "two_level": True, "momentum": 0.9},
    ),
)


def _digits() -> tuple[Tensor, Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    return (x - x.mean(0)) / (x.std(0) + 1e-3), torch.tensor(digits.target)


def _batch(rank: int, step: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's half of a global batch of 64, reshuffled with a shared seed every step."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(step))[:64]
    mine = order[rank * 32 : (rank + 1) * 32]
    return x[mine], y[mine]


def _sgd_steps(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int, steps: range, data: Any
) -> None:
    for step in steps:
        inputs, targets = _batch(rank, step, *data)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


def _softmax_regression(name: str, **options: Any) -> tuple[Any, DistributedDataParallel, Any, Any]:
    torch.manual_seed(1)
    module = torch.nn.Linear(64, 10)
    model = DistributedDataParallel(module)
    state = register_compression(model, name, **options)
    momentum = 0.0 if "momentum" in options else 0.9
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=momentum)
    return module, model, state, optimizer


def _save(state_dict: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def _load(saved: bytes) -> dict[str, Any]:
    """A checkpoint's way back: torch.load with weights_only=True, fresh tensors each time
    (torch's Optimizer.load_state_dict keeps the loaded tensors as its state)."""
    return torch.load(io.BytesIO(saved), weights_only=True)


def _train(rank: int, data: tuple[Tensor, Tensor]) -> dict[str, Any]:
    results = {}
    for label, name, options in TRAINED:
        module, model, _, optimizer = _softmax_regression(name, **options)
        _sgd_steps(model, optimizer, rank, range(TRAIN_STEPS), data)
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(module(data[0]), data[1]).item()
        results[label] = {"loss": loss, "parameters": _snapshot(dict(module.named_parameters()))}
    return results


def _resume(
    rank: int, name: str, options: dict[str, Any], data: tuple[Tensor, Tensor]
) -> dict[str, Any]:
    """Run A goes straight through; B and C restart from A's checkpoint at RESUME_AT in a
    new DDP model (whose first step uses DDP's initial buckets); C drops the memories."""
    module, model, state, optimizer = _softmax_regression(name, **options)
    _sgd_steps(model, optimizer, rank, range(RESUME_AT), data)
    saved = _save(
        {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "compression": state.state_dict(),
        }
    )
    end = range(RESUME_AT, RESUME_AT + RESUME_STEPS)
    _sgd_steps(model, optimizer, rank, end, data)
    results = {"straight": _snapshot(dict(module.named_parameters())), "bytes": state.bytes_sent}
    for run, memory in (("resumed", True), ("memory_lost", False)):
        checkpoint = _load(saved)
        module, model, state, optimizer = _softmax_regression(name, **options)
        module.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        compression = checkpoint["compression"]
        if not memory:
            compression["worker_error"], compression["server_error"] = {}, {}
            compression["worker_momentum"] = {}
        state.load_state_dict(compression)
        _sgd_steps(model, optimizer, rank, end, data)
        results[run] = _snapshot(dict(module.named_parameters()))
        results[f"{run}_bytes"] = state.bytes_sent
    return results


def _resume_powersgd(rank: int, data: tuple[Tensor, Tensor]) -> dict[str, Any]:
    module, model, state, optimizer = _softmax_regression("powersgd")
    _sgd_steps(model, optimizer, rank, range(RESUME_AT), data)
    saved = _load(_save(state.state_dict()))
    module, model, restored, optimizer = _softmax_regression("powersgd")
    restored.load_state_dict(saved)
    torch_state = restored.powersgd_state
    keys = torch_state.rng.get_state()[1]
    loaded = {"iter": torch_state.iter, "rng": torch.from_numpy(keys.astype(np.int64))}
    _sgd_steps(model, optimizer, rank, range(RESUME_AT, RESUME_AT + 3), data)
    finite = all(bool(p.isfinite().all()) for p in module.parameters())
    return {"saved": saved, "loaded": loaded, "finite": finite, "iter_after": torch_state.iter}


def _train_and_resume(rank: int, data: tuple[Tensor, Tensor]) -> dict[str, Any]:
    return {
        "train": _train(rank, data),
        "resume": {label: _resume(rank, name, options, data) for label, name, options in RESUMED},
        "powersgd": _resume_powersgd(rank, data),
    }


@pytest.fixture(scope="module")
def training_runs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return run_on_ranks(_train_and_resume, (_digits(),), tmp_path_factory.mktemp("train"))


def test_error_feedback_hooks_train_like_uncompressed_ddp(
    training_runs: list[dict[str, Any]],
) -> None:
    """60 steps of SGD with momentum 0.9 on digits (softmax regression, 2 x 32 per batch)."""
    losses = {label: training_runs[0]["train"][label]["loss"] for label, _, _ in TRAINED}
    assert losses["none"] < 0.3  # it did learn: log(10) = 2.3 at the start
    for label in ERROR_FEEDBACK_RUNS:
        assert losses[label] <= 1.03 * losses["none"], losses
    # Without error feedback the same bits train worse: the reason error feedback exists.
    assert losses["sign_majority"] > 1.2 * losses["one_bit_tensor"], losses


def test_all_ranks_end_with_identical_parameters(training_runs: list[dict[str, Any]]) -> None:
    for label, _, _ in TRAINED:
        first, second = (run["train"][label]["parameters"] for run in training_runs)
        for parameter in first:
            assert torch.equal(first[parameter], second[parameter]), label


@pytest.mark.parametrize("label", [label for label, _, _ in RESUMED])
def test_a_resumed_run_continues_identically(
    training_runs: list[dict[str, Any]], label: str
) -> None:
    for run in training_runs:
        result = run["resume"][label]
        for parameter, value in result["straight"].items():
            assert torch.equal(result["resumed"][parameter], value)
        assert result["resumed_bytes"] == result["bytes"]
        # Control: without the error memory the same resume goes elsewhere.
        assert not torch.allclose(result["memory_lost"]["weight"], result["straight"]["weight"])


def test_powersgd_state_survives_a_weights_only_checkpoint(
    training_runs: list[dict[str, Any]],
) -> None:
    for run in training_runs:
        result = run["powersgd"]
        saved = result["saved"]["powersgd"]
        assert saved["iter"] == RESUME_AT
        assert result["loaded"]["iter"] == RESUME_AT
        assert torch.equal(result["loaded"]["rng"], saved["rng"]["keys"])
        assert saved["buckets"]
        assert all("error" in bucket for bucket in saved["buckets"])
        # The restored state goes on compressing and counting from where it was.
        assert result["finite"]
        assert result["iter_after"] == RESUME_AT + 3


# In-process checks (no process group, or a world of one).


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 16, 61])
def test_pack_bits_matches_numpy_and_round_trips(length: int) -> None:
    bits = torch.rand(3, length, generator=torch.Generator().manual_seed(length)) < 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, math.ceil(length / 8))
    np.testing.assert_array_equal(packed.numpy(), np.packbits(bits.numpy(), axis=-1))
    assert torch.equal(unpack_bits(packed, length), bits)


def test_bit_packing_rejects_bad_input() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "The 'bits' parameter of pack_bits must be a torch.bool tensor. "
            "Got a torch.float32 tensor instead."
        ),
    ):
        pack_bits(torch.zeros(3))
    with pytest.raises(
        ValueError, match="The 'num_bits' parameter of unpack_bits must be an int <= 16"
    ):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 17)


@pytest.fixture
def world_of_one(tmp_path: Path) -> Any:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    # The test's DDP models hold the group: collected before it is destroyed, not later,
    # when gloo's threads may still hold their work (the next init then aborted the whole
    # pytest process, "Fatal Python error: Aborted", twice in many runs).
    gc.collect()
    dist.destroy_process_group()


def _ddp() -> DistributedDataParallel:
    return DistributedDataParallel(torch.nn.Linear(4, 2))


def _powersgd_after_four_passes() -> tuple[DistributedDataParallel, CompressionState]:
    """A Linear(16, 8) under PowerSGD of rank 1 after four backward passes (two of them
    compressed), in the world of one."""
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(16, 8))
    state = register_compression(model, "powersgd", matrix_approximation_rank=1)
    assert state is not None
    for _ in range(4):
        model(torch.randn(4, 16)).square().mean().backward()
    return model, state


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"name": "one_bits"},
            "The 'name' parameter of register_compression must be one of 'none', 'fp16', "
            "'powersgd', 'one_bit', 'sign_majority', 'one_bit_two_phase'. Got 'one_bits' instead.",
        ),
        (
            {"name": "one_bit", "warmup_steps": 1},
            "The 'warmup_steps' parameter of register_compression must be an int >= 2. "
            "Got 1 instead.",
        ),
        (
            {"name": "powersgd", "matrix_approximation_rank": 0},
            "The 'matrix_approximation_rank' parameter of register_compression must be an "
            "int >= 1. Got 0 instead.",
        ),
        (
            {"name": "powersgd", "rank": 2},
            "The 'options' parameter of register_compression must be options of 'powersgd' "
            "(matrix_approximation_rank, min_compression_rate, orthogonalization_epsilon, "
            "random_seed, use_error_feedback, warm_start, batch_tensors_with_same_shape). "
            "Got ['rank'] instead.",
        ),
        (
            {"name": "powersgd", "min_compression_rate": math.inf},  # "none" compresses nothing
            "The 'min_compression_rate' parameter of register_compression must be a finite "
            "float >= 0. Got inf instead.",
        ),
        (
            # numpy's RandomState, which torch's PowerSGD seeds with it, takes 32 bits.
            {"name": "powersgd", "random_seed": 2**32},
            "The 'random_seed' parameter of register_compression must be an int in "
            "[0, 4294967295]. Got 4294967296 instead.",
        ),
        (
            {"name": "one_bit", "matrix_approximation_rank": 2},
            "The 'options' parameter of register_compression must be options of 'one_bit' "
            "(error_feedback, granularity, two_level, momentum). "
            "Got ['matrix_approximation_rank'] instead.",
        ),
        (
            {"name": "one_bit", "granularity": "column"},
            "The 'granularity' parameter of register_compression must be one of 'tensor', "
            "'row'. Got 'column' instead.",
        ),
        (
            {"name": "one_bit_two_phase", "momentum": 1.0},
            "The 'momentum' parameter of register_compression must be a float in [0, 1). "
            "Got 1.0 instead.",
        ),
        (
            {"name": "one_bit_two_phase", "error_feedback": False},
            "The 'options' parameter of register_compression must be options of "
            "'one_bit_two_phase' (granularity, two_level, momentum). Got ['error_feedback'] "
            "instead.",
        ),
        (
            {"name": "sign_majority", "error_feedback": True},
            "The 'options' parameter of register_compression must be empty ('sign_majority' "
            "takes no options). Got ['error_feedback'] instead.",
        ),
    ],
)
def test_bad_arguments_raise_the_house_error(arguments: dict[str, Any], message: str) -> None:
    arguments = dict(arguments)
    name = arguments.pop("name")
    with pytest.raises(ValueError, match=re.escape(message)):
        register_compression(_ddp(), name, **arguments)


class _WithScalar(torch.nn.Module):
    """A linear layer times a learnable 0-d temperature (or an empty parameter)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.extra = torch.nn.Parameter(torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) * (1 + self.extra.sum())


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize("shape", [(), (0, 3)])
def test_powersgd_refuses_parameters_it_cannot_view_as_matrices(shape: tuple[int, ...]) -> None:
    """torch's powerSGD_hook views each gradient as (shape[0], -1): a 0-d or empty one
    raised an IndexError or a reshape error deep in the first compressed backward pass."""
    model = DistributedDataParallel(_WithScalar(shape))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "The 'model' parameter of register_compression must have only parameters of 1 "
            "or more dimensions and elements for 'powersgd' (torch's powerSGD_hook views each "
            f"gradient as a matrix of shape[0] rows). Got parameter 'extra' of shape {shape} "
            "instead; give it the shape (1,), or use another compression."
        ),
    ):
        register_compression(model, "powersgd")
    for name in ("one_bit", "one_bit_two_phase", "sign_majority", "fp16"):  # the others work
        model = DistributedDataParallel(_WithScalar(shape))
        assert register_compression(model, name) is not None
        for _ in range(3):
            model(torch.ones(2, 4)).sum().backward()


def test_every_name_is_accepted_and_a_plain_module_is_not() -> None:
    assert ("none", *HOOKS) == COMPRESSIONS
    with pytest.raises(
        TypeError,
        match=re.escape(
            "The 'model' parameter of register_compression must be a "
            "torch.nn.parallel.DistributedDataParallel. Got a Linear instead."
        ),
    ):
        register_compression(torch.nn.Linear(4, 2), "one_bit")  # type: ignore[arg-type]


def _assert_same_state(actual: Any, expected: Any) -> None:
    """Nested dicts and lists with tensors: equal, tensor by tensor."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            _assert_same_state(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for mine, theirs in zip(actual, expected, strict=True):
            _assert_same_state(mine, theirs)
    elif isinstance(expected, Tensor):
        assert torch.equal(actual, expected)
    else:
        assert actual == expected


def _tensors(state: Any) -> list[Tensor]:
    if isinstance(state, dict):
        return [t for value in state.values() for t in _tensors(value)]
    if isinstance(state, list):
        return [t for value in state for t in _tensors(value)]
    return [state] if isinstance(state, Tensor) else []


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize(
    ("name", "options"),
    [("powersgd", {"matrix_approximation_rank": 1}), ("one_bit", {"momentum": MOMENTUM})],
)
def test_a_saved_state_stays_as_it_was_saved(name: str, options: dict[str, Any]) -> None:
    """state_dict() handed out torch's live PowerSGD P and Q, which the next backward
    passes overwrite in place: a state kept (or written to disk later) changed after it
    was taken. Editing it in place changed the hook's own memories (also the 1-bit ones)."""
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(16, 8))
    state = register_compression(model, name, **options)
    assert state is not None
    for _ in range(4):
        model(torch.randn(4, 16)).square().mean().backward()
    saved = state.state_dict()
    at_saving = _load(_save(saved))  # what a checkpoint written at once holds
    edited = state.state_dict()
    for tensor in _tensors(edited):
        if tensor.is_floating_point():
            tensor.add_(1.0)
    _assert_same_state(state.state_dict(), at_saving)  # the hook's own state is untouched
    for _ in range(2):
        model(torch.randn(4, 16)).square().mean().backward()
    _assert_same_state(saved, at_saving)
    now = state.state_dict()

    # The hook did move on, in every memory (so the check above has teeth).
    def memories(state_dict: dict[str, Any]) -> list[Tensor]:
        if name == "powersgd":
            return _tensors(state_dict["powersgd"]["buckets"])  # error, P and Q
        return _tensors([state_dict["worker_error"], state_dict["worker_momentum"]])

    assert len(memories(now)) == (3 if name == "powersgd" else 4)
    for mine, then in zip(memories(now), memories(at_saving), strict=True):
        assert not torch.equal(mine, then)


@pytest.mark.usefixtures("world_of_one")
def test_load_state_dict_refuses_another_compression_or_other_parameters() -> None:
    one_bit = register_compression(_ddp(), "one_bit")
    sign = register_compression(_ddp(), "sign_majority")
    assert one_bit is not None
    assert sign is not None
    with pytest.raises(
        ValueError,
        match=re.escape(
            "The 'state_dict' parameter of CompressionState.load_state_dict must be the state "
            "of a 'one_bit' compression. Got the state of a 'sign_majority' compression instead."
        ),
    ):
        one_bit.load_state_dict(sign.state_dict())
    state = one_bit.state_dict()
    state["worker_error"] = {"weight": torch.zeros(3)}
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(
            "The 'state_dict' parameter of CompressionState.load_state_dict must hold a "
            "worker_error of 8 elements for parameter 'weight' (of shape (2, 4)). Got a tensor "
            "of 3 elements instead; load the state this compression saved for a model with "
            "the same parameter shapes."
        )
        + "$",
    ):
        one_bit.load_state_dict(state)
    state["worker_error"] = {"0.weight": torch.zeros(8)}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "must hold a worker_error for this model's parameters (weight, bias). "
            "Got one for '0.weight' instead; load the state this compression saved for this "
            "model (its parameters named as model.module.named_parameters() names them)."
        ),
    ):
        one_bit.load_state_dict(state)


def _state_of(name: str, steps: int = 3, **options: Any) -> dict[str, Any]:
    """The state of ``name`` on a Linear(4, 2) after ``steps`` backward passes."""
    torch.manual_seed(0)
    model = _ddp()
    state = register_compression(model, name, **options)
    assert state is not None
    for _ in range(steps):
        model(torch.randn(3, 4)).square().mean().backward()
    return state.state_dict()


def _without(mapping: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key not in keys}


def _with_powersgd(state: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**state, "powersgd": {**state["powersgd"], **changes}}


def _with_bucket(state: dict[str, Any], **changes: Any) -> dict[str, Any]:
    (bucket,) = state["powersgd"]["buckets"]
    return _with_powersgd(state, buckets=[{**bucket, **changes}])


# (compression, options of the loading state, a change of its own saved state, message)
LOAD_ERRORS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], Any], str]] = [
    (
        "one_bit",
        {},
        lambda state: _without(state, "server_error", "world_size"),
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold the keys "
        "that CompressionState.state_dict() writes (name, step, bytes_sent, world_size, "
        "worker_error, server_error). Got a dict without 'world_size', 'server_error' "
        "instead; load a state saved by CompressionState.state_dict().",
    ),
    (
        "one_bit",
        {},
        lambda state: [state],
        "The 'state_dict' parameter of CompressionState.load_state_dict must be a dict as "
        "CompressionState.state_dict() returns it. Got a list instead; load a state saved "
        "by CompressionState.state_dict().",
    ),
    (
        "one_bit",
        {},
        lambda state: {**state, "worker_momentum": torch.zeros(8)},
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold a "
        "worker_momentum dict from parameter name to tensor. Got a tensor of 8 elements "
        "instead; load a state saved by CompressionState.state_dict().",
    ),
    (
        "one_bit_two_phase",
        {},
        lambda state: {**state, "world_size": 4},
        "The 'state_dict' parameter of CompressionState.load_state_dict must come from a run "
        "with world size 1 (the two-phase server memory is one chunk per rank). Got world "
        "size 4 instead; resume on 4 ranks, or set its 'server_error' to {} to start the "
        "server memories afresh.",
    ),
    (
        "one_bit_two_phase",
        {},
        lambda state: {**state, "server_error": {"weight": torch.zeros(12)}},
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold a "
        "server_error of 8 elements for parameter 'weight' (of shape (2, 4); this rank's "
        "chunk with granularity 'row' and world size 1). Got a tensor of 12 elements "
        "instead; load the state this compression saved with the same granularity, on as "
        "many ranks, for a model with the same parameter shapes.",
    ),
    (
        "powersgd",
        {},
        lambda state: _without(state, "powersgd"),
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold the keys "
        "that CompressionState.state_dict() writes (name, step, bytes_sent, world_size, "
        "worker_error, server_error, powersgd). Got a dict without 'powersgd' instead; load "
        "a state saved by CompressionState.state_dict().",
    ),
    (
        "powersgd",
        {},
        lambda state: {**state, "powersgd": {"iter": 3}},
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold the keys "
        "that the 'powersgd' entry of CompressionState.state_dict() writes (iter, "
        "total_numel_before_compression, total_numel_after_compression, rng, buckets). Got "
        "a dict without 'total_numel_before_compression', 'total_numel_after_compression', "
        "'rng', 'buckets' instead; load a state saved by the 'powersgd' entry of "
        "CompressionState.state_dict().",
    ),
    (
        # A state of the same model saved with rank 2: P and Q twice as long.
        "powersgd",
        {"matrix_approximation_rank": 2},
        lambda state: state,
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold, for the "
        "PowerSGD bucket of ['bias', 'weight'], a 'p' memory of 4 elements (rows x rank "
        "over its compressed matrices, matrix_approximation_rank 1, min_compression_rate "
        "0.0). Got a tensor of 6 elements instead; resume with the saved run's "
        "matrix_approximation_rank and min_compression_rate, or set the 'buckets' of its "
        "'powersgd' entry to [] to start PowerSGD's memories afresh.",
    ),
    (
        "powersgd",
        {},
        lambda state: _with_bucket(state, error=torch.zeros(12)),
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold, for the "
        "PowerSGD bucket of ['bias', 'weight'], a 'error' memory of 10 elements (the "
        "bucket's gradient elements). Got a tensor of 12 elements instead; load the state "
        "this compression saved for a model with the same parameter shapes, or set the "
        "'buckets' of its 'powersgd' entry to [] to start PowerSGD's memories afresh.",
    ),
    (
        "powersgd",
        {},
        lambda state: _with_bucket(state, names=["0.weight", "0.bias"]),
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold PowerSGD "
        "memories for buckets of this model's parameters (weight, bias). Got a bucket entry "
        "with names ['0.weight', '0.bias'] instead; load the state this compression saved "
        "for this model.",
    ),
    (
        "powersgd",
        {},
        lambda state: _with_bucket(state, momentum=torch.zeros(2)),
        "The 'state_dict' parameter of CompressionState.load_state_dict must hold PowerSGD "
        "bucket entries with the keys names, error, p and q. Got key 'momentum' for the "
        "bucket of ['bias', 'weight'] instead; load a state saved by "
        "CompressionState.state_dict().",
    ),
]


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize(("name", "options", "change", "message"), LOAD_ERRORS)
def test_a_state_that_does_not_fit_is_refused_saying_how_to_fix_it(
    name: str,
    options: dict[str, Any],
    change: Callable[[dict[str, Any]], Any],
    message: str,
) -> None:
    """Missing keys raised a KeyError; PowerSGD memories of other sizes or parameters
    loaded silently, then failed deep in torch's hook at the next backward pass (or were
    never used)."""
    # min_compression_rate 0: every matrix is compressed, the (2, 4) weight to P (2 x r) and
    # Q (4 x r), the bias, a (2, 1) matrix, to P (2 x 1) and Q (1 x 1): P has 2 + 2
    # elements for rank 1, 4 + 2 for rank 2.
    powersgd_options = {"min_compression_rate": 0.0} if name == "powersgd" else {}
    state = register_compression(_ddp(), name, **powersgd_options)
    assert state is not None
    saved = _state_of(name, **powersgd_options, **options)
    before = state.state_dict()
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        state.load_state_dict(change(saved))
    _assert_same_state(state.state_dict(), before)  # nothing was loaded
    state.load_state_dict(saved if options == {} else _state_of(name, **powersgd_options))


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize("name", ["one_bit", "one_bit_two_phase"])
@pytest.mark.parametrize(
    ("options", "quantize"),
    [({}, _per_row(_two_level_sign)), (PER_TENSOR, _per_tensor(_scaled_sign))],
    ids=["defaults", "per_tensor"],
)
def test_a_world_of_one_compresses_its_own_gradient(
    name: str, options: dict[str, Any], quantize: Quantizer
) -> None:
    """W = 1: the result is q = Q(g), two scales per row by default or mean|g| sign(g) per
    tensor, and the memory keeps g - q: the worker's for one_bit; for the two-phase hook
    the server's, as the rank keeps its own chunk (the whole gradient) exact."""
    module = torch.nn.Linear(4, 2)
    reference = copy.deepcopy(module)
    inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    reference(inputs).square().mean().backward()
    model = DistributedDataParallel(module)
    state = register_compression(model, name, **options)
    assert state is not None
    for _ in range(3):  # the same gradient three times; the third is compressed
        module.zero_grad()
        model(inputs).square().mean().backward()
    for parameter, value in module.named_parameters():
        g = getattr(reference, parameter).grad.double().reshape(-1)
        q = quantize(g, tuple(value.shape))
        torch.testing.assert_close(value.grad.double().reshape(-1), q, rtol=1e-6, atol=1e-7)
        worker, server = (g - q, None) if name == "one_bit" else (torch.zeros_like(g), g - q)
        torch.testing.assert_close(
            state.worker_error[parameter].double(), worker, rtol=1e-6, atol=1e-7
        )
        if server is not None:
            torch.testing.assert_close(
                state.server_error[parameter].double(), server, rtol=1e-6, atol=1e-7
            )


def test_docstring_examples_run() -> None:
    import gradwise.distributed as package

    for name in ("CompressionState", "register_compression", "pack_bits", "unpack_bits"):
        run_docstring_examples(getattr(package, name), name)


class _Branch(torch.nn.Module):
    """forward(gradients, use_b): the Probe's sum, with parameter b left out when asked."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = Probe()

    def forward(self, gradients: dict[str, Tensor], use_b: bool) -> Tensor:
        return self.probe({n: g for n, g in gradients.items() if use_b or n != "b"})


@pytest.mark.usefixtures("world_of_one")
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("one_bit", {}),
        ("one_bit", PER_TENSOR),
        ("one_bit", {"momentum": MOMENTUM}),
        ("one_bit_two_phase", {}),
        ("one_bit_two_phase", PER_TENSOR),
        ("one_bit_two_phase", {"momentum": MOMENTUM}),
    ],
    ids=[
        "one_bit",
        "one_bit_tensor",
        "one_bit_momentum",
        "two_phase",
        "two_phase_tensor",
        "two_phase_momentum",
    ],
)
def test_error_feedback_loses_nothing_when_a_parameter_gets_no_gradient(
    name: str, options: dict[str, Any]
) -> None:
    """With find_unused_parameters, DDP drops the hook's result for a parameter that no
    rank used (its .grad stays as it was). Error feedback must then not count it as sent:
    what reached the parameters plus what the memories hold is what went in, at every
    step from the first (the warmup's allreduce sends its input whole; b is unused at
    step 1, in the warmup, and at steps 3 and 4). It did not: the memory of b shrank by a
    q that DDP threw away; and with the momentum option the warmup sent b's decayed
    momentum, which DDP threw away too."""
    module = _Branch()
    model = DistributedDataParallel(module, find_unused_parameters=True)
    state = register_compression(model, name, **options)
    assert state is not None
    applied = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
    inputs = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
    momenta = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
    for step in range(6):
        use_b = step not in (1, 3, 4)
        gradients = known_gradients(0, step)
        model(gradients, use_b).backward()
        for n, parameter in module.probe.named_parameters():
            assert not (use_b or n != "b") or parameter.grad is not None
            g = gradients[n].double() if use_b or n != "b" else torch.zeros(SHAPES[n]).double()
            momenta[n] = (MOMENTUM if options.get("momentum") else 0.0) * momenta[n] + g
            inputs[n] += momenta[n]
            applied[n] += 0.0 if parameter.grad is None else parameter.grad.double()
        module.zero_grad(set_to_none=True)
        for n, shape in SHAPES.items():
            nothing = torch.zeros(math.prod(shape))
            memory = state.worker_error.get(f"probe.{n}", nothing).double()
            # W = 1: the two-phase server's memory is the whole tensor
            memory = memory + state.server_error.get(f"probe.{n}", nothing).double()
            torch.testing.assert_close(
                applied[n] + memory.reshape(shape), inputs[n], rtol=1e-6, atol=1e-6
            )


UNUSED_PROBES = (("one_bit", {}), ("one_bit", PER_TENSOR), ("one_bit_two_phase", {}))


def _uses_b(rank: int, step: int) -> bool:
    """b: used by both ranks, then by rank 0 only (step 3), by none (4), by rank 1 (5)."""
    return {3: rank == 0, 4: False, 5: rank == 1}.get(step, True)


def _unused_run(rank: int) -> list[list[dict[str, Any]]]:
    """Per probe and step: the gradients DDP left, and this rank's memories."""
    runs = []
    for name, options in UNUSED_PROBES:
        module = _Branch()
        model = DistributedDataParallel(module, find_unused_parameters=True, bucket_cap_mb=1e-4)
        state = register_compression(model, name, **options)
        assert state is not None
        records = []
        for step in range(7):
            model(known_gradients(rank, step), _uses_b(rank, step)).backward()
            records.append(
                {
                    "grads": {
                        n: p.grad.clone()
                        for n, p in module.probe.named_parameters()
                        if p.grad is not None
                    },
                    "worker_error": _snapshot(state.worker_error),
                    "server_error": _snapshot(state.server_error),
                }
            )
            module.zero_grad(set_to_none=True)
        runs.append(records)
    return runs


def test_error_feedback_on_two_ranks_loses_nothing_when_some_or_all_skip_a_parameter(
    tmp_path: Path,
) -> None:
    """What reached the parameters plus the memories (the workers' averaged, the servers'
    summed: each holds its own chunks of the average) is the average of what went in."""
    ranks = run_on_ranks(_unused_run, (), tmp_path)
    for probe, (name, _) in enumerate(UNUSED_PROBES):
        applied = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
        inputs = {n: torch.zeros(s, dtype=torch.float64) for n, s in SHAPES.items()}
        for step in range(2, 7):
            for rank in range(WORLD_SIZE):
                for n, g in known_gradients(rank, step).items():
                    if n != "b" or _uses_b(rank, step):
                        inputs[n] += g.double() / WORLD_SIZE
            records = [ranks[rank][probe][step] for rank in range(WORLD_SIZE)]
            for n in SHAPES:
                grad = records[0]["grads"].get(n)
                assert (grad is None) == (n == "b" and step == 4)
                applied[n] += 0.0 if grad is None else grad.double()
                memory = sum(r["worker_error"][f"probe.{n}"].double() / WORLD_SIZE for r in records)
                if name == "one_bit_two_phase":
                    size = math.prod(SHAPES[n])
                    rows = SHAPES[n][0] if len(SHAPES[n]) >= 2 else 1
                    servers = [r["server_error"][f"probe.{n}"].double() for r in records]
                    chunk = servers[0].numel() // rows
                    # the servers' chunks of each row, one after the other, cut to the row
                    memory = memory + torch.cat([s.reshape(rows, chunk) for s in servers], dim=1)[
                        :, : size // rows
                    ].reshape(-1)
                torch.testing.assert_close(
                    applied[n] + memory.reshape(SHAPES[n]), inputs[n], rtol=1e-5, atol=1e-5
                )


@pytest.mark.usefixtures("world_of_one")
def test_a_loaded_powersgd_state_saves_its_memories_before_they_are_used() -> None:
    """Loaded PowerSGD memories wait for a bucket with the same parameters; a checkpoint
    written before that (a resume stopped at once, or checkpointing at its first step,
    when DDP has not yet rebuilt its buckets) dropped them: save, load, save lost them."""
    model, state = _powersgd_after_four_passes()
    saved = _load(_save(state.state_dict()))
    assert saved["powersgd"]["buckets"]

    resumed = register_compression(
        DistributedDataParallel(torch.nn.Linear(16, 8)), "powersgd", matrix_approximation_rank=1
    )
    assert resumed is not None
    resumed.load_state_dict(saved)
    again = resumed.state_dict()["powersgd"]["buckets"]
    assert [bucket["names"] for bucket in again] == [
        bucket["names"] for bucket in saved["powersgd"]["buckets"]
    ]
    for mine, expected in zip(again, saved["powersgd"]["buckets"], strict=True):
        assert set(mine) == set(expected)
        for key in set(mine) - {"names"}:
            assert torch.equal(mine[key], expected[key])


@pytest.mark.usefixtures("world_of_one")
def test_a_powersgd_state_built_without_parameter_shapes_loads_a_saved_state() -> None:
    # parameter_shapes came after the other arguments, with a default: a state built
    # without it (not through register_compression) raised KeyError when loading.
    model, state = _powersgd_after_four_passes()
    saved = state.state_dict()
    named = list(model.module.named_parameters())
    bare = CompressionState(
        "powersgd",
        warmup_steps=2,
        process_group=None,
        parameter_names={id(p): n for n, p in named},
        parameter_numels={n: p.numel() for n, p in named},
    )
    bare.powersgd_state = state.powersgd_state
    bare.load_state_dict(saved)
    _assert_same_state(bare.state_dict(), saved)
