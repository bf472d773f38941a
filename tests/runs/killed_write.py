"""What a process killed in the middle of an atomic write leaves behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

# replace_atomically in a process that SIGKILLs itself once the temporary file holds
# SIZE bytes: no Python cleanup runs, as with the OOM killer or a power loss.
_SCRIPT = """
import os, signal, sys
from pathlib import Path
from gradwise.runs import replace_atomically

def write(file):
    file.write(b"x" * int(sys.argv[2]))
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

replace_atomically(Path(sys.argv[1]), write)
"""


def kill_mid_write(path: Path, size: int = 10_000) -> Path:
    """Replace ``path`` atomically in a process killed mid-write; the file it left."""
    before = set(path.parent.iterdir())
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path), str(size)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = set(path.parent.iterdir()) - before
    assert left.stat().st_size == size
    return left
