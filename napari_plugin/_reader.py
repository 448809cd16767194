"""napari reader: NIfTI, NRRD and MetaImage files and DICOM series folders, through :func:`medfcn.data.reader.read_scan`.

A folder is searched as the ``medfcn segment`` command searches it (:func:`medfcn.data.discovery.find_cases`): one
layer per scan file and per DICOM series, named after the case (``FOLDER_1``, ``FOLDER_2``, ... for a folder of
several series). Each scan becomes an Image layer (a Labels layer for an integer volume of few values) in
patient millimetres, displayed as a radiologist expects (see :mod:`napari_plugin._layers`), contrast set at the
0.5th and 99.5th percentiles. Importing this module imports neither torch nor MONAI (the hook napari calls for every
path a user opens only needs the file-name rules of :mod:`medfcn.data.filenames`); reading does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from medfcn.data.dicom_series import is_dicom_file
from medfcn.data.filenames import DICOM_SUFFIX, SCAN_SUFFIXES, is_scan_name

from ._layers import scan_layer_data

__all__ = ["get_reader", "read_layers"]

log = logging.getLogger(__name__)

_MAX_FILES_PEEKED = 2000  # how many files of a folder are looked at before the reader gives up on it


def _holds_scans(folder: Path) -> bool:
    """Whether a folder (or a sub-folder) holds a scan file or a DICOM file; looks at no more than 2,000 files."""
    seen = 0
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(here) / name
            if is_scan_name(name) or is_dicom_file(path):
                return True
            seen += 1
            if seen >= _MAX_FILES_PEEKED:
                return False
    return False


def _takes(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.is_dir():
        return _holds_scans(p)
    return p.is_file() and p.name.lower().endswith((*SCAN_SUFFIXES, DICOM_SUFFIX))


def get_reader(path: str | os.PathLike | list) -> Callable[[str | list], list[tuple]] | None:
    """The reader for ``path`` (a file, a folder, or a list of them), or ``None`` for paths it does not take.

    Never raises: napari then offers the path to other readers.
    """
    try:
        paths = path if isinstance(path, list | tuple) else [path]
        if paths and all(_takes(p) for p in paths):
            return read_layers
    except Exception:  # a reader hook must not raise; the path is simply not ours
        log.debug("medfcn reader declines %r", path, exc_info=True)
    return None


def read_layers(path: str | os.PathLike | list) -> list[tuple]:
    """Read every scan named by ``path`` as napari layer data tuples.

    A single ``.dcm`` file is read as the series of the folder holding it.

    Raises:
        MedfcnError: (a subclass) when nothing named could be read; the message names the file. Series of a
            folder that cannot be read are skipped with a logged warning when others can.
    """
    from medfcn.data.discovery import find_cases
    from medfcn.errors import MedfcnError, NoScansError

    paths = path if isinstance(path, list | tuple) else [path]
    inputs = []
    for p in map(Path, paths):
        inputs.append(p.parent if p.is_file() and p.name.lower().endswith(DICOM_SUFFIX) else p)
    cases = find_cases(list(dict.fromkeys(inputs)))
    layers, errors = [], []
    for case in cases:
        try:
            scan = case.read()
        except MedfcnError as e:
            log.warning("%s", e)
            errors.append(e)
            continue
        layers.append(scan_layer_data(scan))
    if not layers:
        raise errors[0] if errors else NoScansError(f"{paths[0]}: no scans found")
    _watch_current_viewer()
    return layers


def _watch_current_viewer() -> None:
    """Let labels layers made later with napari's "New labels" button take the scan's grid (see the writer)."""
    try:
        from napari import current_viewer

        from ._widgets._scan_views import install

        viewer = current_viewer()
        if viewer is not None:
            install(viewer)
    except Exception:  # reading must not fail because of a viewer hook
        log.debug("medfcn: could not watch the viewer", exc_info=True)
