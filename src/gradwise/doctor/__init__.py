"""The training doctor: checks, a monitored probe run, findings, prescriptions and fixes.

:class:`LiveDoctor` raises findings during ``gradwise train``; :func:`diagnose` is
``gradwise doctor``: the gradient check, the sanity checks and a short monitored probe
run, with ``fix=True`` applying the prescriptions it is confident in and running again.
"""

from gradwise.doctor._doctor import DoctorResult, diagnose, fixes_from, with_changes
from gradwise.doctor._fixes import with_config_fix
from gradwise.doctor._inputs import check_input_scale
from gradwise.doctor._live import LiveDoctor, announce, write_probe_files

__all__ = [
    "DoctorResult",
    "LiveDoctor",
    "announce",
    "check_input_scale",
    "diagnose",
    "fixes_from",
    "with_changes",
    "with_config_fix",
    "write_probe_files",
]
