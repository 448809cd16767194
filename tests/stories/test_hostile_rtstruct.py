"""Hostile inputs, round three (issue 32), DICOM RTSTRUCT: contours far off their slice or by the thousand
(clipped, bounded), ROIs and contours that cannot lie as they say, damage that swallows contours: never scored.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from tests.support.hostile import edit_dicom, evaluate_process, read_bounded


# -- RTSTRUCT objects -------------------------------------------------------------------------------------------
def _rt(files):
    from medfcn.batch.outputs import OutputFormat

    return files[OutputFormat.RTSTRUCT]


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixel centres strictly inside a polygon ``(K, 2)`` ``(col, row)`` by the crossing number, pixel by pixel:
    an implementation independent of medfcn's rasteriser (no clipping, no vectorised crossings)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    inside = np.zeros(shape, bool)
    ends = np.roll(points, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(points, ends, strict=True):
        crosses = (y0 > rows) != (y1 > rows)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (cols < x)
    return inside


def _set_contours(ds, slice_uid: str, contours_mm: list[np.ndarray]) -> None:
    """Replace the first ROI's contours by ``contours_mm`` (each ``(K, 3)`` LPS mm) on slice ``slice_uid``; drop the
    other ROIs' contours."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    template = next(r.ContourSequence[0] for r in ds.ROIContourSequence if "ContourSequence" in r)
    items = []
    for n, xyz in enumerate(contours_mm, 1):
        item = Dataset()
        item.ContourNumber = n
        ref = Dataset()
        ref.ReferencedSOPClassUID = template.ContourImageSequence[0].ReferencedSOPClassUID
        ref.ReferencedSOPInstanceUID = slice_uid
        item.ContourImageSequence = Sequence([ref])
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(xyz)
        item.ContourData = [f"{v:.12g}" for v in np.asarray(xyz).ravel()]  # exact to 1e-3 mm: 16 characters at most
        items.append(item)
    ds.ROIContourSequence[0].ContourSequence = Sequence(items)
    for roi in ds.ROIContourSequence[1:]:
        if "ContourSequence" in roi:
            del roi.ContourSequence


def _slice_patient(ds_slice, pixels: np.ndarray) -> np.ndarray:
    """LPS mm of ``(col, row)`` pixel coordinates on a source slice."""
    from medfcn.dicom.rtstruct import _to_patient

    return _to_patient(ds_slice, np.asarray(pixels, float))


# -- 4. a contour far off its slice, and many contours on one slice: clipped, bounded ---------------------------
def test_a_triangle_with_corners_a_billion_pixels_away_fills_its_slice_in_bounded_time(tmp_path, seg_case):
    import pydicom

    from medfcn.dicom.refs import SeriesIndex

    series, scan, _, files = seg_case
    src = pydicom.dcmread(sorted(series.iterdir())[0])
    corners = np.array([[-1e9, -1e9], [1e9 + 7, -1e9], [3.0, 1e9 + 11]])  # (col, row): the slice lies inside
    rt = edit_dicom(_rt(files), lambda ds: _set_contours(ds, src.SOPInstanceUID, [_slice_patient(src, corners)]))
    rt = rt.rename(tmp_path / "in" / "far.rtstruct.dcm")
    code = (
        "import sys, numpy as np\n"
        "from medfcn.dicom.refs import SeriesIndex\nfrom medfcn.dicom.rtstruct import read_rtstruct\n"
        "s = read_rtstruct(sys.argv[1], SeriesIndex([sys.argv[2]]))\nnp.save(sys.argv[3], s.array)\n"
    )
    out = tmp_path / "labels.npy"
    done = subprocess.run(
        [sys.executable, "-c", code, str(rt), str(series.parent), str(out)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
    )  # was a hang (killed at 180 s)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = np.load(out)
    from medfcn.dicom.refs import frame_indices, headers_by_uid

    scan_of = SeriesIndex([series.parent]).scan(scan.series_uid, rt)
    i, j, k = frame_indices(headers_by_uid(scan_of)[src.SOPInstanceUID], scan_of)
    expected = _inside(corners, (int(src.Rows), int(src.Columns)))
    assert expected.all()  # the triangle holds the whole slice
    assert np.array_equal(labels[i, j, k] == 1, expected) and labels.sum() == expected.sum()


def test_twenty_thousand_small_contours_on_one_slice_are_filled_in_bounded_time(tmp_path):
    import pydicom

    from medfcn.data.reader import read_scan
    from medfcn.dicom.contours import fill_contours
    from tests.support.dicom import write_all
    from tests.support.scans import affine_from_codes, write_dicom_pydicom

    series = tmp_path / "in" / "big"
    write_dicom_pydicom(series, np.zeros((160, 160, 3)), affine_from_codes("LPS", spacing=(1.0, 1.0, 2.0)))
    scan = read_scan(series)
    labels = np.zeros(scan.shape, np.uint8)
    labels[80, 80, 1] = 1
    files = write_all(scan, labels, tmp_path / "ref")
    src = pydicom.dcmread(sorted(series.iterdir())[1])
    rng = np.random.default_rng(3)
    centres = rng.choice(160 * 160, 20_000, replace=False)
    cols, rows = centres % 160, centres // 160
    square = np.array([[-0.4, -0.4], [0.4, -0.3], [0.3, 0.4], [-0.3, 0.3]])
    pixels = [square + [c, r] for c, r in zip(cols, rows, strict=True)]
    rt = edit_dicom(
        _rt(files), lambda ds: _set_contours(ds, src.SOPInstanceUID, [_slice_patient(src, p) for p in pixels])
    )
    expected = np.zeros((160, 160), bool)
    expected[rows, cols] = True
    assert np.array_equal(fill_contours(pixels, (160, 160)), expected)
    # most of the time is pydicom parsing 20,000 items (about 50 s under a load of 13 on 2 cores, before and after)
    out = read_bounded("rtstruct", rt, timeout=240, series=series.parent)
    assert out == f"READ {int(expected.sum())}"


@pytest.mark.parametrize("seed", range(6))
def test_the_clipped_rasteriser_agrees_with_a_pixel_by_pixel_crossing_number(seed):
    """Random polygons, some reaching far outside a 37 x 53 slice: medfcn's fill (clipped, vectorised) against the
    plain crossing-number test of every pixel centre (vertices off the half-pixel lattice, so no centre lies on an
    edge and the two rules agree exactly)."""
    from medfcn.dicom.contours import fill_contours

    rng = np.random.default_rng(seed)
    shape = (37, 53)
    polygons = [rng.uniform(-30, 80, (rng.integers(3, 12), 2)) + 0.123 for _ in range(3)]
    polygons.append(np.array([[-1e7, 5.37], [1e7, 9.71], [20.31, 3e6]]))
    expected = np.zeros(shape, bool)
    for p in polygons:
        expected ^= _inside(p, shape)
    assert expected.any() and not expected.all()
    assert np.array_equal(fill_contours(polygons, shape), expected)


# -- 9. RTSTRUCT ROIs and contours that cannot be put on the series as they say ---------------------------------
def _roi_number(value: int):
    def edit(ds):
        ds.StructureSetROISequence[0].ROINumber = value
        ds.ROIContourSequence[0].ReferencedROINumber = value
        ds.RTROIObservationsSequence[0].ReferencedROINumber = value

    return edit


def _shift_contours(offset_mm, which: slice = slice(None)):
    def edit(ds):
        for roi in ds.ROIContourSequence:
            for item in list(getattr(roi, "ContourSequence", []))[which]:
                xyz = np.asarray(item.ContourData, float).reshape(-1, 3) + offset_mm
                item.ContourData = [f"{v:.4f}" for v in xyz.ravel()]

    return edit


def _other_frame(ds):
    from pydicom.uid import generate_uid

    ds.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = generate_uid()


def _same_number(ds):
    ds.StructureSetROISequence[1].ROINumber = 1
    ds.ROIContourSequence[1].ReferencedROINumber = 1


@pytest.mark.parametrize(
    ("edit", "fault"),
    [
        (_roi_number(0), r"ROI number\(s\) \[0\]"),
        (_roi_number(70000), r"ROI number\(s\) \[70000\]"),
        (_roi_number(-1), r"ROI number\(s\) \[-1\]"),
        (_shift_contours([1000.0, 0, 0]), "wholly outside its slice"),
        (_shift_contours([0, 0, 1000.0]), "off the plane"),
        (_shift_contours([0, 0, 50.0], slice(0, 1)), "off the plane"),
        (_other_frame, "another Frame of Reference"),
        (_same_number, "used by more than one ROI"),
    ],
    ids=["roi0", "roi70000", "roi-1", "x+1000mm", "z+1000mm", "one-50mm-off", "frame", "same-number"],
)
def test_an_rtstruct_that_cannot_lie_as_it_says_is_never_scored(tmp_path, seg_case, edit, fault):
    from medfcn.batch.outputs import OutputFormat
    from medfcn.errors import MedfcnError
    from napari_plugin._reader import read_layers

    series, _, _, files = seg_case
    rt = edit_dicom(_rt(files), edit, series.parent / "series.rtstruct.dcm")  # beside its series, as a user keeps it
    status, cases, said = evaluate_process(rt, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
    assert status == 1 and not (cases or {}).get("series"), said
    assert str(rt) in said and re.search(fault, said), said
    with pytest.raises(MedfcnError, match=fault) as e:
        read_layers(str(rt))
    assert str(rt) in str(e.value) and "\n" not in str(e.value)


# -- bench_fuzz's RTSTRUCT seeds: a damaged tag or item length swallows what follows it ---------------------------
def _rename_roi_contours(raw: bytes) -> bytes:
    """ROIContourSequence's tag (3006,0039) with one byte changed, as fuzz seed 51 did: the contours are gone."""
    tag = b"\x06\x309\x00SQ"
    assert raw.count(tag) == 1
    return raw.replace(tag, b"\x06W9\x00SQ")


def _long_contour_item(raw: bytes) -> bytes:
    """The first contour item's length with its second byte changed, as fuzz seeds 111 and 112 did: the item runs
    into the contours after it, which pydicom reads as elements of that item (the file keeps its other sequences)."""
    at = raw.find(b"\xfe\xff\x00\xe0", raw.find(b"\x06\x30\x40\x00SQ"))  # ContourSequence's first item
    assert raw[at + 8 : at + 12] == b"\x06\x30\x16\x00"  # it opens with ContourImageSequence: a contour item
    return raw[: at + 5] + b"\xb6" + raw[at + 6 :]


@pytest.mark.parametrize(
    ("damage", "fault"),
    [(_rename_roi_contours, "no ROIContourSequence"), (_long_contour_item, "holds an item tag")],
    ids=["roi-contours-tag", "contour-item-length"],
)
def test_an_rtstruct_whose_damage_swallows_contours_is_never_scored(tmp_path, seg_case, damage, fault):
    from medfcn.batch.outputs import OutputFormat
    from medfcn.errors import MedfcnError
    from napari_plugin._reader import read_layers
    from tests.support.dicom import dciodvfy_errors

    series, _, _, files = seg_case
    rt = series.parent / "series.rtstruct.dcm"
    rt.write_bytes(damage(_rt(files).read_bytes()))
    assert set(dciodvfy_errors(rt)) - set(dciodvfy_errors(_rt(files)))  # an independent validator: damaged
    status, cases, said = evaluate_process(rt, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
    assert status == 1 and not (cases or {}).get("series"), said  # was: scored (empty, or short of contours)
    assert str(rt) in said and fault in said, said
    with pytest.raises(MedfcnError, match=fault) as e:
        read_layers(str(rt))
    assert str(rt) in str(e.value) and "\n" not in str(e.value)
