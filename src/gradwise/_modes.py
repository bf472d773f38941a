"""The train/eval mode of every module of a model: saved before a switch, given back after.

``model.train(mode)`` sets every module alike, so giving a model back its mode that way
unfreezes a batch norm the user froze with ``.eval()``; setting only the flags skips what a
module's own ``train()`` does when switched (a LoRA layer merges its update into the
weight in eval mode and takes it out in training mode). :func:`restore_modes` does both.
"""

from __future__ import annotations

from torch import nn

#: Each module of a model with its ``training`` flag, outermost first.
Modes = list[tuple[nn.Module, bool]]


def module_modes(model: nn.Module) -> Modes:
    """Every module of ``model`` with its ``training`` flag, as ``model.modules()`` lists
    them (outermost first)."""
    return [(module, module.training) for module in model.modules()]


def restore_modes(modes: Modes) -> None:
    """Give every module of ``modes`` its saved flag back.

    A module whose class has its own ``train()`` is switched through it, outermost first,
    so that what it does when switched is undone; then every flag is set directly, so that
    a module in eval mode under one switched back to training stays in eval mode.
    """
    for module, training in modes:
        if type(module).train is not nn.Module.train:
            module.train(training)
    for module, training in modes:
        module.training = training
