"""Gradient clipping: element-wise, per tensor, and by the global norm."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE, POSITIVE, check
from gradwise.optim._transform import GradientTransform, stateless

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing; kept so that the
# global-norm clip returns the same numbers as torch's.
_NORM_EPS = 1e-6


def clip(max_value: float) -> GradientTransform:
    r"""Clip each element to :math:`[-c, c]` (Keras ``clipvalue``). NaN stays NaN."""
    check("max_value", "clip", max_value, NON_NEGATIVE)
    return stateless(
        "clip", lambda updates, params: [u.clamp(-max_value, max_value) for u in updates]
    )


def clip_by_norm(max_norm: float) -> GradientTransform:
    r"""Rescale each tensor whose L2 norm exceeds :math:`c` to norm :math:`c` (Keras ``clipnorm``).

    :math:`u \leftarrow u \cdot \min(1, c / \lVert u \rVert_2)`, per tensor. A tensor whose
    norm is not finite becomes NaN, so the step fails loudly instead of silently clipping a
    broken gradient to a finite one; skip such steps upstream (e.g. with AMP's scaler).
    """
    check("max_norm", "clip_by_norm", max_norm, POSITIVE)

    def clip_each(updates: Sequence[Tensor], params: Sequence[Tensor]) -> list[Tensor]:
        clipped = []
        for u in updates:
            norm = torch.linalg.vector_norm(u)
            clipped.append(u * _clip_factor(norm, max_norm))
        return clipped

    return stateless("clip_by_norm", clip_each)


def clip_by_global_norm(max_norm: float) -> GradientTransform:
    r"""Rescale all updates together when their joint L2 norm exceeds :math:`c`.

    :math:`u_i \leftarrow u_i \cdot \min(1, c / (\lVert u \rVert_2 + 10^{-6}))` with the
    norm taken over every tensor, as ``torch.nn.utils.clip_grad_norm_`` does (its clipped
    norm is therefore :math:`0.9999998\,c`, not exactly :math:`c`). A non-finite global norm
    makes every update NaN (torch's ``error_if_nonfinite=False`` leaves it in place too);
    the step fails loudly rather than being clipped to something arbitrary.

    "Every tensor" is every tensor this transform sees: in an
    :class:`~gradwise.optim.Optimizer` with several param groups, each group's own (each
    group runs its own transform). For one norm over all groups, call
    ``torch.nn.utils.clip_grad_norm_(model.parameters(), c)`` before the step instead.
    """
    check("max_norm", "clip_by_global_norm", max_norm, POSITIVE)

    def clip_all(updates: Sequence[Tensor], params: Sequence[Tensor]) -> list[Tensor]:
        if not updates:
            return []
        norms = torch._foreach_norm(list(updates))
        global_norm = torch.linalg.vector_norm(torch.stack(norms))
        factor = torch.clamp(max_norm / (global_norm + _NORM_EPS), max=1.0)
        factor = torch.where(torch.isfinite(global_norm), factor, torch.nan)
        return [u * factor.to(u.dtype) for u in updates]

    return stateless("clip_by_global_norm", clip_all)


def _clip_factor(norm: Tensor, max_norm: float) -> Tensor:
    # A zero norm gives max_norm / 0 = inf, clamped to 1: zero updates pass unchanged.
    factor = torch.clamp(max_norm / norm, max=1.0)
    return torch.where(torch.isfinite(norm), factor, torch.nan).to(norm.dtype)
