"""Which dim of a watched output holds its units, for the per-unit statistics (dead and
saturated fractions).

A convolution's units are its channels, dim 1 of its ``(batch, channels, *positions)``
output; a Linear layer's are its features, the LAST dim of ``(batch, *positions,
features)``: a Linear applied to a sequence ``(batch, tokens, features)`` has ``features``
units, and each token is one more position of them. For outputs of at most 2 dims the two
agree. An activation module (ReLU, tanh, ...) has no units of its own: a call of it has
the units of the layer that ran last before that call in the forward, the
``(batch, channels, length)`` of a Conv1d -> BatchNorm1d -> ReLU or the
``(batch, tokens, features)`` of a Linear -> LayerNorm -> ReLU. When no such layer ran
before it, its units are dim 1 in a model that has a convolution, else the last dim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from torch import nn

#: Layers whose units are the last dim of their output (features).
FEATURES_LAST_KINDS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.Embedding, nn.RNNBase, nn.MultiheadAttention,
)  # fmt: skip
#: Layers whose units are dim 1 of their output (channels).
CHANNELS_FIRST_KINDS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)  # fmt: skip


class UnitAxes:
    """Whether the units of a watched call's output (3 or more dims) are its last dim.

    In a model whose layers are all of one kind, one answer holds for every call: dim 1
    with a convolution, else the last dim. In a model with both kinds (a conv body and a
    Linear head, a ViT's patch convolution and its MLPs), :meth:`learning` hooks the
    layers during one probe's forward to see which ran last before each call, remembered
    by the call's layer name (``act``, ``act#2``, ...). Later probes run without those
    hooks (~4 us per hooked layer call here), unless one meets a call that was not learned
    (its forward took another path): that call gets the model's answer, and the next probe
    learns again.

    Args:
        model: the watched model.
        per_unit: whether any watched module has per-unit statistics (nothing to learn
            otherwise).
    """

    def __init__(self, model: nn.Module, *, per_unit: bool) -> None:
        kinds = (*FEATURES_LAST_KINDS, *CHANNELS_FIRST_KINDS)
        layers = [(m, isinstance(m, FEATURES_LAST_KINDS)) for m in model.modules()]
        layers = [(module, last) for module, last in layers if isinstance(module, kinds)]
        self.default_last = all(last for _, last in layers)
        mixed = not self.default_last and any(last for _, last in layers)
        self._layers: Sequence[tuple[nn.Module, bool]] = layers if mixed and per_unit else ()
        self._learned: dict[str, bool] = {}
        self._to_learn = bool(self._layers)
        self._learning = False
        self._last_ran = self.default_last

    def units_last(self, name: str) -> bool:
        """For the output of the call ``name`` of a watched module, made in the forward
        that is running: whether its units are the last dim (else dim 1)."""
        if not self._layers:
            return self.default_last
        if self._learning:
            self._learned[name] = self._last_ran
            return self._last_ran
        learned = self._learned.get(name)
        if learned is None:
            self._to_learn = True
            return self.default_last
        return learned

    def learning(self) -> AbstractContextManager[None]:
        """Around one forward: hooks on the layers, when there is anything to learn."""
        # (nullcontext otherwise: 0.6 us a probe here, against 2.5 for a generator's.)
        return self._learn() if self._to_learn else nullcontext()

    @contextmanager
    def _learn(self) -> Iterator[None]:
        handles = [module.register_forward_hook(self._ran(last)) for module, last in self._layers]
        self._learning, self._last_ran = True, self.default_last
        try:
            yield
            self._to_learn = False
        finally:
            self._learning = False
            for handle in handles:
                handle.remove()

    def _ran(self, last: bool) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            self._last_ran = last

        return record
