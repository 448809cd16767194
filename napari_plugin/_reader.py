"""napari reader: NIfTI, NRRD and MetaImage files, DICOM series folders (through :func:`medfcn.data.reader.read_scan`),
and DICOM SEG and RTSTRUCT files (:mod:`medfcn.dicom.label_objects`), on their series or, a SEG, alone.

An RTSTRUCT is drawn on its series' slices: it finds that series beside it, in a folder opened with it, among
the series already open in the viewer, or, failing those, asks for the series' folder.

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
    """Read every scan, DICOM SEG and RTSTRUCT named by ``path`` as napari layer data tuples.

    A ``.dcm`` image file is read as the series of the folder holding it. A SEG or RTSTRUCT (a file named, or
    found in a folder named) becomes a Labels layer on its referenced series' grid when that series is in the
    folders named or beside the file, so it lies on the series' image layer; a SEG without its series lies on
    the grid of its own frames. Its labels are named and coloured as its segments (ROIs) say.

    Raises:
        MedfcnError: (a subclass) when nothing named could be read; the message names the file. Series of a
            folder that cannot be read are skipped with a logged warning when others can.
    """
    from medfcn.data.discovery import find_cases
    from medfcn.dicom.label_objects import label_object_files
    from medfcn.dicom.refs import SeriesIndex, dicom_label_kind
    from medfcn.errors import MedfcnError, NoScansError, SeriesNotFoundError

    paths = [Path(p) for p in (path if isinstance(path, list | tuple) else [path])]
    objects = [p for p in paths if p.is_file() and dicom_label_kind(p)]
    inputs = []
    for p in (p for p in paths if p not in objects):
        inputs.append(p.parent if p.is_file() and p.name.lower().endswith(DICOM_SUFFIX) else p)
    inputs = list(dict.fromkeys(inputs))
    folders = [p for p in inputs if p.is_dir()]
    objects += [f for folder in folders for f in label_object_files(folder)]
    layers, errors = [], []
    try:
        cases = find_cases(inputs) if inputs else []
    except NoScansError as e:  # a folder holding only SEG or RTSTRUCT files
        if not objects:
            raise
        log.info("%s", e)
        cases = []
    taken = _layer_names()
    for case in cases:
        try:
            scan = case.read()
        except MedfcnError as e:
            log.warning("%s", e)
            errors.append(e)
            continue
        layers.append(_scan_layer(scan, case.path, taken))
    series = SeriesIndex(list(dict.fromkeys([*folders, *(o.parent for o in objects), *_open_series_folders()])))
    for obj in dict.fromkeys(objects):
        try:
            try:
                layers.append(_label_object_layer(obj, series))
            except SeriesNotFoundError:  # only a missing series is worth a question; a damaged file is not
                layers.extend(_with_asked_series(obj, series, taken))
        except MedfcnError as error:
            log.warning("%s", error)
            errors.append(error)
    if not layers:
        raise errors[0] if errors else NoScansError(f"{paths[0]}: no scans found")
    _watch_current_viewer()
    return layers


def _scan_layer(scan, path: Path, taken: set[str]) -> tuple:
    """A scan's layer; a label map whose case name a layer already has (a reference opened beside its image,
    ``colin27``) is named after its folder too (``colin27 (labels)``), not napari's ``colin27 [1]``."""
    data, kwargs, kind = scan_layer_data(scan)
    if kind == "labels" and kwargs["name"] in taken:
        kwargs["name"] = f"{scan.case} ({Path(path).resolve().parent.name})"
    taken.add(kwargs["name"])
    return data, kwargs, kind


def _layer_names() -> set[str]:
    """The names of the layers of the viewer being opened into (napari's current viewer), if any."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
        return {layer.name for layer in viewer.layers} if viewer is not None else set()
    except Exception:  # naming is a courtesy
        return set()


def _label_object_layer(path: Path, series) -> tuple:
    """A SEG or RTSTRUCT as a Labels layer, named after its file, its labels named and coloured as it says."""
    from medfcn.dicom.label_objects import label_legend, open_label_object

    scan = open_label_object(path, series)
    legend = label_legend(path)
    name = path.name[: -len(DICOM_SUFFIX)] if path.name.lower().endswith(DICOM_SUFFIX) else path.name
    data, kwargs, kind = scan_layer_data(scan, layer_type="labels", name=name)
    kwargs["metadata"].update(
        label_object=str(path),
        label_names={number: item.name for number, item in legend.items()},
    )
    if legend:
        kwargs["features"] = {"index": [0, *legend], "label": ["background", *(i.name for i in legend.values())]}
    colours = {number: (*(c / 255 for c in item.rgb), 1.0) for number, item in legend.items() if item.rgb}
    if colours:
        kwargs["colormap"] = {None: (1.0, 1.0, 1.0, 1.0), 0: (0.0, 0.0, 0.0, 0.0), **colours}
    return data, kwargs, kind


def _open_series_folders() -> list[Path]:
    """The folders of the DICOM series open in napari's current viewer (an RTSTRUCT opened later from anywhere
    finds its series there)."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
        layers = list(viewer.layers) if viewer is not None else []
    except Exception:  # no viewer: nothing open
        return []
    folders = []
    for layer in layers:
        meta = layer.metadata or {}
        source = meta.get("source")
        if meta.get("series_uid") and source and Path(source).is_dir():
            folders.append(Path(source))
    return list(dict.fromkeys(folders))


def _with_asked_series(obj: Path, series, taken: set[str]) -> list[tuple]:
    """An RTSTRUCT whose series is not open: ask for the series' folder (:func:`_ask_series_folder`); its layer and
    the series' layers from there. Raises :class:`SeriesNotFoundError` in the viewer's terms when no folder is chosen
    or the chosen one lacks the series, the reader's error for anything else."""
    from medfcn.data.discovery import find_cases
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.errors import SeriesNotFoundError

    asked = _ask_series_folder(obj)
    if asked is not None:
        try:
            layer = _label_object_layer(obj, SeriesIndex([asked, *series.folders]))
        except SeriesNotFoundError:  # not in the folder chosen either
            asked = None
    if asked is None:
        raise SeriesNotFoundError(
            f"{obj}: an RT Structure Set is drawn on the slices of its image series, which is not open and not "
            "beside it: open that series first (File > Open Folder), then this file, or open both together"
        )
    return [layer, *(_scan_layer(c.read(), c.path, taken) for c in find_cases([asked]))]


def _ask_series_folder(path: Path) -> Path | None:
    """Ask for the folder of the image series an RTSTRUCT was drawn on (a folder dialog, in a running viewer's
    thread only); ``None`` when there is no viewer or the user cancels."""
    try:
        from qtpy.QtCore import QThread
        from qtpy.QtWidgets import QApplication, QFileDialog

        app = QApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            return None
        chosen = QFileDialog.getExistingDirectory(
            None, f"Folder of the image series {path.name} was drawn on", str(path.parent)
        )
    except Exception:  # a question is a courtesy; never fail a read for it
        log.debug("medfcn: could not ask for the series folder", exc_info=True)
        return None
    return Path(chosen) if chosen else None


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
