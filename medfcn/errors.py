"""The one small hierarchy of errors a user can act on.

Every error raised for bad input derives from :class:`MedfcnError`. The CLI catches it once, prints
its message on one line and exits with :attr:`MedfcnError.exit_code`; library callers catch it the same way.
"""

from __future__ import annotations

__all__ = [
    "terminal_safe",
    "few_names",
    "MedfcnError",
    "ScanReadError",
    "UnsupportedScanError",
    "DicomSeriesError",
    "SeriesNotFoundError",
    "NoScansError",
    "OutputError",
    "GridMismatchError",
    "ModelError",
    "CancelledError",
    "UsageError",
]


def few_names(names: list[str], k: int = 5) -> str:
    """The first ``k`` names for a message, and how many more there are."""
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


class MedfcnError(Exception):
    """Base of every error medfcn raises for input a person can fix. The message names the file."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line: a multi-line message from a library below is folded so the CLI prints one line; characters a
        # terminal would interpret (escape sequences in a file name) are shown escaped.
        super().__init__(terminal_safe(" ".join(str(message).split())))


def terminal_safe(text: str) -> str:
    """``text`` with characters that are not printable (ANSI escapes, control characters) written as ``\\xNN``."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


class ScanReadError(MedfcnError):
    """A file could not be read as a scan: empty, truncated, not an image, or unreadable."""


class UnsupportedScanError(MedfcnError):
    """A readable image that medfcn cannot segment: not 3-D, or no finite voxels."""


class DicomSeriesError(MedfcnError):
    """A DICOM series that cannot be assembled into a volume (missing or duplicate slices, mixed grids)."""


class SeriesNotFoundError(MedfcnError):
    """An RTSTRUCT whose image series is not among the series given: its contours cannot be put on a grid."""


class NoScansError(MedfcnError):
    """An input path holds no scan medfcn can read."""

    exit_code = 2


class OutputError(MedfcnError):
    """An output file or folder cannot be written."""

    exit_code = 2


class GridMismatchError(MedfcnError):
    """Two images that must share a voxel grid do not (size, spacing, origin or direction differ)."""


class ModelError(MedfcnError):
    """A model file that is not a medfcn checkpoint, from an unknown format version, or inconsistent."""

    exit_code = 2


class CancelledError(MedfcnError):
    """A long computation was cancelled by its caller (the napari widget's cancel button)."""


class UsageError(MedfcnError):
    """Options that cannot work together or are out of range (exit status 2, like argparse's own errors)."""

    exit_code = 2
