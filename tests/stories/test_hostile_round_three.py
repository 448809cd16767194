"""Hostile inputs, round three (issue 32): each test writes a real file the way an attack did and checks it no longer
loses data, hangs, exhausts memory or is scored as if it were whole.

Memory bombs run in a child process under an address-space limit (:func:`tests.stories.test_bombs.read_bounded`'s
way); the rest in this process.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.manifest import MANIFEST_NAME, Status
from medfcn.batch.run import run_batch
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import write_cases

CPU = InferenceSettings(device="cpu")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(out: Path, case: str) -> None:
    """Give the manifest's first entry the case name ``case``, as a person editing the file would."""
    path = out / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["cases"][0]["case"] = case
    path.write_text(json.dumps(data, indent=2))


def _segment(inputs: Path, out: Path, model: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medfcn.cli", "segment", str(inputs), "-o", str(out), "--model", str(model)]
    return subprocess.run(
        cmd, capture_output=True, encoding="utf-8", errors="replace", env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


# -- 1. a case name kept from a manifest is checked like a new one ----------------------------------------------
def test_a_manifest_case_naming_the_input_never_replaces_the_scan(tmp_path, model_file):
    inputs, out = tmp_path / "in", tmp_path / "out"
    [scan] = write_cases(inputs, 1)
    first = _segment(inputs, out, model_file)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _sha(scan)
    _edit_manifest(out, "../in/case00")

    again = _segment(inputs, out, model_file)

    assert again.returncode == 0, again.stderr[-2000:]
    assert _sha(scan) == before  # the scan is still the scan
    assert sorted(p.name for p in inputs.iterdir()) == ["case00.nii.gz"]
    assert "../in/case00" in again.stderr and "not used" in again.stderr  # said, in one line
    [entry] = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    assert entry["case"] == "case00" and Path(entry["output"]) == out / "case00.nii.gz"


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_absolute_case_name_in_a_manifest_writes_nothing_outside_out(tmp_path, model_file, overwrite):
    inputs, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    write_cases(inputs, 2)
    run_batch([inputs], out, model=model_file, settings=CPU, progress=False)
    _edit_manifest(out, str(elsewhere / "deep" / "case00"))

    again = run_batch([inputs], out, model=model_file, settings=CPU, progress=False, overwrite=overwrite)

    assert not elsewhere.exists()
    assert {c.case: c.status for c in again.cases} == {
        "case00": Status.OK,  # its ordinary name, segmented again (the manifest no longer vouches for it)
        "case01": Status.OK if overwrite else Status.SKIPPED,
    }
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "case00.nii.gz",
        "case01.nii.gz",
        MANIFEST_NAME,
    ]


@pytest.mark.parametrize("case", ["../x", "/abs/x", "..", ".", "", "a\x1b[2Jb"])
def test_output_files_are_only_ever_inside_out(tmp_path, case):
    from medfcn.batch.outputs import OutputFormat, output_files
    from medfcn.errors import OutputError

    with pytest.raises(OutputError, match="cannot be a case name"):
        output_files(tmp_path, case, [OutputFormat.NIFTI, OutputFormat.DICOM_SEG])
    assert output_files(tmp_path, "a\\b..c", [OutputFormat.NIFTI])[OutputFormat.NIFTI].parent == tmp_path


# -- SEG objects: a series, a reference label map and the SEG of it, then edited as each attack did ---------------
@pytest.fixture
def seg_case(tmp_path):
    """``(series folder, scan, labels, {format: file})``: a real 24 x 24 x 10 DICOM series, two labels on it, and
    their NIfTI, SEG (highdicom) and RTSTRUCT written by medfcn into ``ref/``."""
    from medfcn.data.reader import read_scan
    from tests.support.dicom import make_series, synthetic_labels, write_all

    series = make_series("lps_shuffled", tmp_path / "in" / "series")
    scan = read_scan(series)
    labels = synthetic_labels(scan)
    return series, scan, labels, write_all(scan, labels, tmp_path / "ref")


def _seg(files):
    from medfcn.batch.outputs import OutputFormat

    return files[OutputFormat.DICOM_SEG]


def _edit(path: Path, edit, to: Path | None = None) -> Path:
    """Read ``path`` with pydicom, ``edit(ds)``, save (to ``to`` if given); returns the saved file."""
    import pydicom

    ds = pydicom.dcmread(path)
    edit(ds)
    to = to or path
    to.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(to, enforce_file_format=False)
    return to


def _evaluate(pred: Path, ref: Path, series: Path, report: Path) -> tuple[int, dict | None, str]:
    """``medfcn evaluate PRED REF -o REPORT --series SERIES`` as a process: ``(status, metrics.json cases, stdout +
    stderr)``."""
    cmd = [sys.executable, "-m", "medfcn.cli", "evaluate", str(pred), str(ref), "-o", str(report)]
    done = subprocess.run(
        [*cmd, "--series", str(series)], capture_output=True, encoding="utf-8", errors="replace", timeout=300
    )
    metrics = report / "metrics.json"
    cases = json.loads(metrics.read_text())["cases"] if metrics.is_file() else None
    return done.returncode, cases, done.stdout + done.stderr


def _refused_everywhere(seg: Path, series: Path, ref: Path, tmp_path: Path, fault: str) -> None:
    """``seg`` fails its case in ``evaluate`` (exit 1, never scored) and the napari reader refuses it with or without
    its series, each with one line naming the file and ``fault``."""
    from medfcn.dicom.label_objects import open_label_object
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.errors import MedfcnError
    from napari_plugin._reader import read_layers

    status, cases, said = _evaluate(seg, ref, series.parent, tmp_path / "report")
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
    seg = _edit(_seg(files), edit, tmp_path / "pred" / "series.seg.dcm")
    if edit is _foreign_sources:  # alone, its own frames still make a grid: only the series shows the fault
        status, cases, said = _evaluate(seg, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
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
    status, cases, said = _evaluate(_seg(files), files[OutputFormat.NIFTI], partial.parent, tmp_path / "report")
    assert status == 1 and not (cases or {}).get("series"), said
    assert "derived from no slice" in said and str(_seg(files)) in said
    # and the RTSTRUCT of the same labels beside the same partial copy: refused too (as it was before)
    rtstruct = files[OutputFormat.RTSTRUCT]
    status, _, said = _evaluate(rtstruct, files[OutputFormat.NIFTI], partial.parent, tmp_path / "r2")
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
    seg = _edit(_seg(files), edit, tmp_path / "pred" / "series.seg.dcm")
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

    status, cases, said = _evaluate(path, ref[OutputFormat.NIFTI], series.parent, tmp_path / "report")
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
    seg = _edit(_seg(seg_case[3]), _move_planes(depths), tmp_path / "bomb" / "series.seg.dcm")
    assert seg.stat().st_size < 300_000
    for what in ("seg", "napari"):
        out = read_bounded(what, seg, timeout=60)
        assert out.startswith("REFUSED") and fault in out and str(seg) in out, out


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
    rt = _edit(_rt(files), lambda ds: _set_contours(ds, src.SOPInstanceUID, [_slice_patient(src, corners)]))
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
    rt = _edit(_rt(files), lambda ds: _set_contours(ds, src.SOPInstanceUID, [_slice_patient(src, p) for p in pixels]))
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
    rt = _edit(_rt(files), edit, series.parent / "series.rtstruct.dcm")  # beside its series, as a user keeps it
    status, cases, said = _evaluate(rt, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
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
    status, cases, said = _evaluate(rt, files[OutputFormat.NIFTI], series.parent, tmp_path / "report")
    assert status == 1 and not (cases or {}).get("series"), said  # was: scored (empty, or short of contours)
    assert str(rt) in said and fault in said, said
    with pytest.raises(MedfcnError, match=fault) as e:
        read_layers(str(rt))
    assert str(rt) in str(e.value) and "\n" not in str(e.value)


# -- 5. a --pairs list of a million rows of one pair: bounded before any image is read -------------------------
@pytest.fixture
def one_pair(tmp_path):
    from tests.support.batch import SHAPE
    from tests.support.scans import affine_from_codes, head_labels, write_scan_file

    folder = tmp_path / "data"
    write_cases(folder / "images", 1)
    write_scan_file(folder / "labels" / "case00.nii.gz", head_labels(SHAPE), affine_from_codes("LPS"))
    return folder


@pytest.mark.parametrize(("rows", "suffix"), [(1_000_000, ".csv"), (1_000_000, ".json"), (3, ".csv")])
def test_a_pairs_list_repeating_one_pair_is_refused_before_reading_an_image(tmp_path, one_pair, rows, suffix):
    listing = one_pair / f"pairs{suffix}"
    if suffix == ".csv":
        listing.write_text("image,label\n" + "images/case00.nii.gz,labels/case00.nii.gz\n" * rows)
    else:
        listing.write_text(json.dumps([{"image": "images/case00.nii.gz", "label": "labels/case00.nii.gz"}] * rows))
    out = read_bounded("pairs", listing, timeout=60)  # was 1.4 GB and growing at 120 s
    assert out.startswith("REFUSED") and str(listing) in out, out
    assert ("more than the" in out) if rows > 3 else ("entry 2 repeats the image" in out)
    # the CLI says it in one line with an exit status, before it reads an image or writes a model
    done = subprocess.run(
        [sys.executable, "-m", "medfcn.cli", "train", "--pairs", str(listing), "-o", str(tmp_path / "m.safetensors")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=120,
    )
    assert done.returncode != 0 and str(listing) in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_a_pairs_list_naming_one_case_twice_for_two_images_is_refused(one_pair):
    from medfcn.data.pairs import find_pairs
    from medfcn.errors import MedfcnError

    write_cases(one_pair / "more", 1)
    listing = one_pair / "pairs.csv"
    listing.write_text(
        "image,label,case\nimages/case00.nii.gz,labels/case00.nii.gz,a\nmore/case00.nii.gz,labels/case00.nii.gz,b\n"
    )
    with pytest.raises(MedfcnError, match="repeats the label map"):
        find_pairs(pairs=listing)
    listing.write_text("image,label,case\nimages/case00.nii.gz,labels/case00.nii.gz,a\n")
    assert [p.case for p in find_pairs(pairs=listing)] == ["a"]


# -- 10 and a rough edge: NaN in a label map is refused, never turned into a label ------------------------------
def _nan_labels(path: Path, labels: np.ndarray) -> Path:
    """``labels`` saved as float32 NIfTI with NaN for "not annotated" (the upper half of the slices)."""
    from tests.support.scans import affine_from_codes, write_scan_file

    values = labels.astype(np.float32)
    values[:, :, labels.shape[2] // 2 :] = np.nan
    return write_scan_file(path, values, affine_from_codes("LPS"))


def test_evaluate_refuses_a_float_prediction_holding_nan(tmp_path):
    from tests.support.scans import affine_from_codes, head_labels, write_scan_file

    labels = head_labels((18, 22, 14))
    ref = write_scan_file(tmp_path / "ref" / "case.nii.gz", labels, affine_from_codes("LPS"))
    pred = _nan_labels(tmp_path / "pred" / "case.nii.gz", labels)
    done = subprocess.run(
        [sys.executable, "-m", "medfcn.cli", "evaluate", str(pred), str(ref), "-o", str(tmp_path / "report")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    cases = json.loads((tmp_path / "report" / "metrics.json").read_text())["cases"]
    assert not cases.get("case")  # not scored (was: NaN -> the map's minimum, Dice of a guess)
    assert f"{pred}: a label map with" in done.stdout and "non-finite" in done.stdout


def test_train_refuses_a_label_map_with_nan_for_not_annotated(tmp_path, one_pair):
    from tests.support.batch import SHAPE
    from tests.support.scans import head_labels

    _nan_labels(one_pair / "labels" / "case00.nii.gz", head_labels(SHAPE))
    model = tmp_path / "m.safetensors"
    cmd = [sys.executable, "-m", "medfcn.cli", "train", "--images", str(one_pair / "images")]
    cmd += ["--labels", str(one_pair / "labels"), "-o", str(model), "--val-cases", "0", "--max-minutes", "0.2"]
    done = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode != 0, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if "non-finite" in x]  # was: NaN -> the brain, Dice 0.000, exit 0
    assert str(one_pair / "labels" / "case00.nii.gz") in line and "Traceback" not in done.stderr
    assert not model.exists()


# -- rough edge: the scratch folder of a killed --workers client is removed by the next run ---------------------
def test_the_dask_scratch_of_a_killed_client_is_cleaned_by_the_next_run(tmp_path, model_file):
    import signal
    import time

    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cases(inputs, 3)
    cmd = [sys.executable, "-m", "medfcn.cli", "segment", str(inputs), "-o", str(out), "--model", str(model_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    client = subprocess.Popen(
        [*cmd, "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".medfcn-dask-*")) and time.monotonic() < deadline and client.poll() is None:
            time.sleep(0.2)
        scratch = list(out.glob(".medfcn-dask-*"))
        assert scratch and client.poll() is None, "the local cluster never made its scratch folder"
        os.kill(client.pid, signal.SIGKILL)  # the client only: as a user's kill -9 of the command
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    time.sleep(1)  # the cluster's nanny and worker see their parent gone and stop
    assert scratch[0].exists()  # left behind by the dead client

    again = subprocess.run(cmd, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    try:
        os.killpg(client.pid, signal.SIGKILL)  # any worker still lingering in the dead client's session
    except ProcessLookupError:
        pass

    assert again.returncode == 0, again.stderr[-2000:]
    assert not list(out.glob(".medfcn-dask-*"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case00.nii.gz", "case01.nii.gz", "case02.nii.gz"]
