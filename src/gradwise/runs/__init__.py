"""The run folder: config, metrics, summary and checkpoints of a training run.

:class:`RunFolder` names the files of ``runs/<name>/`` and checks, before training
starts, that the disk can take them. :class:`MetricsLog` appends step and epoch records
to ``metrics.jsonl`` so that a crash never leaves it corrupt; :func:`read_records` and
:func:`read_metrics` read it back. Summaries and configs are replaced atomically.
Nothing here imports matplotlib or pandas (except :func:`read_metrics`, which imports
pandas when called); rendering lives in :mod:`gradwise.report`.
"""

from gradwise.runs._files import RunFolderError, replace_atomically
from gradwise.runs._folder import DEFAULT_MIN_FREE_BYTES, RunFolder, format_bytes
from gradwise.runs._listing import RunInfo, list_runs, to_timestamp
from gradwise.runs._metrics import (
    MetricsLog,
    metrics_file,
    read_metrics,
    read_records,
    repair_metrics_file,
)
from gradwise.runs._summary import (
    STATUSES,
    read_config,
    read_summary,
    write_config,
    write_summary,
)

__all__ = [
    "replace_atomically",
    "DEFAULT_MIN_FREE_BYTES",
    "STATUSES",
    "MetricsLog",
    "RunFolder",
    "RunFolderError",
    "RunInfo",
    "format_bytes",
    "list_runs",
    "metrics_file",
    "read_config",
    "read_metrics",
    "read_records",
    "read_summary",
    "repair_metrics_file",
    "to_timestamp",
    "write_config",
    "write_summary",
]
