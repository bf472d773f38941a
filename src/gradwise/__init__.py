"""gradwise: train deep networks well, on PyTorch.

Subpackages: ``optim`` (optimizers as gradient transforms), ``schedules``, ``init``,
``preprocess``, ``regularize``, ``data``, ``models``, ``losses``, ``train`` (the Trainer),
``config``, ``runs``, ``report``, and the training doctor: ``diagnosis``, ``checks``,
``monitor``, ``doctor``. ``gradwise.Trainer`` is ``gradwise.train.Trainer`` and
``gradwise.Finding`` is ``gradwise.diagnosis.Finding``.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Finding", "Trainer", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import gradwise` (and `gradwise --help`) does not import the trainer's
    # dependencies.
    if name == "Trainer":
        from gradwise.train import Trainer

        return Trainer
    if name == "Finding":
        from gradwise.diagnosis import Finding

        return Finding
    raise AttributeError(f"module 'gradwise' has no attribute {name!r}")
