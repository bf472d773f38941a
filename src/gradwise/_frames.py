"""Where a warning should point: the user's line, however deep in gradwise it is raised."""

from __future__ import annotations

import inspect
import os


def stacklevel_outside(package_file: str) -> int:
    """The ``stacklevel``, seen from the function that calls this one and then
    ``warnings.warn``, of the first frame outside the folder of ``package_file`` (pass a
    module's ``__file__``): public entry points reach a warning through different depths."""
    package = os.path.dirname(package_file) + os.sep
    frame = inspect.currentframe()
    frame = frame.f_back if frame is not None else None  # the function that warns: level 1
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
        level += 1
    return level
