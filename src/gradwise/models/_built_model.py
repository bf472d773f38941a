"""The ``nn.Sequential`` the builders return: torch's, with one error made clear.

Batch normalization in training normalizes each channel over the batch and the spatial
axes, and torch refuses one value per channel with "Expected more than 1 value per
channel when training, got input size torch.Size([1, 32, 1, 1])", raised from
``F.batch_norm`` with no word of which layer or what to do. A built model meets it with
one sample in training mode where its batch norm sees one value per sample: every batch
norm of an ``mlp``, and a CNN's where the maps have shrunk to 1x1 (``cnn2d`` on 28x28
at depth 5 or more; 28 -> 14 -> 7 -> 3 -> 1). Batches of 2 or more, eval mode, and
spatial maps larger than 1x1 all pass.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import Tensor, nn


class BuiltModel(nn.Sequential):
    """An ``nn.Sequential`` whose forward names the layer, the shape and the fix when a
    batch-norm layer gets one value per channel in training.

    The check costs nothing on the normal path: torch's own ``ValueError`` is caught and
    raised again with the context (a ``try`` block is free from Python 3.11; a 14-layer
    batch-norm ``mlp`` on a batch of 8 runs its forward in 78-82 us either way, one CPU
    thread). Layers, parameters, state dict, slicing and the printed form are
    ``nn.Sequential``'s.
    """

    #: The builder's name, for messages ("cnn2d").
    owner: str = "model"
    #: A further fix for the message, e.g. a depth that keeps the maps larger than 1x1.
    shallower: str = ""

    def _get_name(self) -> str:
        return "Sequential"  # printed as torch's: the layers are the model

    def __prepare_scriptable__(self) -> nn.Sequential:
        # torch.jit.script takes this instead: TorchScript compiles no try/except (nor the
        # class attributes), and torch's Sequential computes the same.
        return nn.Sequential(OrderedDict(self._modules))  # the same names: state dicts match

    def forward(self, input: Tensor) -> Tensor:
        for index, layer in enumerate(self):
            try:
                input = layer(input)
            except ValueError as error:
                if not _one_value_per_channel(layer, error):
                    raise
                raise ValueError(self._explain(index, layer, input)) from error
        return input

    def _explain(self, index: int, layer: nn.Module, input: Tensor) -> str:
        samples, channels, *spatial = input.shape
        maps = _describe_spatial(spatial)
        depth = f", or {self.shallower}" if self.shallower else ""
        return (
            f"Layer {index} ({type(layer).__name__}) of this {self.owner} got input of shape "
            f"{tuple(input.shape)} in training mode: batch normalization needs more than 1 "
            f"value per channel, and {samples} sample{'s' if samples != 1 else ''}{maps} "
            f"give{'s' if samples == 1 else ''} each of its {channels} channels "
            f"{samples * math.prod(spatial)}. Train on batches of 2 samples or more, call "
            f"model.eval() before predicting one sample, or build the model with "
            f"norm='layer', 'group' or None{depth}."
        )


def _describe_spatial(spatial: list[int]) -> str:
    """`` of length 1`` (signals), `` of 1x1 maps`` (images), nothing for features."""
    if not spatial:
        return ""
    if len(spatial) == 1:
        return f" of length {spatial[0]}"
    return f" of {'x'.join(map(str, spatial))} maps"


def _one_value_per_channel(layer: nn.Module, error: ValueError) -> bool:
    """torch's refusal of batch statistics over one value (``F.batch_norm``)."""
    return isinstance(layer, nn.modules.batchnorm._BatchNorm) and str(error).startswith(
        "Expected more than 1 value per channel"
    )
