"""Hostile inputs, round three (issue 32), DICOM SEG: each test writes a SEG the way an attack did (frame tables
that lie, a partial series, damaged pixel headers, fractional values, frames implying a huge grid) and checks it is
refused in one line naming the file, never scored, never allocated unbounded.

Memory bombs run in a child process under an address-space limit (:func:`tests.support.hostile.read_bounded`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.support.hostile import edit_dicom, evaluate_process, read_bounded


# -- SEG objects: a series, a reference label map and the SEG of it, then edited as each attack did ---------------
def _seg(files):
    from medfcn.batch.outputs import OutputFormat

    return files[OutputFormat.DICOM_SEG]


def _refused_everywhere(seg: Path, series: Path, ref: Path, tmp_path: Path, fault: str) -> None:
    """``seg`` fails its case in ``evaluate`` (exit 1, never scored) and the napari reader refuses it with or without
    its series, each with one line naming the file and ``fault``."""
    from medfcn.dicom.label_objects import open_label_object
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.errors import MedfcnError
    from napari_plugin._reader import read_layers

    status, cases, said = evaluate_process(seg, ref, series.parent, tmp_path / "report")
    assert status == 1, said
    assert not cases or all(not scores for scores in cases.values()), cases  # nothing scored
    assert str(seg) in said and re.search(fault, said)
    for where in (SeriesIndex([series.parent]), SeriesIndex([])):
        with pytest.raises(MedfcnError, match=fault) as e:
            open_label_object(seg, where)
        assert str(seg) in str(e.value) and "\n" not in str(e.value)
    alone = tmp_path / "alone" / seg.name
    alone.parent.mkdir(exist_ok=True)
    alone.write_bytes(seg.read_bytes())
    with pytest.raises(MedfcnError, match=fault):
        read_layers(str(alone))


# -- 7. misnumbered segments, frames of slices not in the series, frames without items --------------------------
def _segment_zero(ds):
    ds.SegmentSequence[0].SegmentNumber = 0
    for item in ds.PerFrameFunctionalGroupsSequence:
        seg_id = item.SegmentIdentificationSequence[0]
        if seg_id.ReferencedSegmentNumber == 1:
            seg_id.ReferencedSegmentNumber = 0


def _segment_seven(ds):
    ds.SegmentSequence = ds.SegmentSequence[:1]  # describes segment 1 only
    for item in ds.PerFrameFunctionalGroupsSequence:
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 7


def _foreign_sources(ds):
    from pydicom.uid import generate_uid

    for item in ds.PerFrameFunctionalGroupsSequence:
        for derivation in item.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                source.ReferencedSOPInstanceUID = generate_uid()


def _fewer_items(ds):
    ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:-2]  # pixels of F frames, F-2 items


@pytest.mark.parametrize(
    ("edit", "fault"),
    [
        (_segment_zero, "SegmentNumbers"),
        (_segment_seven, r"segment\(s\) \[7\]"),
        (_foreign_sources, "derived from no slice"),
        (_fewer_items, "NumberOfFrames is"),
    ],
)
def test_a_seg_whose_frame_table_lies_is_never_scored(tmp_path, seg_case, edit, fault):
    from medfcn.batch.outputs import OutputFormat

    series, _, _, files = seg_case
    seg = edit_dicom(_seg(files), edit, tmp_path / "pred" / "series.seg.dcm")
    if edit is _foreign_sources:  # alone, its own frames still make a grid: only the series shows the fault
        status, cases, said = evaluate_process(seg, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
        assert status == 1 and not (cases or {}).get("series") and re.search(fault, said) and str(seg) in said
        return
    _refused_everywhere(seg, series, files[OutputFormat.NIFTI], tmp_path, fault)


# -- 8. a SEG beside a partial copy of its series ---------------------------------------------------------------
def test_a_seg_beside_a_partial_copy_of_its_series_is_refused_not_trimmed(tmp_path, seg_case):
    import shutil

    import pydicom

    from medfcn.batch.outputs import OutputFormat

    series, _, _, files = seg_case
    partial = tmp_path / "partial" / "series"
    shutil.copytree(series, partial)
    by_depth = sorted(partial.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for f in by_depth[-3:]:  # the top 3 of 10 slices gone: a shorter series, whole in itself
        f.unlink()
    status, cases, said = evaluate_process(_seg(files), files[OutputFormat.NIFTI], partial.parent, tmp_path / "report")
    assert status == 1 and not (cases or {}).get("series"), said
    assert "derived from no slice" in said and str(_seg(files)) in said
    # and the RTSTRUCT of the same labels beside the same partial copy: refused too (as it was before)
    rtstruct = files[OutputFormat.RTSTRUCT]
    status, _, said = evaluate_process(rtstruct, files[OutputFormat.NIFTI], partial.parent, tmp_path / "r2")
    assert status == 1 and str(files[OutputFormat.RTSTRUCT]) in said


# -- damaged pixel headers and geometry -------------------------------------------------------------------------
def _set(**values):
    def edit(ds):
        for key, value in values.items():
            setattr(ds, key, value)

    return edit


def _short_pixels(ds):
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]


def _spacing(value):
    def edit(ds):
        ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = value

    return edit


@pytest.mark.parametrize(
    ("edit", "fault"),
    [
        (_short_pixels, "PixelData holds"),
        (_set(BitsAllocated=16), "BitsAllocated 16"),
        (_set(NumberOfFrames=1_000_000), "NumberOfFrames is 1000000"),
        (_set(Rows=65535, Columns=65535), "MEDFCN_MAX_VOXELS|NumberOfFrames"),
        (_spacing([0, 1.1]), "PixelSpacing"),
        (_spacing([-1.1, 1.1]), "PixelSpacing"),
    ],
    ids=["short", "bits16", "frames1e6", "rows65535", "spacing0", "spacing-"],
)
def test_a_seg_with_a_damaged_pixel_header_is_refused_in_one_line(tmp_path, seg_case, edit, fault):
    from medfcn.batch.outputs import OutputFormat

    series, _, _, files = seg_case
    seg = edit_dicom(_seg(files), edit, tmp_path / "pred" / "series.seg.dcm")
    _refused_everywhere(seg, series, files[OutputFormat.NIFTI], tmp_path, fault)


# -- 6. one FRACTIONAL rule everywhere --------------------------------------------------------------------------
def test_a_fractional_seg_means_the_same_to_every_reader(tmp_path, seg_case):
    """Fractions 0.8 on the label, 0.3 on a ring around it: value / MaximumFractionalValue >= 0.5 keeps the label
    only, in evaluate (Dice 1 against it), on the series and alone, and in the napari reader."""
    import highdicom as hd
    from scipy import ndimage

    from medfcn.batch.outputs import OutputFormat, output_files, write_outputs
    from medfcn.dicom.refs import SeriesIndex, frames_of, source_datasets
    from medfcn.dicom.seg import _descriptions, read_seg, read_seg_alone, segments_of
    from napari_plugin._reader import read_layers

    series, scan, labels, _ = seg_case
    core = labels == 1
    ring = ndimage.binary_dilation(core, iterations=2) & ~core
    fractions = np.where(core, 0.8, np.where(ring, 0.3, 0.0)).astype(np.float32)
    datasets = source_datasets(scan)
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=frames_of(fractions, scan, datasets),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=_descriptions(segments_of({"brain": 1}), hd_algorithm()),
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="a planning system",
        manufacturer_model_name="x",
        software_versions="1",
        device_serial_number="0",
        max_fractional_value=200,
    )
    path = tmp_path / "pred" / "series.seg.dcm"
    path.parent.mkdir()
    seg.save_as(path)
    ref = output_files(tmp_path / "ref1", "series", [OutputFormat.NIFTI])
    model = type("M", (), {"card": type("C", (), {"labels": {"brain": 1}, "label_codes": {}})(), "name": "m"})
    write_outputs(core.astype(np.uint8), scan, ref, model)

    status, cases, said = evaluate_process(path, ref[OutputFormat.NIFTI], series.parent, tmp_path / "report")
    assert status == 0, said
    assert cases["series"]["1"]["dice"] == 1.0  # was 0.553-like: any fraction > 0 counted
    assert np.array_equal(read_seg(path, SeriesIndex([series.parent])).array > 0, core)
    alone = read_seg_alone(path).array
    assert alone.sum() == core.sum() and set(np.unique(alone)) == {0, 1}
    [(data, _, kind)] = read_layers(str(path))  # the SEG alone in the napari reader
    assert kind == "labels" and int((np.asarray(data) > 0).sum()) == int(core.sum())


def hd_algorithm():
    from medfcn.dicom.seg import Algorithm

    return Algorithm("a planning system", "0" * 64)


# -- 3. a SEG alone whose frames imply a huge grid: bounded before allocation -----------------------------------
def _move_planes(depths: dict[int, float]):
    """An edit putting the frames of the k-th plane (in depth order) ``depths[k]`` mm along the normal."""

    def edit(ds):
        items = ds.PerFrameFunctionalGroupsSequence
        plane = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
        iop = np.asarray(plane.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        ipp = [np.asarray(i.PlanePositionSequence[0].ImagePositionPatient, float) for i in items]
        depth = np.round([p @ normal for p in ipp], 3)
        planes = sorted(set(depth.tolist()))
        origin = ipp[int(np.argmin(depth))]
        for item, d in zip(items, depth, strict=True):
            new = origin + normal * depths.get(planes.index(d), planes.index(d) * 600.0)
            item.PlanePositionSequence[0].ImagePositionPatient = [f"{v:.4f}" for v in new]

    return edit


@pytest.mark.parametrize(
    ("depths", "fault"),
    [
        ({0: 0.0, 1: 0.001}, "0.001 mm apart"),  # the attack: 3.1e9 voxels from the smallest gap
        ({0: 0.0, 1: 0.02, **{k: 5000.0 * k for k in range(2, 10)}}, "MEDFCN_MAX_VOXELS"),  # regular, 1.3e9 voxels
        ({0: 0.0, 1: 2.0, 2: 4.0, 3: 7.0}, "irregularly spaced"),
    ],
    ids=["gap0.001", "huge-regular", "irregular"],
)
def test_a_seg_alone_whose_frames_imply_a_huge_or_irregular_grid_is_refused(tmp_path, seg_case, depths, fault):
    seg = edit_dicom(_seg(seg_case[3]), _move_planes(depths), tmp_path / "bomb" / "series.seg.dcm")
    assert seg.stat().st_size < 300_000
    for what in ("seg", "napari"):
        out = read_bounded(what, seg, timeout=60)
        assert out.startswith("REFUSED") and fault in out and str(seg) in out, out
