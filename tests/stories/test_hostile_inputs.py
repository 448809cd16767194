"""Files a hostile user or an unlucky lab produces: each is read right or refused with a one-line error naming the
file and the cause (DICOM geometry, other tools' own test files, odd headers, models that would exhaust memory,
more than 255 classes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from medfcn.cli import main
from medfcn.data.dicom_series import find_series, is_dicom_file, list_series
from medfcn.data.reader import read_scan
from medfcn.errors import DicomSeriesError, MedfcnError, ModelError, ScanReadError, UnsupportedScanError
from medfcn.model.checkpoint import ModelCard, load_model, save_model
from medfcn.model.network import FCN
from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom

SHAPE = (16, 17, 12)
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"  # files from nibabel's own test suite (in its wheel)


def series(folder: Path, **kwargs) -> list[Path]:
    return write_dicom_pydicom(folder, np.round(head_volume(SHAPE)), affine_from_codes("LPS"), **kwargs)


def edit(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


def one_line(e: pytest.ExceptionInfo, *names: str) -> str:
    text = str(e.value)
    assert "\n" not in text and all(n in text for n in names), text
    return text


# -- DICOM geometry (point 8) ---------------------------------------------------------------------------------------
def test_gantry_tilt_is_refused_naming_it(tmp_path):
    files = series(tmp_path)
    for k, f in enumerate(sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))):
        ipp = [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
        edit(f, ImagePositionPatient=[ipp[0], ipp[1] + 0.5 * k, ipp[2]])  # each slice shifted: a tilted gantry
    with pytest.raises(DicomSeriesError) as e:
        find_series(tmp_path)
    assert "gantry tilt" in one_line(e, str(tmp_path))


def test_non_finite_position_is_refused_naming_the_file(tmp_path):
    files = series(tmp_path)
    edit(files[4], ImagePositionPatient=["0", "nan", "3"])
    with pytest.raises(DicomSeriesError) as e:
        find_series(tmp_path)
    assert "non-finite ImagePositionPatient" in one_line(e, files[4].name)


def test_mixed_pixel_spacing_is_refused(tmp_path):
    files = series(tmp_path)
    edit(files[2], PixelSpacing=["0.5", "0.5"])
    with pytest.raises(DicomSeriesError) as e:
        find_series(tmp_path)
    assert "different PixelSpacing" in one_line(e, str(tmp_path))


def test_non_orthogonal_orientation_is_refused(tmp_path):
    files = series(tmp_path)
    for f in files:
        edit(f, ImageOrientationPatient=["1", "0", "0", "0.3", "0.95", "0"])
    with pytest.raises(DicomSeriesError) as e:
        find_series(tmp_path)
    assert "not orthogonal unit vectors" in one_line(e, files[0].parent.name)


def test_missing_pixel_spacing_is_read_with_a_warning_in_the_manifest(tmp_path):
    from medfcn.batch.run import run_batch
    from medfcn.inference.settings import InferenceSettings
    from tests.support.batch import train_tiny_model

    files = series(tmp_path / "in" / "ser")
    for f in files:
        edit(f, PixelSpacing=None)
    [s] = list_series(tmp_path / "in" / "ser")
    assert s.error is None and "no PixelSpacing" in s.warnings[0]
    model = train_tiny_model(tmp_path / "m.safetensors")
    manifest = run_batch(
        [tmp_path / "in"], tmp_path / "out", model=model, settings=InferenceSettings(device="cpu"), progress=False
    )
    [case] = manifest.cases
    assert case.status == "ok" and any("no PixelSpacing" in w for w in case.warnings)
    assert any(
        "no PixelSpacing" in w
        for w in json.loads((tmp_path / "out" / "manifest.json").read_text())["cases"][0]["warnings"]
    )


def test_dicom_without_preamble_is_read_like_gdcm_reads_it(tmp_path):
    files = series(tmp_path / "with")
    (tmp_path / "raw").mkdir()
    for f in files:  # the same data sets without the 128-byte preamble and "DICM"
        ds = pydicom.dcmread(f)
        ds.preamble = None
        raw = tmp_path / "raw" / f.name.replace(".dcm", "")
        ds.save_as(raw, enforce_file_format=False)
        assert raw.read_bytes()[128:132] != b"DICM"
    assert all(is_dicom_file(p) for p in (tmp_path / "raw").iterdir())
    scan = read_scan(tmp_path / "raw")
    reference = read_scan(tmp_path / "with")
    assert scan.grid.differences(reference.grid) == [] and np.array_equal(scan.array, reference.array)
    gdcm = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "raw")), imageIO="GDCMImageIO")
    assert tuple(gdcm.GetSize()) == scan.shape


# -- files from nibabel's own test data (point 9) ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii", "resampled_anat_moved.nii"])
def test_big_endian_nifti_reads_like_nibabel(name):
    path = NIBABEL_DATA / name
    img = nib.load(path)
    assert img.get_data_dtype().byteorder == ">"  # the point of the test: a big-endian file
    scan = read_scan(path)
    assert scan.array.dtype.isnative
    np.testing.assert_allclose(scan.affine, img.affine, atol=1e-4)
    expected = np.asanyarray(img.dataobj)
    finite = np.isfinite(expected)  # resampled_anat_moved.nii holds NaN outside the field of view: cleaned
    np.testing.assert_array_equal(scan.array[finite], expected[finite])
    assert np.all(scan.array[~finite] == expected[finite].min())


def test_three_d_nifti2_reads_with_its_geometry(tmp_path):
    affine = affine_from_codes("LSA")
    vol = head_volume(SHAPE)
    nib.save(nib.Nifti2Image(vol, affine), tmp_path / "t1.nii.gz")
    scan = read_scan(tmp_path / "t1.nii.gz")
    np.testing.assert_allclose(scan.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(scan.array, vol)


# -- odd headers get a message naming the file and the cause (point 12) ----------------------------------------------
def test_rgb_nifti_is_refused_as_rgb(tmp_path):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    with pytest.raises(UnsupportedScanError) as e:
        read_scan(tmp_path / "rgb.nii.gz")
    assert "RGB" in one_line(e, "rgb.nii.gz")


def test_nan_sform_and_negative_pixdim_are_refused_at_read(tmp_path):
    nib.save(nib.Nifti1Image(head_volume(SHAPE), np.eye(4)), tmp_path / "nan.nii")
    raw = bytearray((tmp_path / "nan.nii").read_bytes())
    raw[280:328] = np.full(12, np.nan, "<f4").tobytes()  # srow_x, srow_y, srow_z (the sform) all NaN
    (tmp_path / "nan.nii.gz").write_bytes(__import__("gzip").compress(bytes(raw)))
    with pytest.raises(ScanReadError) as e:
        read_scan(tmp_path / "nan.nii.gz")
    assert "NaN" in one_line(e, "nan.nii.gz") and "[[" not in str(e.value)
    img = nib.Nifti1Image(head_volume(SHAPE), None)
    img.header["pixdim"][1:4] = [-1.0, 1.0, 1.0]
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, tmp_path / "neg.nii.gz")
    try:
        scan = read_scan(tmp_path / "neg.nii.gz")
    except ScanReadError as err:
        assert "neg.nii.gz" in str(err) and ("spacing" in str(err) or "pixdim" in str(err))
    else:  # read: then its grid is one a label map can be written on
        from medfcn.data.writer import write_labels

        write_labels(np.zeros(scan.shape, np.uint8), scan, tmp_path / "labels.nii.gz")


def test_unreadable_file_says_permission_denied():
    import tempfile

    folder = Path(tempfile.mkdtemp())  # reachable by another user, unlike pytest's tmp_path
    try:
        folder.chmod(0o755)
        path = folder / "locked.nii.gz"
        nib.save(nib.Nifti1Image(head_volume(SHAPE), np.eye(4)), path)
        read_scan(path)  # readable: every module the reader needs is imported now
        path.chmod(0)
        as_root = os.geteuid() == 0
        if as_root:  # root reads any file: read as nobody (the saved user id stays root, so it comes back)
            os.seteuid(65534)
        try:
            with pytest.raises(ScanReadError) as e:
                read_scan(path)
        finally:
            if as_root:
                os.seteuid(0)
        assert "permission denied" in one_line(e, str(path))
    finally:
        __import__("shutil").rmtree(folder, ignore_errors=True)


def test_one_voxel_image_is_not_called_2d(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((1, 1, 1), np.float32), np.eye(4)), tmp_path / "dot.nii.gz")
    with pytest.raises(UnsupportedScanError) as e:
        read_scan(tmp_path / "dot.nii.gz")
    assert "1 x 1 x 1" in one_line(e, "dot.nii.gz") and "2-D" not in str(e.value)


# -- memory from tiny files (point 11) --------------------------------------------------------------------------------
def test_huge_field_of_view_is_refused_naming_the_file(tmp_path):
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    nib.save(nib.Nifti1Image(head_volume((20, 20, 20)), np.diag([1e4, 1e4, 1e4, 1])), tmp_path / "huge.nii.gz")
    scan = read_scan(tmp_path / "huge.nii.gz")
    with pytest.raises(UnsupportedScanError) as e:
        Segmenter(None, InferenceSettings(device="cpu")).segment(scan)
    assert "voxel size" in one_line(e, "huge.nii.gz")


def _tiny_model(tmp_path, name="m.safetensors", classes=2, **card_kw):
    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=classes, width=4, max_width=8, depth=2, variant="fcn16s", stem_stride=1)
    labels = {"background": 0} | {f"c{i}": i for i in range(1, classes)}
    return save_model(tmp_path / name, net.eval(), ModelCard(network=net.config.to_dict(), labels=labels, **card_kw))


def _edit_card(src: Path, dst: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    card = json.loads(meta["card"])
    for key, value in changes.items():
        if key.startswith("network."):
            card["network"][key.split(".", 1)[1]] = value
        else:
            card[key] = value
    save_file(tensors, str(dst), metadata={**meta, "card": json.dumps(card)})
    return dst


BAD_CARDS = {
    "normalisation": ({"normalisation": "magic"}, "magic"),
    "labels vs classes": ({"labels": {"background": 0, "a": 1, "b": 2}}, "3 labels"),
    "in_channels": ({"network.in_channels": 4}, "in_channels"),
    "orientation": ({"orientation": "XYZ"}, "orientation"),
    "spacing": ({"spacing": [1.5, "nan", 1.5]}, "spacing"),
    "postprocess": ({"postprocess": ["rm -rf"]}, "post-processing"),
    "huge width": ({"network.width": 60000, "network.max_width": 60000}, "width"),
    "deep": ({"network.depth": 40}, "depth"),
    "weights of another size": ({"network.width": 8}, "weights do not fit"),
}


@pytest.mark.parametrize("case", list(BAD_CARDS))
def test_an_unusable_card_is_refused_whole_at_load(tmp_path, case, capsys):
    changes, expected = BAD_CARDS[case]
    bad = _edit_card(_tiny_model(tmp_path), tmp_path / "bad.safetensors", **changes)
    with pytest.raises(ModelError) as e:
        load_model(bad)
    assert expected in one_line(e, str(bad))
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and err.count("\n") == 1


# -- more than 255 classes (point 7) ----------------------------------------------------------------------------------
def test_more_than_255_classes_are_written_as_uint16(tmp_path):
    from medfcn.batch.run import run_batch
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings
    from tests.support.batch import read_labels

    model = _tiny_model(tmp_path, classes=300)
    with torch.no_grad():  # a classifier that favours high class ids, so labels above 255 appear
        net = load_model(model).network
        for p in net.parameters():
            if p.ndim == 1 and p.shape[0] == 300:
                p.copy_(torch.linspace(0, 3, 300))
        save_model(model, net, load_model(model).card)
    nib.save(nib.Nifti1Image(head_volume((20, 22, 18)), np.diag([1.5, 1.5, 1.5, 1])), tmp_path / "in.nii.gz")
    expected = Segmenter(model, InferenceSettings(device="cpu")).segment(read_scan(tmp_path / "in.nii.gz"))
    assert expected.max() > 255 and expected.dtype == np.uint16
    manifest = run_batch(
        [tmp_path / "in.nii.gz"],
        tmp_path / "out",
        model=model,
        settings=InferenceSettings(device="cpu"),
        progress=False,
    )
    assert manifest.exit_code == 0, manifest.cases[0].error
    assert nib.load(tmp_path / "out" / "in.nii.gz").get_data_dtype() == np.uint16
    assert np.array_equal(read_labels(tmp_path / "out" / "in.nii.gz"), expected)


def test_error_messages_escape_terminal_control_characters():
    assert str(MedfcnError("a\x1b[2Jb\x07c")) == "a\\x1b[2Jb\\x07c"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_promising_more_voxels_than_the_file_holds_is_refused_before_allocating(tmp_path, suffix):
    import gzip

    nib.save(nib.Nifti1Image(head_volume(SHAPE), np.eye(4)), tmp_path / "a.nii")
    raw = bytearray((tmp_path / "a.nii").read_bytes())
    raw[42:48] = np.asarray([30000, 30000, 30000], "<i2").tobytes()  # dim[1..3]: 54 TB of float32 voxels
    path = tmp_path / f"big{suffix}"
    path.write_bytes(gzip.compress(bytes(raw)) if suffix == ".nii.gz" else bytes(raw))
    with pytest.raises(ScanReadError) as e:
        read_scan(path)
    assert "header promises" in one_line(e, path.name)
