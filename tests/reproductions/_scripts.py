"""Load a reproduction script from benchmarks/reproductions/ as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks" / "reproductions"


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/reproductions/<name>.py`` under a private module name.

    The scripts' folder goes on ``sys.path``, as when a script runs by itself, so they can
    import their shared helpers (``_plotting``); the module is registered in
    ``sys.modules`` so that dataclasses defined in a script work.
    """
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"_reproduction_{name}", SCRIPTS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {SCRIPTS}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
