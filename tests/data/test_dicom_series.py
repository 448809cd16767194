"""DICOM series: found by SeriesInstanceUID, ordered along the slice normal (never by name), irregular ones refused."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medfcn.data.dicom_series import find_series, is_dicom_file, list_series
from medfcn.data.reader import read_scan
from medfcn.errors import DicomSeriesError, MedfcnError
from tests.support.scans import affine_from_codes, head_volume, oblique_affine, shuffled_names, write_dicom_pydicom

SHAPE = (16, 17, 12)


def series(folder, affine=None, *, seed=0, names=None, **kwargs):
    vol = np.round(head_volume(SHAPE, seed))
    names = names or shuffled_names(SHAPE[2], seed)
    return write_dicom_pydicom(
        folder, vol, affine_from_codes("LPS") if affine is None else affine, names=names, **kwargs
    )


def depth(path, normal):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return float(np.asarray(ds.ImagePositionPatient, float) @ normal)


@pytest.mark.parametrize(
    "affine", [affine_from_codes("LPS"), affine_from_codes("LPI"), oblique_affine()], ids=["LPS", "LPI", "oblique"]
)
def test_files_sorted_along_the_slice_normal_not_by_name(tmp_path, affine):
    written = series(tmp_path, affine)
    (tmp_path / "README.txt").write_text("a note beside the slices\n")
    (tmp_path / "broken.dcm").write_bytes(b"not really DICOM")
    found = find_series(tmp_path)
    assert len(found) == 1 and len(found[0].files) == SHAPE[2]
    ds = pydicom.dcmread(written[0], stop_before_pixels=True)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    depths = [depth(p, normal) for p in found[0].files]
    assert np.all(np.diff(depths) > 0)
    assert [p.name for p in found[0].files] != sorted(p.name for p in found[0].files)  # name order is not used
    assert found[0].uid == str(ds.SeriesInstanceUID) and found[0].folder == tmp_path


def test_is_dicom_file(tmp_path):
    written = series(tmp_path, names=[f"IM{k}" for k in range(SHAPE[2])])  # no suffix: found by the preamble
    assert is_dicom_file(written[0])
    (tmp_path / "README.txt").write_text("x" * 200)
    assert not is_dicom_file(tmp_path / "README.txt")
    assert not is_dicom_file(tmp_path / "nope")
    assert is_dicom_file(tmp_path / "anything.dcm")  # by name; its header is checked later
    assert len(find_series(tmp_path)[0].files) == SHAPE[2]


def test_two_series_in_stable_order(tmp_path):
    series(tmp_path, series_uid="1.2.3.9", series_number=2, seed=1, names=[f"z{k}.dcm" for k in range(SHAPE[2])])
    series(tmp_path, series_uid="1.2.3.10", series_number=7, seed=2, names=[f"a{k}.dcm" for k in range(SHAPE[2])])
    series(tmp_path, series_uid="1.2.3.8", series_number=2, seed=3, names=[f"m{k}.dcm" for k in range(SHAPE[2])])
    found = find_series(tmp_path)
    assert [s.uid for s in found] == ["1.2.3.8", "1.2.3.9", "1.2.3.10"]  # SeriesNumber, then UID
    assert [s.number for s in found] == [2, 2, 7]
    assert all(len(s.files) == SHAPE[2] for s in found)
    assert {p.name[0] for p in found[2].files} == {"a"}


def test_missing_slice_is_refused(tmp_path):
    written = series(tmp_path / "gap")
    ipp = [pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2] for p in written]
    middle = written[int(np.argsort([float(v) for v in ipp])[5])]
    middle.unlink()
    with pytest.raises(DicomSeriesError, match="slice is probably missing") as e:
        find_series(tmp_path / "gap")
    assert "\n" not in str(e.value) and str(tmp_path / "gap") in str(e.value)
    with pytest.raises(DicomSeriesError) as e:
        read_scan(tmp_path / "gap")
    assert isinstance(e.value, MedfcnError) and str(tmp_path / "gap") in str(e.value)


def test_a_broken_series_does_not_hide_the_others(tmp_path):
    series(tmp_path, series_uid="1.2.3.1", series_number=1, names=[f"a{k}.dcm" for k in range(SHAPE[2])])
    series(tmp_path, series_uid="1.2.3.2", series_number=2, names=[f"b{k}.dcm" for k in range(SHAPE[2])])
    (tmp_path / "b4.dcm").unlink()
    good, broken = list_series(tmp_path)
    assert good.error is None and len(good.files) == SHAPE[2]
    assert broken.uid == "1.2.3.2" and "missing" in broken.error and len(broken.files) == SHAPE[2] - 1
    with pytest.raises(DicomSeriesError, match="1.2.3.2"):
        find_series(tmp_path)
    assert read_scan(tmp_path, series_uid="1.2.3.1").shape == SHAPE
    with pytest.raises(DicomSeriesError, match="missing") as e:
        read_scan(tmp_path, series_uid="1.2.3.2")
    assert str(tmp_path) in str(e.value)


def test_duplicate_slice_is_refused(tmp_path):
    written = series(tmp_path)
    ds = pydicom.dcmread(written[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "copy.dcm")
    with pytest.raises(DicomSeriesError, match="duplicate slice"):
        find_series(tmp_path)


def test_mixed_slice_sizes_and_orientations_are_refused(tmp_path):
    written = series(tmp_path / "sizes")
    ds = pydicom.dcmread(written[2])
    ds.Rows = 8
    ds.PixelData = ds.PixelData[: 8 * SHAPE[0] * 2]
    ds.save_as(written[2])
    with pytest.raises(DicomSeriesError, match="different sizes"):
        find_series(tmp_path / "sizes")
    written = series(tmp_path / "tilted")
    ds = pydicom.dcmread(written[4])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]
    ds.save_as(written[4])
    with pytest.raises(DicomSeriesError, match="different orientations"):
        find_series(tmp_path / "tilted")


def test_slice_without_position_is_refused_naming_the_file(tmp_path):
    written = series(tmp_path)
    ds = pydicom.dcmread(written[1])
    del ds.ImagePositionPatient
    ds.save_as(written[1])
    with pytest.raises(DicomSeriesError, match=written[1].name):
        find_series(tmp_path)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    assert find_series(tmp_path) == []
