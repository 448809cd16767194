"""DICOM SEG and RTSTRUCT back into a real viewer (run under ``xvfb-run -a``), and saving a SEG after edits.

The SEG and RTSTRUCT files are medfcn's own outputs (:func:`medfcn.batch.outputs.write_outputs`, what ``medfcn segment
--format nifti,dicom-seg,rtstruct`` writes) for DICOM series of several geometries; each is checked against the NIfTI
written beside it for the same case, opened in the same viewer, voxel for voxel and transform for transform.
"""

from __future__ import annotations

import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medfcn.batch.outputs import OutputFormat
from medfcn.data.reader import read_scan
from medfcn.dicom.seg import display_rgb
from medfcn.errors import MedfcnError
from napari_plugin._reader import read_layers
from tests.support.dicom import make_series, synthetic_labels, write_all
from tests.support.napari import TIMEOUT_MS, gui, segment_widget

TRANSFORMS = ("scale", "translate", "rotate")


def outputs(tmp_path, kind: str):
    """A series, and medfcn's NIfTI, SEG and RTSTRUCT of a two-label map on it: ``(series folder, files)``."""
    folder = make_series(kind, tmp_path / "series")
    scan = read_scan(folder)
    return folder, write_all(scan, synthetic_labels(scan), tmp_path / "out")


def assert_lies_on(layer, nifti) -> None:
    """``layer`` holds ``nifti``'s data voxel for voxel and lies where it lies in the viewer."""
    assert type(layer).__name__ == "Labels"
    assert layer.data.shape == nifti.data.shape
    np.testing.assert_array_equal(np.asarray(layer.data), np.asarray(nifti.data))
    for t in TRANSFORMS:
        np.testing.assert_allclose(getattr(layer, t), getattr(nifti, t), atol=1e-4, err_msg=t)
    np.testing.assert_allclose(layer.affine.affine_matrix, nifti.affine.affine_matrix, atol=1e-6)


@gui
@pytest.mark.parametrize("kind", ["lps_shuffled", "oblique_slope", "non_square_pixels"])
def test_a_seg_moved_alone_opens_where_its_nifti_opens(viewer, tmp_path, kind):
    _, files = outputs(tmp_path, kind)
    alone = tmp_path / "alone" / files[OutputFormat.DICOM_SEG].name
    alone.parent.mkdir()
    shutil.move(files[OutputFormat.DICOM_SEG], alone)

    (nifti,) = viewer.open(str(files[OutputFormat.NIFTI]), plugin="medfcn")
    (seg,) = viewer.open(str(alone), plugin="medfcn")
    assert_lies_on(seg, nifti)
    assert set(np.unique(seg.data)) == {0, 1, 2}
    # names and colours from its segments
    assert seg.metadata["label_names"] == {1: "brain", 2: "lesion"}
    for number in (1, 2):
        np.testing.assert_allclose(seg.colormap.map(number)[:3], np.divide(display_rgb(number), 255), atol=0.02)
    (folder_layer,) = viewer.open(str(alone.parent), plugin="medfcn")  # the folder holding it, too
    np.testing.assert_array_equal(folder_layer.data, nifti.data)


@gui
def test_seg_and_rtstruct_opened_with_their_series_lie_on_its_image(viewer, tmp_path):
    series, files = outputs(tmp_path, "oblique_slope")
    both = tmp_path / "both"
    shutil.copytree(series, both / "series")
    for fmt in (OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT):
        shutil.copy(files[fmt], both / files[fmt].name)

    (nifti,) = viewer.open(str(files[OutputFormat.NIFTI]), plugin="medfcn")
    layers = viewer.open(str(both), plugin="medfcn")
    kinds = {type(la).__name__: la for la in layers}
    image = kinds["Image"]
    objects = [la for la in layers if la is not image]
    assert sorted(la.name.rsplit(".", 1)[-1] for la in objects) == ["rtstruct", "seg"]
    for layer in objects:
        assert_lies_on(layer, nifti)
        for t in TRANSFORMS:
            np.testing.assert_allclose(getattr(layer, t), getattr(image, t), atol=1e-9)
        assert layer.metadata["label_names"] == {1: "brain", 2: "lesion"}
        assert layer.metadata["series_uid"] == image.metadata["series_uid"]  # it saves back as a SEG of that series

    # one file chosen (File > Open of the SEG or RTSTRUCT beside its series): on the series too
    (rt,) = viewer.open(str(both / files[OutputFormat.RTSTRUCT].name), plugin="medfcn")
    assert_lies_on(rt, nifti)


def _rtstruct_alone(tmp_path):
    """A series and medfcn's RTSTRUCT of it moved to a folder of its own: ``(series folder, rtstruct, nifti)``."""
    series, files = outputs(tmp_path, "lps_shuffled")
    alone = tmp_path / "alone" / files[OutputFormat.RTSTRUCT].name
    alone.parent.mkdir()
    shutil.move(files[OutputFormat.RTSTRUCT], alone)
    return series, alone, files[OutputFormat.NIFTI]


def _answer_folder_dialog(monkeypatch, answer: str) -> list:
    """Answer napari's folder dialog with ``answer`` ("" = Cancel); returns the titles it was asked with."""
    from qtpy.QtWidgets import QFileDialog

    asked = []
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: (asked.append(a[1]), answer)[1])
    return asked


@gui
def test_an_rtstruct_without_its_series_says_what_to_do(viewer, tmp_path, monkeypatch):
    _, alone, _ = _rtstruct_alone(tmp_path)
    asked = _answer_folder_dialog(monkeypatch, "")  # the user cancels the question
    with pytest.raises(Exception) as info:
        viewer.open(str(alone), plugin="medfcn")
    error = info.value.__cause__ or info.value
    while getattr(error, "__cause__", None) is not None:
        error = error.__cause__
    assert isinstance(error, MedfcnError) and asked and alone.name in asked[0]
    text = str(error)
    assert str(alone) in text and "open that series first (File > Open Folder)" in text and "\n" not in text


@gui
def test_a_damaged_rtstruct_beside_its_series_says_why_and_asks_nothing(viewer, tmp_path, monkeypatch):
    """Its series is found; what is wrong is the file itself: one line naming it, and no folder dialog (which asked
    for a series that was there, and left a test run waiting for a click for 90 minutes)."""
    series, files = outputs(tmp_path, "lps_shuffled")
    rt = series.parent / files[OutputFormat.RTSTRUCT].name  # beside its series, as a user keeps it
    ds = pydicom.dcmread(files[OutputFormat.RTSTRUCT])
    ds.ROIContourSequence[0].ReferencedROINumber = 70000  # contours of an ROI the file does not define
    ds.save_as(rt)
    asked = _answer_folder_dialog(monkeypatch, str(series))
    with pytest.raises(MedfcnError, match=r"ROI number") as info:
        read_layers(str(rt))
    assert str(rt) in str(info.value) and "\n" not in str(info.value) and asked == []


@gui
def test_an_rtstruct_finds_its_series_wherever_each_lies(viewer, tmp_path, monkeypatch):
    series, alone, nifti_path = _rtstruct_alone(tmp_path)
    asked = _answer_folder_dialog(monkeypatch, "")
    (nifti,) = viewer.open(str(nifti_path), plugin="medfcn")

    # both paths given, each where it lies (``napari SERIES RTSTRUCT``: napari reads them one after the other)
    both = viewer.open([str(series), str(alone)], plugin="medfcn")
    (rt,) = [la for la in both if la.name.endswith("rtstruct")]
    assert_lies_on(rt, nifti) and len(both) == 2 and not asked
    (rt,) = [
        la for la in read_layers([str(alone), str(series)]) if la[0].dtype == np.uint8 and "rtstruct" in la[1]["name"]
    ]
    np.testing.assert_array_equal(rt[0], nifti.data)  # one call with both, in either order
    viewer.layers.clear()

    (nifti,) = viewer.open(str(nifti_path), plugin="medfcn")
    asked = _answer_folder_dialog(monkeypatch, str(series))  # alone: napari asks for the series' folder
    layers = viewer.open(str(alone), plugin="medfcn")
    assert len(asked) == 1 and {type(la).__name__ for la in layers} == {"Labels", "Image"}
    assert_lies_on(next(la for la in layers if la.name.endswith("rtstruct")), nifti)


@gui
def test_a_seg_saved_after_edits_says_so_and_its_geometry_comes_from_positions(viewer, qtbot, tmp_path, tiny_model):
    folder = make_series("lps_shuffled", tmp_path / "series")  # slices 2 mm apart
    for f in folder.iterdir():  # ... whose SpacingBetweenSlices lies, as the sample's does
        ds = pydicom.dcmread(f)
        ds.SpacingBetweenSlices = "1"
        ds.save_as(f)
    (image,) = viewer.open(str(folder), plugin="medfcn")
    widget = segment_widget(viewer, image, tiny_model)
    widget.run()
    qtbot.waitUntil(lambda: f"{image.name}_labels" in viewer.layers and widget.run_button.enabled, timeout=TIMEOUT_MS)
    labels = viewer.layers[f"{image.name}_labels"]
    labels.data = np.zeros_like(labels.data)
    labels.data[2:6, 5:15, 5:15] = 1  # a model's label, as a model wrote it: AUTOMATIC
    from napari_plugin._layers import labels_checksum

    labels.metadata = {**labels.metadata, "labels_checksum": labels_checksum(labels.data)}

    def saved(name):
        path = tmp_path / name
        viewer.layers.selection = {labels}
        viewer.layers.save(str(path), selected=True)  # no plugin named: the .dcm writer is medfcn's
        return hd.seg.segread(path)

    def types(seg):
        return {int(s.SegmentNumber): str(s.SegmentAlgorithmType) for s in seg.SegmentSequence}

    automatic = saved("auto.seg.dcm")
    assert types(automatic) == {1: "AUTOMATIC"}
    assert automatic.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "tiny"
    # geometry: every slice, 2 mm apart as the positions say, so highdicom rebuilds the series' own grid
    measures = automatic.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(2.0)
    assert automatic.get_volume().spatial_shape == labels.data.shape

    painted = np.asarray(labels.data).copy()
    painted[3, 8:10, 8:10] = 0  # an edit of the model's label
    painted[7, 2:4, 2:4] = 2  # a label the model does not make
    labels.data = painted
    edited = saved("edited.seg.dcm")
    assert types(edited) == {1: "SEMIAUTOMATIC", 2: "MANUAL"}
    assert "edited" in edited.SeriesDescription
    assert not hasattr(edited.SegmentSequence[1], "SegmentationAlgorithmIdentificationSequence")

    (back,) = viewer.open(str(tmp_path / "edited.seg.dcm"), plugin="medfcn")
    np.testing.assert_array_equal(back.data, painted)
    for t in TRANSFORMS:
        np.testing.assert_allclose(getattr(back, t), getattr(labels, t), atol=1e-4)
