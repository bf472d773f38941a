"""The ``gradwise`` command line: ``train``, ``config``, ``runs``, ``report``."""

from gradwise.cli._main import main

__all__ = ["main"]
