"""``python -m gradwise`` is the ``gradwise`` command."""

import sys

from gradwise.cli import main

sys.exit(main())
