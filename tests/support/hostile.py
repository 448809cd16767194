"""Helpers of the hostile-input tests on DICOM objects and list files: edit a DICOM file as an attack did, run
``medfcn evaluate`` as a process, read a file in a child process under an address-space limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["edit_dicom", "evaluate_process", "read_bounded"]


def edit_dicom(path: Path, edit, to: Path | None = None) -> Path:
    """Read ``path`` with pydicom, ``edit(ds)``, save (to ``to`` if given); returns the saved file."""
    import pydicom

    ds = pydicom.dcmread(path)
    edit(ds)
    to = to or path
    to.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(to, enforce_file_format=False)
    return to


def evaluate_process(pred: Path, ref: Path, series: Path, report: Path) -> tuple[int, dict | None, str]:
    """``medfcn evaluate PRED REF -o REPORT --series SERIES`` as a process: ``(status, metrics.json cases, stdout +
    stderr)``."""
    cmd = [sys.executable, "-m", "medfcn.cli", "evaluate", str(pred), str(ref), "-o", str(report)]
    done = subprocess.run(
        [*cmd, "--series", str(series)], capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    metrics = report / "metrics.json"
    cases = json.loads(metrics.read_text())["cases"] if metrics.is_file() else None
    return done.returncode, cases, done.stdout + done.stderr


_CHILD = """
import resource, sys
import numpy as np
from medfcn.errors import MedfcnError
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 29), size + (3 << 29)))
what, path = sys.argv[1], sys.argv[2]
if what == "seg":
    from medfcn.dicom.seg import read_seg_alone as read
elif what == "napari":
    from napari_plugin._reader import read_layers as read
elif what == "rtstruct":
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.dicom.rtstruct import read_rtstruct
    read = lambda p: read_rtstruct(p, SeriesIndex([sys.argv[3]]))
else:
    from medfcn.data.pairs import find_pairs
    read = lambda p: find_pairs(pairs=p)
try:
    out = read(path)
except MedfcnError as e:
    print("REFUSED", type(e).__name__, e)
else:
    print("READ", int(np.count_nonzero(out.array)) if what == "rtstruct" else getattr(out, "shape", None) or len(out))
"""


def read_bounded(what: str, path: Path, timeout: float = 60, series: Path | None = None) -> str:
    """``REFUSED ...`` or ``READ ...``: reading ``path`` (``what``: ``seg``, ``napari``, ``rtstruct`` on ``series``,
    ``pairs``) in a child process under 1.5 GB more address space than its imports took, and ``timeout`` s (a
    MemoryError, a traceback or a hang fails the test)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", _CHILD, what, str(path), *([str(series)] if series else [])]
    done = subprocess.run(args, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout, env=env)
    assert done.returncode == 0 and done.stdout.startswith(("REFUSED", "READ")), done.stderr[-2000:]
    return done.stdout.strip()
