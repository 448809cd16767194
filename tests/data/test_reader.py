"""Round trips: a scan written with nibabel, SimpleITK or pydicom reads back through medfcn with SimpleITK's voxels
and geometry, and with the values and grid that were written."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.data.reader import SCAN_SUFFIXES, read_scan, strip_suffix
from medfcn.data.scan import Scan
from medfcn.errors import DicomSeriesError, MedfcnError, ScanReadError, UnsupportedScanError
from tests.support.scans import (
    affine_from_codes,
    assert_same_grid,
    head_volume,
    lps_geometry,
    oblique_affine,
    shuffled_names,
    voxels_on,
)

AFFINES = {
    "RAS": affine_from_codes("RAS"),
    "LPS": affine_from_codes("LPS"),
    "LSA": affine_from_codes("LSA"),
    "oblique": oblique_affine(),
}


def sitk_array(image) -> np.ndarray:
    return np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))


def assert_matches_sitk(scan: Scan, path) -> None:
    """medfcn's reading equals SimpleITK's reading of the same file: voxels, size, spacing, origin, direction."""
    image = sitk.ReadImage(str(path))
    assert_same_grid(image, scan, atol=1e-5)
    np.testing.assert_allclose(scan.array, sitk_array(image), rtol=1e-6, atol=1e-4)


def assert_geometry(scan: Scan, affine: np.ndarray) -> None:
    spacing, origin, direction = lps_geometry(affine)
    np.testing.assert_allclose(scan.spacing, spacing, atol=1e-5)
    np.testing.assert_allclose(scan.origin, origin, atol=1e-4)
    np.testing.assert_allclose(scan.direction, direction, atol=1e-5)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-4)


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_float_round_trip(write_scan, orientation, suffix):
    array = head_volume()
    path = write_scan("t1" + suffix, AFFINES[orientation], array)
    scan = read_scan(path)
    assert scan.shape == (33, 37, 34) and scan.case == "t1" and scan.source == path
    assert scan.array.dtype == np.float32
    np.testing.assert_array_equal(scan.array, array)
    assert_geometry(scan, AFFINES[orientation])
    assert_matches_sitk(scan, path)
    assert scan.warnings == [] and scan.series_uid is None


@pytest.mark.parametrize("orientation", ["RAS", "LSA", "oblique"])
def test_nifti_int16_with_scl_slope(write_scan, orientation):
    stored = np.round(head_volume() / 2).astype(np.int16)
    path = write_scan("ct.nii.gz", AFFINES[orientation], stored, slope=0.5, intercept=-100.0)
    scan = read_scan(path)
    np.testing.assert_allclose(scan.array, stored * 0.5 - 100.0, atol=1e-4)
    assert scan.array.dtype == np.float32 == sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).dtype
    assert_geometry(scan, AFFINES[orientation])
    assert_matches_sitk(scan, path)


def test_nifti_integer_labels_stay_integer(write_scan):
    labels = (head_volume() > 500).astype(np.uint8)
    scan = read_scan(write_scan("mask.nii.gz", array=labels))
    assert scan.array.dtype == np.uint8
    np.testing.assert_array_equal(scan.array, labels)


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
def test_sitk_formats_round_trip(write_scan, orientation, suffix):
    array = head_volume(seed=3)
    path = write_scan("brain1_image" + suffix, AFFINES[orientation], array)
    scan = read_scan(path)
    assert scan.case == "brain1_image"
    np.testing.assert_array_equal(scan.array, array)
    assert_geometry(scan, AFFINES[orientation])
    assert_matches_sitk(scan, path)


def test_nrrd_int16(write_scan):
    array = np.round(head_volume()).astype(np.int16)
    scan = read_scan(write_scan("s.nrrd", AFFINES["LSA"], array))
    assert scan.array.dtype == np.int16
    np.testing.assert_array_equal(scan.array, array)


# -- DICOM ---------------------------------------------------------------------------------------------------------
def gdcm_read(folder):
    """SimpleITK's own reading of a one-series folder: GDCM finds and sorts the files."""
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


@pytest.mark.parametrize("writer", ["pydicom", "sitk"])
@pytest.mark.parametrize("orientation", ["LPS", "LSA", "LPI", "oblique"])
def test_dicom_series_round_trip(write_scan, writer, orientation):
    affine = affine_from_codes(orientation) if orientation != "oblique" else AFFINES["oblique"]
    truth = np.round(head_volume() / 4) * 2.0 - 50.0  # representable as stored * 2 - 50 in int16
    folder = write_scan(
        "series", affine, truth, slope=2.0, intercept=-50.0, dicom_writer=writer, names=shuffled_names(truth.shape[2])
    )
    (folder / "README.txt").write_text("not a DICOM file\n")
    scan = read_scan(folder)
    assert scan.case == "series" and scan.series_uid and scan.source == folder
    assert scan.shape[:2] == truth.shape[:2] and scan.shape[2] == truth.shape[2]
    # rescale slope and intercept applied
    assert float(scan.array.min()) == pytest.approx(float(truth.min()))
    # the same grid and voxels as GDCM's series reader (which sorts by position too) ...
    gdcm = gdcm_read(folder)
    assert_same_grid(gdcm, scan, atol=1e-4)
    np.testing.assert_allclose(scan.array, sitk_array(gdcm), atol=1e-3)
    # ... and the same physical grid and voxels as were written (the slice axis may be reversed)
    written = sitk.GetImageFromArray(np.transpose(truth, (2, 1, 0)))
    spacing, origin, direction = lps_geometry(affine)
    written.SetSpacing(spacing)
    written.SetOrigin(origin)
    written.SetDirection(tuple(direction.flatten()))
    np.testing.assert_allclose(scan.array, voxels_on(written, scan), atol=1e-3)
    np.testing.assert_allclose(scan.spacing, spacing, atol=1e-4)


def test_dicom_left_handed_series_comes_back_reversed_on_the_same_grid(write_scan):
    """LPI slices stored k = 0..n along -normal: read in normal order, so k is reversed, the grid is the same."""
    truth = np.round(head_volume())
    folder = write_scan("lpi", affine_from_codes("LPI"), truth)
    scan = read_scan(folder)
    np.testing.assert_array_equal(scan.array, truth[:, :, ::-1])
    spacing, origin, direction = lps_geometry(affine_from_codes("LPI"))
    np.testing.assert_allclose(scan.direction[:, 2], -direction[:, 2], atol=1e-6)
    last = np.asarray(origin) + (truth.shape[2] - 1) * spacing[2] * direction[:, 2]
    np.testing.assert_allclose(scan.origin, last, atol=1e-4)


def test_dicom_folder_with_two_series_needs_a_uid(tmp_path):
    a, b = head_volume(seed=1), head_volume(seed=2)[:, :, :20]
    write_dicom = __import__("tests.support.scans", fromlist=["x"]).write_dicom_pydicom
    for volume, uid, number, prefix in ((a, "1.2.3.4.2", 2, "b"), (b, "1.2.3.4.1", 1, "a")):
        write_dicom(
            tmp_path / "two",
            np.round(volume),
            affine_from_codes("LPS"),
            series_uid=uid,
            series_number=number,
            names=[f"{prefix}{k}.dcm" for k in range(volume.shape[2])],
        )
    with pytest.raises(DicomSeriesError, match="holds 2 DICOM series") as e:
        read_scan(tmp_path / "two")
    assert str(tmp_path / "two") in str(e.value)
    first = read_scan(tmp_path / "two", series_uid="1.2.3.4.1", case="two_1")
    second = read_scan(tmp_path / "two", series_uid="1.2.3.4.2")
    assert first.series_uid == "1.2.3.4.1" and first.case == "two_1" and first.shape == (33, 37, 20)
    np.testing.assert_array_equal(first.array, np.round(b))
    np.testing.assert_array_equal(second.array, np.round(a))
    with pytest.raises(DicomSeriesError, match="9.9.9"):
        read_scan(tmp_path / "two", series_uid="9.9.9")


def test_sample_data_reads_like_sitk():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "sample_data"
    scan = read_scan(root / "images" / "colin27.nii.gz")
    assert scan.shape == (181, 217, 181) and scan.case == "colin27"
    assert_matches_sitk(scan, root / "images" / "colin27.nii.gz")
    dicom = read_scan(root / "dicom" / "colin27_dicom")
    gdcm = gdcm_read(root / "dicom" / "colin27_dicom")
    assert_same_grid(gdcm, dicom)
    np.testing.assert_array_equal(dicom.array, sitk_array(gdcm))


# -- non-finite voxels (cleaned, with a recorded warning) ------------------------------------------------------
def test_non_finite_voxels_are_cleaned_with_a_warning(write_scan, caplog):
    array = head_volume()
    array[0, 0, 0], array[5, 6, 7], array[10, 10, 10] = np.nan, np.inf, -np.inf
    path = write_scan("nan.nii.gz", array=array)
    with caplog.at_level(logging.WARNING, logger="medfcn.data.reader"):
        scan = read_scan(path)
    assert np.isfinite(scan.array).all()
    low = float(np.nanmin(np.where(np.isfinite(array), array, np.nan)))
    assert scan.array[0, 0, 0] == scan.array[5, 6, 7] == scan.array[10, 10, 10] == pytest.approx(low)
    finite = np.isfinite(array)
    np.testing.assert_array_equal(scan.array[finite], array[finite])
    assert len(scan.warnings) == 1 and "3 non-finite voxels" in scan.warnings[0] and str(path) in scan.warnings[0]
    assert any("non-finite" in r.getMessage() for r in caplog.records)


def test_all_nan_scan_is_refused(write_scan):
    path = write_scan("allnan.nrrd", array=np.full((8, 9, 10), np.nan, np.float32))
    with pytest.raises(MedfcnError, match="no finite voxel") as e:
        read_scan(path)
    assert str(path) in str(e.value)


def test_strip_suffix():
    assert strip_suffix("t1.nii.gz") == "t1"
    assert strip_suffix("T1.NII.GZ") == "T1"
    assert strip_suffix("brain1_image.nrrd") == "brain1_image"
    assert strip_suffix("a.b.mha") == "a.b"
    assert strip_suffix("notes.txt") == "notes.txt"
    assert ".nii.gz" in SCAN_SUFFIXES and ".mhd" in SCAN_SUFFIXES


def test_dicom_fractional_rescale_gives_floats(write_scan):
    truth = np.round(head_volume() * 4) * 0.25 - 1024.5
    scan = read_scan(write_scan("ct", affine_from_codes("LPS"), truth, slope=0.25, intercept=-1024.5))
    assert np.issubdtype(scan.array.dtype, np.floating)
    np.testing.assert_allclose(scan.array, truth, atol=1e-3)


# -- bad input: one-line errors that name the file --------------------------------------------------------------
def assert_one_line_error(excinfo, path, cls=MedfcnError) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, cls), type(excinfo.value)
    assert "\n" not in message and str(path) in message, message
    return message


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _text(path):
    path.write_text("patient notes: not an image\n")
    return path


def _nifti(path, array):
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, affine_from_codes("RAS")), str(path))
    return path


def _sitk_file(path, image):
    sitk.WriteImage(image, str(path))
    return path


def _four_d():
    return sitk.JoinSeries([sitk.GetImageFromArray(np.transpose(head_volume(shape=(12, 13, 14)), (2, 1, 0)))] * 3)


BAD_FILES = {
    "empty .nii.gz": (lambda d, w: (d / "empty.nii.gz").touch() or d / "empty.nii.gz", "empty file"),
    "empty .nrrd": (lambda d, w: (d / "empty.nrrd").touch() or d / "empty.nrrd", "empty file"),
    "truncated .nii.gz": (lambda d, w: _truncate(w("t.nii.gz")), "not a readable NIfTI"),
    "truncated .nii.gz header": (lambda d, w: _truncate(w("t.nii.gz"), 0.001), "not a readable NIfTI"),
    "truncated .nii": (lambda d, w: _truncate(w("t.nii")), "truncated"),
    "truncated .nrrd": (lambda d, w: _truncate(w("t.nrrd")), "not a readable image"),
    "truncated .mha": (lambda d, w: _truncate(w("t.mha")), "truncated"),
    ".mhd without its data": (lambda d, w: (w("t.mhd").with_suffix(".raw").unlink(), d / "t.mhd")[1], "missing"),
    "text as .nii.gz": (lambda d, w: _text(d / "notes.nii.gz"), "not a readable NIfTI"),
    "text as .nii": (lambda d, w: _text(d / "notes.nii"), "not a readable NIfTI"),
    "text as .nrrd": (lambda d, w: _text(d / "notes.nrrd"), "no image reader recognises"),
    "text as .mha": (lambda d, w: _text(d / "notes.mha"), "no image reader recognises"),
    "4-D .nii.gz": (lambda d, w: _nifti(d / "fmri.nii.gz", np.zeros((12, 13, 14, 3), np.float32)), "4-D image"),
    "4-D .nrrd": (lambda d, w: _sitk_file(d / "fmri.nrrd", _four_d()), "4-D image"),
    "2-D .nii.gz": (lambda d, w: _nifti(d / "xray.nii.gz", np.zeros((20, 21), np.float32)), "2-D image"),
    "one-slice .nii.gz": (lambda d, w: _nifti(d / "slice.nii.gz", np.zeros((20, 21, 1), np.float32)), "2-D image"),
    "2-D .mha": (lambda d, w: _sitk_file(d / "xray.mha", sitk.Image(20, 21, sitk.sitkFloat32)), "2-D image"),
    "vector .nrrd": (
        lambda d, w: _sitk_file(d / "rgb.nrrd", sitk.Image([9, 9, 9], sitk.sitkVectorFloat32, 3)),
        "vector image",
    ),
    "missing file": (lambda d, w: d / "nope.nii.gz", "no such file"),
    "folder without scans": (lambda d, w: (d / "nothing").mkdir() or _text(d / "nothing" / "a.txt").parent, "no DICOM"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_gives_one_line_error_naming_it(tmp_path, write_scan, case):
    make, expected = BAD_FILES[case]
    path = make(tmp_path, write_scan)
    with pytest.raises(MedfcnError) as e:
        read_scan(path)
    message = assert_one_line_error(e, path)
    assert expected in message
    assert not isinstance(e.value, DicomSeriesError)
    assert ("-D image" in expected or "vector" in expected) == isinstance(e.value, UnsupportedScanError)
    assert isinstance(e.value, UnsupportedScanError | ScanReadError)
