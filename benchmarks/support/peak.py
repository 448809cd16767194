"""Peak resident memory of a benchmarked process, measured so that the benchmark's own size does not leak in.

Linux carries a process's peak RSS into its child across ``fork`` and ``exec`` (``ru_maxrss`` of a child started
by a process holding 900 MB is never below 900 MB). :func:`launched` runs a command through a small launcher
process instead: the command is forked from that launcher (a bare Python of ~10 MB), whose ``os.wait4`` gives
the command's own peak, written to a file the caller reads with :func:`peak_mb`.
"""

from __future__ import annotations

import sys
from pathlib import Path

LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def launched(argv: list[str], peak_file: Path) -> list[str]:
    """``argv`` wrapped in the launcher, which writes the command's peak RSS (kB) to ``peak_file``."""
    return [sys.executable, "-c", LAUNCHER, str(peak_file), *argv]


def peak_mb(peak_file: Path) -> float:
    """The peak the launcher wrote, in MB (the file is removed)."""
    kb = int(peak_file.read_text())
    peak_file.unlink()
    return kb / 1024
