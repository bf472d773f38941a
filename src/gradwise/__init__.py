"""gradwise: train deep networks well, on PyTorch.

Subpackages: ``optim`` (optimizers as gradient transforms), ``schedules``, ``init``,
``preprocess``, ``regularize``, ``data``, ``models``, ``losses``, ``train`` (the Trainer),
``config``, ``runs`` and ``report``. ``gradwise.Trainer`` is ``gradwise.train.Trainer``.
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
