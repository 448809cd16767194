"""Writing label maps on a scan's own grid, atomically.

A label map is written as ``.nii.gz`` with the smallest integer type that holds its labels (uint8, else
uint16, else int32) and exactly the source scan's size, spacing, origin and direction, so it overlays the scan in
any viewer. Every file is written to a hidden temporary name in the destination folder and renamed into place:
a process killed part-way never leaves a partial output under the final name. Temporaries left by a killed
process are removed by :func:`remove_stale_partials`.

Several files that belong together (a case's NIfTI, SEG and RTSTRUCT) are one :class:`FileSet`: each is written and
verified under its temporary name, and only when all of them are is each renamed into place; if any fails, none
replaces what its final name held.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medfcn.data.scan import Grid, Scan
from medfcn.errors import OutputError

__all__ = [
    "FileSet",
    "check_writable",
    "write_labels",
    "atomic_write_text",
    "atomic_write",
    "label_dtype",
    "partial_path",
    "remove_stale_partials",
    "process_tag",
    "left_by_dead_process",
    "file_sha256",
    "verify_labels",
    "nifti_forms",
]

log = logging.getLogger(__name__)

_PART = ".part"


def label_dtype(labels: np.ndarray) -> np.dtype:
    """uint8 when the labels fit, else uint16, else int32."""
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


_NAME_MAX = 255  # bytes in one file name (Linux, macOS)


def _host() -> str:
    """This host's name as temporary names carry it (no dots: they separate the name's parts)."""
    return socket.gethostname().replace(".", "-")[:64]


def partial_path(path: Path) -> Path:
    """The hidden temporary name ``path`` is written under: ``.NAME.HOST.PID.part`` + the same suffix.

    A ``NAME`` that would make it longer than a file name may be (255 bytes) is shortened to its start and a hash
    of the whole name, so any final name that fits has a temporary name that fits too.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    tail = f".{_host()}.{os.getpid()}{_PART}{suffix}"
    name = path.name
    if len(f".{name}{tail}".encode("utf-8", "surrogateescape")) > _NAME_MAX:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        room = _NAME_MAX - len(tail.encode()) - len(digest) - 2
        head = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
        name = f"{head}-{digest}"
    return path.with_name(f".{name}{tail}")


class FileSet:
    """Files that are one unit (a case's outputs): each written and verified under its temporary name, then all
    renamed into place by :meth:`commit`, or all removed by :meth:`discard` (what the final names held stays).

    Used as a context manager: leaving it by an exception discards the temporaries.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with FileSet() as unit:
    ...     _ = atomic_write_text(folder / "a.txt", "A", into=unit)
    ...     _ = atomic_write_text(folder / "b.txt", "B", into=unit)
    ...     sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    ...     sorted(p.name for p in unit.commit())
    []
    ['a.txt', 'b.txt']
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def add(self, tmp: Path, path: Path) -> None:
        self._pending.append((Path(tmp), Path(path)))

    def commit(self) -> list[Path]:
        """Rename every temporary to its final name (renames within one folder); returns the final names.
        Raises :class:`OutputError` if a rename fails (the temporaries not yet renamed are removed)."""
        done = []
        try:
            for tmp, path in self._pending:
                os.replace(tmp, path)
                done.append(path)
        except OSError as e:
            self.discard()
            kept = len(self._pending) - len(done)
            raise OutputError(
                f"{path}: cannot be renamed into place ({e.strerror or e}); {len(done)} file(s) of this unit were "
                f"replaced, {kept} not"
            ) from None
        self._pending = []
        return done

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.discard()  # after a commit nothing is pending


def check_writable(folder: str | Path, what: str = "the output folder") -> None:
    """Create ``folder`` and prove a file can be written there (a probe file, removed at once), before any work
    is done: the batch's output folder and a trained model's folder both ask here. Raises :class:`OutputError`
    naming ``what``."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".medfcn-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write {what} there ({exc.strerror or exc})") from None


def _ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the output folder ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: the output folder is not writable")


def _commit(tmp: Path, path: Path, into: FileSet | None = None) -> Path:
    if into is not None:  # renamed with the rest of its unit
        into.add(tmp, path)
        return path
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    return path


def write_labels(
    labels: np.ndarray, like: Scan | Grid, path: str | Path, *, compression_level: int = 1, into: FileSet | None = None
) -> Path:
    """Write ``labels`` (X, Y, Z) as a ``.nii.gz`` label map on the grid of ``like`` (a scan or its grid), atomically
    (``into``: written and verified, renamed into place with the rest of that unit by its ``commit``).

    Raises:
        ValueError: ``labels`` does not have ``like``'s shape (a programming error, not bad input).
        OutputError: the folder cannot be created or written.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.name.endswith((".nii.gz", ".nii")):
        path = path.with_name(path.name + ".nii.gz")
    labels = np.asarray(labels)
    if isinstance(like, Grid):
        like = Scan(np.broadcast_to(np.uint8(0), like.size), like.spacing, like.origin, like.direction_matrix)
    image = like.to_sitk(labels.astype(label_dtype(labels), copy=False))
    _ensure_folder(path.parent)
    tmp = partial_path(path)
    try:
        sitk.WriteImage(image, str(tmp), True, compression_level)
        del image  # a copy of the labels (57 MB for a 0.5 mm head), not held while the file is read back
        _keep_nifti_forms(tmp, like)
        verify_labels(tmp, labels, shown=path)  # SimpleITK does not report a failed gzip write (a full disk)
    except (RuntimeError, OSError) as e:
        tmp.unlink(missing_ok=True)
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise OutputError(f"{path}: cannot write ({lines[-1]})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _commit(tmp, path, into)


def nifti_forms(path: str | Path) -> tuple[np.ndarray, int, np.ndarray, int] | None:
    """``(qform, qform_code, sform, sform_code)`` of a NIfTI whose header holds both, disagreeing by more than
    1e-3 mm at its grid's corners; ``None`` otherwise (one form, agreeing forms, not NIfTI). Header only."""
    import nibabel as nib

    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")) or not path.is_file():
        return None
    try:
        header = nib.load(str(path), mmap=False).header
    except Exception:  # not ours to judge here: the reader reports an unreadable file
        return None
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qform is None or sform is None or not qcode or not scode:
        return None
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in header.get_data_shape()[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    if np.max(np.abs((qform - sform) @ corners)) <= 1e-3:
        return None
    return qform, int(qcode), sform, int(scode)


def _keep_nifti_forms(tmp: Path, like: Scan) -> None:
    """Give the label map ``tmp`` the qform and sform of its NIfTI scan when they disagree (ITK keeps one of them):
    then every tool overlays the labels on the scan, whichever form it prefers."""
    import nibabel as nib

    forms = nifti_forms(like.source) if like.source is not None else None
    if forms is None:
        return
    qform, qcode, sform, scode = forms
    image = nib.load(str(tmp))
    labels = np.asanyarray(image.dataobj)
    out = nib.Nifti1Image(labels, None, header=image.header)
    out.header.set_qform(qform, code=qcode)
    out.header.set_sform(sform, code=scode)
    nib.save(out, str(tmp))


def verify_labels(path: Path, labels: np.ndarray, *, shown: Path | None = None) -> None:
    """Read the label map file ``path`` back (nibabel, which raises on a short gzip stream) and check it holds
    exactly ``labels`` (X, Y, Z), slab by slab: never a second volume of their size. Raises :class:`OutputError`
    naming ``shown`` (default ``path``)."""
    import nibabel as nib

    shown = path if shown is None else shown
    try:
        stored = nib.load(str(path), mmap=False, keep_file_open=True).dataobj  # one gzip stream for all the slabs
        same = stored.shape == labels.shape and all(
            np.array_equal(np.asanyarray(stored[..., k : k + 16]), labels[..., k : k + 16])
            for k in range(0, labels.shape[-1], 16)
        )
    except Exception as e:  # nibabel raises many types for a short or damaged file
        text = str(e).strip().splitlines()
        raise OutputError(
            f"{shown}: the written file does not read back ({type(e).__name__}: {text[0] if text else ''}); "
            "is the disk full?"
        ) from None
    if not same:
        raise OutputError(f"{shown}: the written file does not hold the label map written; is the disk full?")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str, *, into: FileSet | None = None) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename. Raises :class:`OutputError`."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write, into=into)


def atomic_write(path: str | Path, write: Callable[[Path], None], *, into: FileSet | None = None) -> Path:
    """Call ``write(temporary)`` on the hidden temporary name of ``path``, then rename it into place (``into``: with
    the rest of that unit, when its ``commit`` is called).

    ``write`` raises :class:`OutputError` (or any exception, which is re-raised) to abandon the file: the
    temporary is removed and nothing appears under ``path``. An OSError, or any exception once the disk is full or
    the file size limit reached (:func:`_no_room`), becomes one :class:`OutputError` line naming the cause.
    """
    path = Path(path)
    _ensure_folder(path.parent)
    tmp = partial_path(path)
    try:
        write(tmp)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        cause = _no_room(tmp, sys.exc_info()[1])
        tmp.unlink(missing_ok=True)
        if cause:  # torch and safetensors report a full disk in their own words (RuntimeError, SafetensorError)
            raise OutputError(f"{path}: cannot write ({cause})") from None
        raise
    return _commit(tmp, path, into)


def _no_room(tmp: Path, exc: BaseException | None) -> str | None:
    """Why writing ``tmp`` failed, when a library said it in its own words (``exc``) and the cause is room: the
    operating system's error it quotes (safetensors: ``os error 28``), the file size limit (``ulimit -f``) reached,
    or less than 1 MiB left on the file system (torch says neither); else None."""
    import errno
    import re
    import resource
    import shutil

    quoted = re.search(r"\(os error (\d+)\)", str(exc))
    if quoted and int(quoted.group(1)) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return os.strerror(int(quoted.group(1)))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        if limit != resource.RLIM_INFINITY and tmp.exists() and tmp.stat().st_size >= limit:
            return f"{os.strerror(errno.EFBIG)}: the file size limit is {limit:,} bytes"
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        return None
    if free < 1 << 20:
        return f"{os.strerror(errno.ENOSPC)}: {free:,} bytes free"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_tag() -> str:
    """``HOST.PID`` of this process, as the hidden things it leaves in an output folder carry it."""
    return f"{_host()}.{os.getpid()}"


def left_by_dead_process(tag: str) -> bool:
    """Whether ``tag`` (``HOST.PID``, see :func:`process_tag`) names a process of this host that is no longer
    running (not this one). Another host's processes cannot be checked: ``False``."""
    host, _, pid = tag.rpartition(".")
    if host != _host() or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not _pid_alive(int(pid))


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Remove temporaries in ``folder`` left by killed medfcn processes of this host; returns them.

    A temporary of a process still running, or of another host (a distributed run), is left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host = _host()
    removed = []
    for f in folder.iterdir():
        name = f.name
        if not (name.startswith(".") and _PART in name):
            continue
        stem = name.rsplit(_PART, 1)[0]  # the case name itself may hold ".part"
        parts = stem.rsplit(".", 2)
        if len(parts) != 3 or parts[1] != host or not parts[2].isdigit():
            continue
        if int(parts[2]) != os.getpid() and not left_by_dead_process(f"{parts[1]}.{parts[2]}"):
            continue
        f.unlink(missing_ok=True)
        removed.append(f)
        log.info("removed %s, left by an interrupted run", f)
    return removed
