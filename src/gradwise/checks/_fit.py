"""The error for a model or loss that cannot run on the data, shared by the checks.

Torch's own error for a model and data that do not fit (``mat1 and mat2 shapes cannot be
multiplied``, ``Expected input batch_size (16) to match target batch_size (5)``) is raised
deep inside a layer or a loss; the checks run the model and loss once up front and say
instead what could not run on what, with the shapes, chaining torch's error.
"""

from __future__ import annotations

from typing import Any


def cannot_run_message(subject: str, owner: str, on: str, error: Exception, fix: str) -> str:
    """``The {subject} given to {owner} cannot run on {on}: {error}. {fix}``, with the
    first line of the error only (torch's can run on for a page)."""
    first_line = str(error).splitlines()[0] if str(error) else ""
    stop = "" if first_line.endswith(".") else "."  # torch's own may end in one
    return (
        f"The {subject} given to {owner} cannot run on {on}: {type(error).__name__}: "
        f"{first_line}{stop} {fix}"
    )


def structure(outputs: Any) -> str:
    """What a forward pass returned, in words: "a Tensor", "a tuple of 2", "a dict"."""
    if isinstance(outputs, tuple | list):
        return f"a {type(outputs).__name__} of {len(outputs)}"
    return f"a {type(outputs).__name__}"
