"""One run at a time: a lock file held (``flock``) for as long as a run writes what it guards, so that a second run
writing the same thing is refused instead of mixing its files with the first's. ``medfcn segment`` locks its
output folder (``OUT/.medfcn.lock``); ``medfcn train`` locks its model file (``.NAME.lock`` beside it), which with
its ``.state.pt`` is one run's.

The lock is the kernel's: it goes with the process that holds it (a killed run leaves a file that locks nothing, and
the next run takes it). The file says who holds it (``pid N on HOST``), for the refusal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from medfcn.errors import OutputError

__all__ = ["acquire", "holding", "release"]


def acquire(path: Path, busy: str) -> IO[str]:
    """Take the lock file ``path`` and return its open handle (hold it until :func:`release`). Raises
    :class:`OutputError` with ``busy`` (where ``{holder}`` is replaced by the holder: ``pid N on HOST``) when
    another process holds it."""
    import fcntl

    for _ in range(5):
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(busy.format(holder=holder)) from None
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:  # the run before us removed it as we opened it: lock the new one
            same = False
        if same:
            break
        handle.close()
    else:
        raise OutputError(f"{path}: cannot take the lock (it keeps being replaced)")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def release(path: Path, handle: IO[str]) -> None:
    """Remove the lock file and let it go (removed while held: a run that opened it before sees it gone)."""
    Path(path).unlink(missing_ok=True)
    handle.close()


@contextmanager
def holding(path: Path, busy: str) -> Iterator[None]:
    """The lock file ``path`` held for the ``with`` block (:func:`acquire`, :func:`release`)."""
    handle = acquire(path, busy)
    try:
        yield
    finally:
        release(path, handle)
