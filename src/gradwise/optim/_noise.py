"""Annealed Gaussian gradient noise (Neelakantan et al. 2015)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, NON_NEGATIVE_INT, check
from gradwise.optim._transform import (
    GradientTransform,
    Params,
    State,
    Updates,
    current_param_group,
)


def add_noise(eta: float = 0.01, gamma: float = 0.55, seed: int = 0) -> GradientTransform:
    r"""Add annealed Gaussian noise: :math:`u \leftarrow u + \mathcal{N}(0, \sigma_t^2)`.

    .. math:: \sigma_t^2 = \frac{\eta}{(1 + t)^{\gamma}}

    with :math:`t` the transform's step count ``noise_step``, 0 on the first update. Note
    that :math:`\eta / (1+t)^\gamma` is the VARIANCE, as in the paper ("Adding Gradient Noise
    Improves Learning for Very Deep Networks", Neelakantan et al. 2015, which uses
    :math:`\eta \in \{0.01, 0.3, 1.0\}` and :math:`\gamma = 0.55`); the standard deviation is
    its square root.

    The noise is reproducible: step ``t`` draws from a generator seeded by ``(seed, t)``,
    so a run resumed from a checkpoint draws the same noise as an uninterrupted one. In an
    :class:`~gradwise.optim.Optimizer` with several param groups, group ``i > 0`` mixes
    ``i`` into the seed: every component gets independent noise, as in the paper (the
    groups drew identical noise before).
    """
    check("eta", "add_noise", eta, NON_NEGATIVE)
    check("gamma", "add_noise", gamma, NON_NEGATIVE)
    check("seed", "add_noise", seed, NON_NEGATIVE_INT)

    def init(params: Params) -> State:
        device = params[0].device if params else None
        return {"noise_step": torch.zeros((), dtype=torch.float64, device=device)}

    def update(updates: Sequence[Tensor], state: State, params: Params) -> tuple[Updates, State]:
        step = int(state["noise_step"])
        std = math.sqrt(eta / (1.0 + step) ** gamma)
        group = current_param_group()
        group_seed = seed if group == 0 else _step_seed(seed, -group - 1)
        generators: dict[torch.device, torch.Generator] = {}
        noisy = []
        for u in updates:
            if u.device not in generators:
                generators[u.device] = torch.Generator(u.device).manual_seed(
                    _step_seed(group_seed, step)
                )
            noise = torch.randn(
                u.shape, generator=generators[u.device], dtype=u.dtype, device=u.device
            )
            noisy.append(u + std * noise)
        return noisy, {"noise_step": state["noise_step"] + 1}

    return GradientTransform(init, update, "add_noise")


def _step_seed(seed: int, step: int) -> int:
    """Mix the seed and the step into one 63-bit seed (splitmix64's finalizer)."""
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF
