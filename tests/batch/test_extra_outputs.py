"""``medfcn segment --masked-image --border MM --statistics`` through the batch (medfcn.batch.outputs, cases, run).

Real NIfTI files with scaling (scl_slope/scl_inter), a 4-D file of one volume and an NRRD, segmented by the tiny
model; every figure is checked against an independent computation: the masked image against the input file times
the label map file (both read with nibabel), the border against SimpleITK's Maurer distance map of the label map
written without a border, the statistics against SimpleITK's LabelStatisticsImageFilter and
LabelShapeStatisticsImageFilter on the files (read by SimpleITK, not by medfcn).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.batch.manifest import Status
from medfcn.batch.outputs import OutputOptions
from medfcn.batch.run import run_batch
from medfcn.cli import main
from medfcn.errors import UsageError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import read_labels
from tests.support.scans import affine_from_codes, head_volume, write_scan_file

CPU = InferenceSettings(device="cpu")
SHAPE = (24, 28, 20)


def scaled_nifti(path: Path, seed: int, slope: float, inter: float, dtype=np.int16, four_d: bool = False) -> Path:
    """A head stored as ``dtype`` with ``scl_slope``/``scl_inter`` (physical = stored x slope + inter)."""
    stored = np.round(head_volume(SHAPE, seed=seed) / 4).astype(dtype)
    data = stored[..., None] if four_d else stored
    image = nib.Nifti1Image(data, affine_from_codes("LPS"))
    image.header.set_data_dtype(dtype)
    image.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    scaled_nifti(folder / "scaled.nii.gz", 0, slope=2.0, inter=0.0)
    scaled_nifti(folder / "offset.nii.gz", 1, slope=2.0, inter=-10.0)  # stored 5 is physical 0
    scaled_nifti(folder / "fourd.nii.gz", 2, slope=1.0, inter=0.0, dtype=np.uint16, four_d=True)
    write_scan_file(folder / "other.nrrd", head_volume((26, 24, 18), seed=5), affine_from_codes("RAS"))
    return folder


def run(inputs: Path, out: Path, model_file: Path, **options) -> object:
    return run_batch([inputs], out, model=model_file, settings=CPU, progress=False, options=OutputOptions(**options))


def test_masked_image_is_the_input_times_the_mask_with_its_type_and_scaling(tmp_path, inputs, model_file):
    out = tmp_path / "out"
    manifest = run(inputs, out, model_file, masked_image=True)
    assert manifest.exit_code == 0 and [c.status for c in manifest.cases] == [Status.OK] * 4
    for entry in manifest.cases:
        masked = out / f"{entry.case}.masked.nii.gz"
        assert str(masked) in entry.outputs and masked.name in entry.output_sha256
        mask = read_labels(entry.output) != 0
        assert 0 < mask.sum() < mask.size
        got = nib.load(str(masked))
        if entry.case == "other":  # NRRD: the voxels as read, on the same grid, written as NIfTI
            ref = sitk.GetArrayFromImage(sitk.ReadImage(entry.input)).transpose(2, 1, 0)
            assert np.array_equal(np.asanyarray(got.dataobj), np.where(mask, ref, 0))
            assert np.allclose(got.affine, nib.load(entry.output).affine)
            continue
        src = nib.load(entry.input)
        assert got.get_data_dtype() == src.get_data_dtype() and got.shape == src.shape
        assert got.header.get_slope_inter() == src.header.get_slope_inter()
        assert np.array_equal(got.affine, src.affine) and got.header["qform_code"] == src.header["qform_code"]
        stored_in, stored_out = (np.asanyarray(i.dataobj.get_unscaled()) for i in (src, got))
        inside = mask.reshape(mask.shape + (1,) * (stored_in.ndim - 3))
        assert np.array_equal(stored_out[inside], stored_in[inside])  # the file's own stored values, untouched
        physical = got.get_fdata()
        assert np.all(physical[~inside] == 0) and np.array_equal(physical, src.get_fdata() * inside)


def test_masked_image_without_an_exact_zero_is_float_and_said(tmp_path, model_file):
    src = scaled_nifti(tmp_path / "in" / "odd.nii.gz", 3, slope=2.0, inter=1.0)  # physical 0 is stored -0.5
    out = tmp_path / "out"
    entry = run(src, out, model_file, masked_image=True).cases[0]
    assert entry.status == Status.OK and any("float32 physical values" in w for w in entry.warnings)
    got, mask = nib.load(str(out / "odd.masked.nii.gz")), read_labels(entry.output) != 0
    assert got.get_data_dtype() == np.float32
    assert np.allclose(got.get_fdata(), nib.load(str(src)).get_fdata() * mask)


def maurer(mask: np.ndarray, spacing) -> np.ndarray:
    """SimpleITK's signed Maurer distance (mm, negative inside) of a boolean (X, Y, Z) mask."""
    image = sitk.GetImageFromArray(mask.transpose(2, 1, 0).astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing])
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(dist).transpose(2, 1, 0)


@pytest.mark.parametrize("mm", [2.5, -1.7])
def test_border_moves_the_mask_by_mm_as_simpleitk_measures(tmp_path, inputs, model_file, mm):
    plain = run(inputs, tmp_path / "plain", model_file)
    moved = run(inputs, tmp_path / "moved", model_file, border_mm=mm, masked_image=True)
    for a, b in zip(plain.cases, moved.cases, strict=True):
        assert b.border_mm == mm
        before, after = read_labels(a.output) != 0, read_labels(b.output) != 0
        spacing = nib.load(a.output).header.get_zooms()[:3]
        if mm > 0:  # the background within mm of the mask joins it (Maurer: outside, distance to the mask)
            want = before | (maurer(before, spacing) <= mm)
        else:  # the mask within |mm| of the background leaves it (Maurer of the background, outside it)
            want = before & ~(maurer(~before, spacing) <= -mm)
        assert (after.sum() > before.sum()) == (mm > 0)
        assert np.array_equal(after, want)
        masked = nib.load(str(tmp_path / "moved" / f"{b.case}.masked.nii.gz")).get_fdata()
        assert not np.any(masked[~after.reshape(masked.shape)])  # the masked image follows the moved border


def test_statistics_agree_with_simpleitk(tmp_path, inputs, model_file):
    out = tmp_path / "out"
    manifest = run(inputs, out, model_file, statistics=True)
    rows = list(csv.DictReader((out / "statistics.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [(c.case, "brain") for c in manifest.cases]
    on_disk = json.loads((out / "manifest.json").read_text())["cases"]
    for entry, row, saved in zip(manifest.cases, rows, on_disk, strict=True):
        ours = entry.statistics["brain"]
        assert saved["statistics"]["brain"] == ours
        image = sitk.Cast(sitk.ReadImage(entry.input), sitk.sitkFloat64)  # SimpleITK applies the scaling itself
        if image.GetDimension() == 4:
            image = image[:, :, :, 0]
        labels = sitk.ReadImage(entry.output)
        labels.CopyInformation(image)
        stats = sitk.LabelStatisticsImageFilter()
        stats.Execute(image, labels)
        shape = sitk.LabelShapeStatisticsImageFilter()
        shape.Execute(labels)
        assert ours["voxels"] == stats.GetCount(1) == int(row["voxels"])
        assert ours["volume_ml"] == pytest.approx(shape.GetPhysicalSize(1) / 1000, rel=1e-6)
        assert float(row["volume_ml"]) == pytest.approx(ours["volume_ml"], rel=1e-5)
        assert ours["mean"] == pytest.approx(stats.GetMean(1), rel=1e-6)
        assert ours["std"] == pytest.approx(stats.GetSigma(1), rel=1e-6)
        assert (ours["min"], ours["max"]) == (stats.GetMinimum(1), stats.GetMaximum(1))
        inside = sitk.GetArrayFromImage(image)[sitk.GetArrayFromImage(labels) == 1]
        for p in (5, 25, 50, 75, 95):
            assert ours[f"p{p}"] == pytest.approx(np.percentile(inside, p), rel=1e-6)
            assert float(row[f"p{p}"]) == pytest.approx(ours[f"p{p}"], rel=1e-5)


def test_resume_treats_the_new_outputs_like_the_label_map(tmp_path, inputs, model_file):
    out = tmp_path / "out"
    first = run(inputs, out, model_file, masked_image=True, statistics=True, border_mm=1.0)
    again = run(inputs, out, model_file, masked_image=True, statistics=True, border_mm=1.0)
    assert [c.status for c in again.cases] == [Status.SKIPPED] * 4
    assert [c.statistics for c in again.cases] == [c.statistics for c in first.cases]  # kept, and in the CSV
    assert len(list(csv.DictReader((out / "statistics.csv").open()))) == 4

    (out / "scaled.masked.nii.gz").write_bytes(b"short")  # damaged
    (out / "offset.masked.nii.gz").unlink()  # missing
    statuses = {
        c.case: c.status for c in run(inputs, out, model_file, masked_image=True, statistics=True, border_mm=1.0).cases
    }
    assert statuses == {"scaled": Status.OK, "offset": Status.OK, "fourd": Status.SKIPPED, "other": Status.SKIPPED}
    assert nib.load(str(out / "scaled.masked.nii.gz")).shape == SHAPE

    other_border = run(inputs, out, model_file, masked_image=True, statistics=True, border_mm=2.0)
    assert [c.status for c in other_border.cases] == [Status.OK] * 4
    no_border = run(inputs, out, model_file, masked_image=True, statistics=True)
    assert [c.status for c in no_border.cases] == [Status.OK] * 4 and no_border.cases[0].border_mm is None
    run(inputs, out, model_file)  # statistics not asked: kept cases need none
    redo = run(inputs, tmp_path / "plain", model_file)
    assert [c.status for c in run(inputs, tmp_path / "plain", model_file, statistics=True).cases] == [Status.OK] * 4
    assert [c.status for c in redo.cases] == [Status.OK] * 4


def test_a_failed_masked_image_leaves_the_earlier_label_map(tmp_path, inputs, model_file, monkeypatch):
    out = tmp_path / "out"
    first = run(inputs, out, model_file)
    before = {c.case: Path(c.output).read_bytes() for c in first.cases}
    import medfcn.data.masked as masked

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(masked, "_from_nifti", broken)
    second = run(inputs, out, model_file, masked_image=True, border_mm=3.0)
    failed = {c.case for c in second.cases if c.status == Status.FAILED}
    assert failed == {"scaled", "offset", "fourd"}  # the NRRD's masked image does not read a NIfTI
    for case in failed:
        assert (out / f"{case}.nii.gz").read_bytes() == before[case]  # the unit: the label map was not replaced
        assert not (out / f"{case}.masked.nii.gz").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and ".part" in p.name]


def test_cli_options(tmp_path, inputs, model_file, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            str(inputs / "scaled.nii.gz"),
            "-o",
            str(out),
            "--model",
            str(model_file),
            "--device",
            "cpu",
            "--quiet",
            "--masked-image",
            "--border",
            "-1",
            "--statistics",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "scaled.masked.nii.gz",
        "scaled.nii.gz",
        "statistics.csv",
    ]
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "scaled.nii.gz").write_bytes((out / "scaled.nii.gz").read_bytes())
    capsys.readouterr()
    argv = ["segment", str(inputs / "scaled.nii.gz"), "-o", str(out), "--model", str(model_file), "--quiet"]
    assert main([*argv, "--device", "cpu", "--masked-image", "--statistics", "--reference", str(refs)]) == 0
    printed = capsys.readouterr().out
    assert "evaluated 1 case" in printed and "without a reference" not in printed  # the masked image is no prediction
    report = (out / "evaluation" / "report.html").read_text()
    volume = next(csv.DictReader((out / "statistics.csv").open()))["volume_ml"]
    assert "Volumes and intensities" in report and f"<td>{volume}</td>" in report
    for bad in ("nan", "inf", "1000"):
        assert main(["segment", str(inputs), "-o", str(tmp_path / bad), "--border", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("medfcn: error: --border") and "\n" not in err and not (tmp_path / bad).exists()
    with pytest.raises(UsageError):
        OutputOptions(border_mm=float("nan"))


def test_a_case_named_like_another_cases_masked_image_fails_and_overwrites_nothing(tmp_path, model_file):
    """Case ``x.masked`` (its label map ``x.masked.nii.gz``) and case ``x``'s masked image ``x.masked.nii.gz`` are one
    file: the case found second fails, named, and the file is the first case's own output."""
    folder = tmp_path / "in"
    scaled_nifti(folder / "x.nii.gz", 0, slope=1.0, inter=0.0)
    scaled_nifti(folder / "x.masked.nii.gz", 1, slope=1.0, inter=0.0)
    out = tmp_path / "out"
    manifest = run(folder, out, model_file, masked_image=True)
    [failed] = [c for c in manifest.cases if c.status == Status.FAILED]
    [done] = [c for c in manifest.cases if c.status == Status.OK]
    assert f"x.masked.nii.gz is also an output of case {done.case}" in failed.error and failed.input in failed.error
    assert manifest.exit_code != 0
    if done.case == "x.masked":  # the file is x.masked's label map
        assert np.array_equal(read_labels(out / "x.masked.nii.gz"), read_labels(done.output))
        assert not (out / "x.nii.gz").exists()
    else:  # the file is x's masked image
        mask = read_labels(done.output) != 0
        expected = nib.load(str(folder / "x.nii.gz")).get_fdata() * mask
        assert np.allclose(nib.load(str(out / "x.masked.nii.gz")).get_fdata(), expected)
