"""One writer for every benchmark result: each file says what made it.

A result written through :func:`write_result` carries, beside the benchmark's own figures, a ``"provenance"`` block:
the commit of the checkout (and whether it had uncommitted changes), the SHA-256 of each model measured, the
machine (CPU model, cores, memory, OS, Python, torch) and the date, so that a newcomer can tell which figure is
current and what produced it. Paths inside the repository are written relative to it; other absolute paths
(a home folder, a scratch disk) are reduced to their file name, so that no private path is published.

    >>> from pathlib import Path
    >>> public_path(Path(__file__).resolve())
    'benchmarks/support/record.py'
    >>> public_path("/home/someone/scans/brain1.nii.gz")
    'brain1.nii.gz'
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "machine", "provenance", "public_path", "sha256", "write_result"]


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def public_path(path: str | Path) -> str:
    """``path`` as it may be published: relative to the repository when inside it, else its file name."""
    p = Path(path)
    try:
        return p.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return p.name


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, encoding="utf-8", errors="replace", timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """The machine a figure was measured on: CPU model, cores the process may use, memory, OS, Python, torch."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # torch not installed where the benchmark ran
        torch_version = None
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch_version,
    }


def provenance(models: Mapping[str, str | Path] | Iterable[str | Path] = ()) -> dict[str, Any]:
    """The provenance block of a result: commit, dirty flag, models' SHA-256 (by name), machine, date (UTC)."""
    if not isinstance(models, Mapping):
        models = {Path(m).name: m for m in models}
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "models": {name: {"file": public_path(p), "sha256": sha256(p)} for name, p in models.items()},
        "machine": machine(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([public_path(sys.argv[0]), *sys.argv[1:]]) if sys.argv and sys.argv[0] else "",
    }


def write_result(
    path: str | Path, result: Mapping[str, Any], models: Mapping[str, str | Path] | Iterable[str | Path] = ()
) -> Path:
    """Write ``result`` as JSON to ``path`` with its :func:`provenance` (``models``: the model files measured, by
    name). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"provenance": provenance(models), **result}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
