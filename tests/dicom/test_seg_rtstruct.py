"""DICOM SEG and RTSTRUCT written for a DICOM series: read back by highdicom, rt-utils and medfcn, validated by
dciodvfy (Debian's dicom3tools: a hard dependency of these tests), referencing exactly the source's UIDs."""

from __future__ import annotations

import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medfcn.batch.outputs import OutputFormat
from medfcn.data.reader import read_scan
from medfcn.dicom.refs import SeriesIndex
from medfcn.dicom.rtstruct import fill_contours, mask_contours, read_rtstruct
from medfcn.dicom.seg import Algorithm, read_seg, segments_of
from medfcn.errors import DicomSeriesError, UnsupportedScanError
from tests.support.dicom import ALL, LABELS, SHAPE, dciodvfy_errors, element, make_series, synthetic_labels, write_all  # noqa: E402
from tests.support.scans import (
    affine_from_codes,
    head_volume,
    oblique_affine,
    write_dicom_pydicom,
)


def by_position(nifti: Path, folder: Path, frames: dict[str, np.ndarray]) -> np.ndarray:
    """Frames ``{SOPInstanceUID: (rows, cols)}`` placed into the NIfTI's (z, y, x) array by SimpleITK's own mapping of
    each source slice's ImagePositionPatient (independent of medfcn's geometry code)."""
    img = sitk.ReadImage(str(nifti))
    out = np.zeros(sitk.GetArrayFromImage(img).shape, np.uint8)
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        if ds.SOPInstanceUID in frames:
            k = img.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
            out[k] = frames[ds.SOPInstanceUID]
    return out


@pytest.mark.parametrize("kind", ["lps_shuffled", "oblique_slope", "sitk_lpi", "non_square_pixels"])
def test_seg_round_trip_is_exact_and_references_the_source(tmp_path, kind):
    folder = make_series(kind, tmp_path / "series")
    scan = read_scan(folder)
    labels = synthetic_labels(scan)
    files = write_all(scan, labels, tmp_path / "out")
    nifti, seg_path = files[OutputFormat.NIFTI], files[OutputFormat.DICOM_SEG]
    source = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in folder.iterdir())}
    first = next(iter(source.values()))
    seg = hd.seg.segread(seg_path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [first.SeriesInstanceUID]
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    referenced = {str(u[2]) for u in seg.get_source_image_uids()}
    assert referenced == set(source)
    frame_refs = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert set(frame_refs) == set(source)
    # a frame per segment and source slice, empty ones too: the SEG alone holds the series' whole grid
    assert seg.NumberOfFrames == len(frame_refs) == 2 * len(source)
    descriptions = {int(d.SegmentNumber): d for d in seg.SegmentSequence}
    assert descriptions[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"  # SNOMED CT brain
    assert descriptions[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert descriptions[2].SegmentLabel == "lesion"
    algo = descriptions[1].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "test-model" and algo.AlgorithmVersion == "ab" * 32
    # highdicom's reading, placed by SimpleITK, equals the NIfTI voxel for voxel
    uids = sorted(referenced)
    px = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    frames = {u: (px[n, :, :, 0] > 0) * 1 + (px[n, :, :, 1] > 0) * 2 for n, u in enumerate(uids)}
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti)))
    assert np.array_equal(by_position(nifti, folder, frames), expected)
    # and medfcn's own reading on the series' grid
    assert np.array_equal(read_seg(seg_path, SeriesIndex([folder])).array, labels)


@pytest.mark.parametrize("kind", ["lps_shuffled", "oblique_slope", "sitk_lpi", "non_square_pixels"])
def test_rtstruct_round_trip_and_rt_utils_reading(tmp_path, kind):
    from rt_utils import RTStructBuilder

    folder = make_series(kind, tmp_path / "series")
    scan = read_scan(folder)
    labels = synthetic_labels(scan)
    rt_path = write_all(scan, labels, tmp_path / "out", (OutputFormat.RTSTRUCT,))[OutputFormat.RTSTRUCT]
    ds = pydicom.dcmread(rt_path)
    src = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    ref_series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == src.SeriesInstanceUID
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["brain", "lesion"]
    assert np.array_equal(read_rtstruct(rt_path, SeriesIndex([folder])).array, labels)  # exact
    if kind == "non_square_pixels":
        return  # rt-utils 1.2.7 swaps the two pixel spacings and the mask's rows and columns: not a reference here
    rt = RTStructBuilder.create_from(dicom_series_path=str(folder), rt_struct_path=str(rt_path))
    img = sitk.ReadImage(str(write_all(scan, labels, tmp_path / "nii", (OutputFormat.NIFTI,))[OutputFormat.NIFTI]))
    truth = sitk.GetArrayFromImage(img) > 0
    got = np.zeros_like(truth)
    brain = rt.get_roi_mask_by_name("brain") | rt.get_roi_mask_by_name("lesion")  # (rows, cols, slices)
    for n, d in enumerate(rt.series_data):
        got[img.TransformPhysicalPointToIndex([float(v) for v in d.ImagePositionPatient])[2]] |= brain[:, :, n]
    dice = 2 * (got & truth).sum() / (got.sum() + truth.sum())
    assert dice >= 0.98, dice


@pytest.mark.parametrize("fmt", [OutputFormat.DICOM_SEG, OutputFormat.RTSTRUCT])
def test_dciodvfy_finds_no_error_the_source_does_not_have(tmp_path, fmt):
    assert shutil.which("dciodvfy"), "dciodvfy (Debian package dicom3tools) must be on PATH"
    folder = make_series("oblique_slope", tmp_path / "series")
    scan = read_scan(folder)
    path = write_all(scan, synthetic_labels(scan), tmp_path / "out", (fmt,))[fmt]
    source_missing = {element(e) for e in dciodvfy_errors(next(folder.iterdir()))}
    assert "PatientBirthDate" in source_missing  # the synthetic source is incomplete: the test is not vacuous
    errors = [e for e in dciodvfy_errors(path) if element(e) not in source_missing]
    assert errors == []
    assert not [e for e in dciodvfy_errors(path) if element(e) is None]  # nothing but copied-through gaps


def test_two_series_folder_references_only_its_own_series(tmp_path):
    folder = tmp_path / "two"
    vol = np.round(head_volume(SHAPE))
    write_dicom_pydicom(
        folder,
        vol,
        affine_from_codes("LPS"),
        series_uid="1.2.3.1",
        series_number=1,
        names=[f"a{k}.dcm" for k in range(SHAPE[2])],
    )
    write_dicom_pydicom(
        folder,
        vol,
        oblique_affine(),
        series_uid="1.2.3.2",
        series_number=2,
        names=[f"b{k}.dcm" for k in range(SHAPE[2])],
    )
    scan = read_scan(folder, series_uid="1.2.3.2")
    files = write_all(scan, synthetic_labels(scan), tmp_path / "out", ALL[1:])
    own = {pydicom.dcmread(f).SOPInstanceUID for f in folder.glob("b*.dcm")}
    seg = hd.seg.segread(files[OutputFormat.DICOM_SEG])
    assert {str(u[2]) for u in seg.get_source_image_uids()} <= own
    rt = pydicom.dcmread(files[OutputFormat.RTSTRUCT])
    contour_refs = {
        c.ContourImageSequence[0].ReferencedSOPInstanceUID for r in rt.ROIContourSequence for c in r.ContourSequence
    }
    assert contour_refs <= own
    # the SEG and RTSTRUCT put beside the series are not taken for a third series
    shutil.copy(files[OutputFormat.DICOM_SEG], folder / "seg.dcm")
    shutil.copy(files[OutputFormat.RTSTRUCT], folder / "rt.dcm")
    from medfcn.data.dicom_series import list_series

    assert [s.uid for s in list_series(folder)] == ["1.2.3.1", "1.2.3.2"]


def test_series_without_frame_of_reference_is_refused_in_one_line(tmp_path):
    folder = make_series("lps_shuffled", tmp_path / "series")
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        del ds.FrameOfReferenceUID
        ds.save_as(f)
    scan = read_scan(folder)
    with pytest.raises(DicomSeriesError, match="no FrameOfReferenceUID") as err:
        write_all(scan, synthetic_labels(scan), tmp_path / "out", (OutputFormat.DICOM_SEG,))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "out").glob("*"))  # nothing written, not even a partial


def test_a_scan_not_read_from_dicom_is_refused(tmp_path, write_scan):
    scan = read_scan(write_scan("t1.nii.gz"))
    with pytest.raises(UnsupportedScanError, match="not a DICOM series"):
        write_all(scan, np.zeros(scan.shape, np.uint8), tmp_path / "out", (OutputFormat.DICOM_SEG,))


def test_contours_fill_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    for n in range(60):
        mask = rng.random((13, 17)) > (0.3 + 0.4 * (n % 3) / 2)  # noise: diagonal touches, holes, single pixels
        assert np.array_equal(fill_contours(mask_contours(mask), mask.shape), mask)
    ring = np.zeros((5, 5), bool)
    ring[1:4, 1:4] = True
    ring[2, 2] = False  # a hole: an outer and an inner contour through the ring's pixel centres
    contours = mask_contours(ring)
    assert len(contours) == 2 and all(set(map(tuple, c)) == {(1, 1), (3, 1), (3, 3), (1, 3)} for c in contours)


def test_segments_of_a_card_skip_background_and_use_card_codes():
    segs = segments_of(
        LABELS,
        {
            "lesion": {
                "category": ["49755003", "SCT", "Morphologically Altered Structure"],
                "type": ["52988006", "SCT", "Lesion"],
            }
        },
    )
    assert [(s.number, s.name, s.type[0]) for s in segs] == [(1, "brain", "12738006"), (2, "lesion", "52988006")]
    assert Algorithm().name == "medfcn"
