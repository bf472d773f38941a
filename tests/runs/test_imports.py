"""The numeric core never imports the plotting and analysis libraries (STYLE.md section 13)."""

import subprocess
import sys


def test_importing_runs_and_report_does_not_import_matplotlib_pandas_or_yaml():
    # gradwise.report imports gradwise.runs, so one fresh interpreter checks both.
    script = (
        "import sys, gradwise.runs, gradwise.report\n"
        "print(','.join(m for m in ('matplotlib', 'pandas', 'yaml') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
