"""Hostile inputs, round two (issue 25): each test reproduces an attack that lost data or gave a raw error before.

Batch side: an input replaced while it is read, a redo that fails half-way, two runs into one folder, names too long
for their temporaries. Reading and evaluation side: in ``test_bombs.py`` and below.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.manifest import MANIFEST_NAME, Status
from medfcn.batch.run import run_batch
from medfcn.errors import OutputError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import partial_files, read_labels, write_cases
from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom, write_scan_file

CPU = InferenceSettings(device="cpu")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. the input stamp is taken when the input is read ---------------------------------------------------------
def test_an_input_replaced_while_it_is_segmented_is_redone_on_resume(tmp_path, model_file, monkeypatch):
    import medfcn.batch.run as run

    inputs, out = tmp_path / "in", tmp_path / "out"
    [scan, _] = write_cases(inputs, 2)
    original = run.segment_case

    def replace_then_segment(segmenter, step, *options):
        if step.scan is not None and step.scan.case == "case00":  # read already: the user swaps the file now
            write_scan_file(scan, head_volume(seed=42)[::-1].copy(), affine_from_codes("LPS"))
        return original(segmenter, step, *options)

    monkeypatch.setattr(run, "segment_case", replace_then_segment)
    run_batch([inputs], out, model=model_file, settings=CPU, progress=False)
    monkeypatch.setattr(run, "segment_case", original)

    again = run_batch([inputs], out, model=model_file, settings=CPU, progress=False)

    by = {c.case: c for c in again.cases}
    assert by["case00"].status == Status.OK and by["case01"].status == Status.SKIPPED  # redone, not kept
    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter

    expected = Segmenter(model_file, CPU).segment(read_scan(scan))
    assert np.array_equal(read_labels(out / "case00.nii.gz"), expected)  # the labels of the scan there now


# -- 2. a case's outputs are one unit ---------------------------------------------------------------------------
@pytest.fixture
def dicom_case(tmp_path):
    from tests.support.dicom import make_series

    return make_series("lps_shuffled", tmp_path / "in" / "series")


def test_a_redo_that_fails_at_the_seg_keeps_every_earlier_output(tmp_path, model_file, dicom_case, monkeypatch):
    import highdicom

    from tests.support.batch import train_tiny_model

    out, formats = tmp_path / "out", "nifti,dicom-seg,rtstruct"
    first = run_batch([dicom_case], out, model=model_file, settings=CPU, formats=formats, progress=False)
    assert first.cases[0].status == Status.OK
    before = {p.name: _sha(p) for p in out.iterdir() if p.name != MANIFEST_NAME}
    assert sorted(before) == ["series.nii.gz", "series.rtstruct.dcm", "series.seg.dcm"]

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(highdicom.seg.Segmentation, "save_as", disk_full)
    other = train_tiny_model(tmp_path / "other.safetensors", shape=(24, 28, 18))
    redo = run_batch([dicom_case], out, model=other, settings=CPU, formats=formats, overwrite=True, progress=False)

    [case] = redo.cases
    assert case.status == Status.FAILED and case.output is None
    assert "series.seg.dcm" in case.error and "No space left on device" in case.error
    assert "\n" not in case.error and "Traceback" not in case.error and len(case.error) < 300
    assert {p.name: _sha(p) for p in out.iterdir() if p.name != MANIFEST_NAME} == before  # all three unchanged
    assert any("left unchanged" in w and "series.nii.gz" in w for w in case.warnings)
    assert partial_files(out) == []


@pytest.mark.parametrize("keyword", ["FrameOfReferenceUID", "PixelSpacing"])
def test_a_series_a_seg_cannot_reference_fails_when_read_and_writes_nothing(tmp_path, model_file, dicom_case, keyword):
    """Without FrameOfReferenceUID or PixelSpacing: refused before segmenting, in one line; no NIfTI is left alone
    beside nothing, and no "kept from an earlier run" on a first run. A NIfTI alone is still written."""
    import pydicom

    for f in dicom_case.iterdir():
        ds = pydicom.dcmread(f)
        delattr(ds, keyword)
        ds.save_as(f)
    out = tmp_path / "out"
    manifest = run_batch([dicom_case], out, model=model_file, settings=CPU, formats="nifti,rtstruct", progress=False)

    [case] = manifest.cases
    assert case.status == Status.FAILED and keyword in case.error and str(dicom_case) in case.error
    assert "Error:" not in case.error and "segment" not in case.timing  # refused when read, not after segmenting
    assert not any("earlier run" in w for w in case.warnings)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]
    nifti = run_batch([dicom_case], tmp_path / "nii", model=model_file, settings=CPU, progress=False)
    assert nifti.cases[0].status == Status.OK


# -- rough edges of the batch ------------------------------------------------------------------------------------
def test_a_second_run_into_a_busy_output_folder_is_refused(tmp_path, model_file):
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cases(inputs, 1)
    out.mkdir()
    code = f"from medfcn.batch.run import _lock; from pathlib import Path; _lock(Path({str(out)!r}))"
    code += "; print('locked', flush=True); import time; time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, encoding="utf-8", errors="replace")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match="another medfcn segment is writing into this folder") as info:
            run_batch([inputs], out, model=model_file, settings=CPU, progress=False)
        assert info.value.exit_code == 2 and f"pid {holder.pid}" in str(info.value)
        assert not (out / MANIFEST_NAME).exists()
    finally:
        holder.kill()
        holder.wait()
    manifest = run_batch([inputs], out, model=model_file, settings=CPU, progress=False)  # free again
    assert manifest.cases[0].status == Status.OK
    assert sorted(p.name for p in out.iterdir()) == ["case00.nii.gz", MANIFEST_NAME]  # the lock file is gone


def test_two_runs_started_together_never_share_a_folder(tmp_path, model_file):
    """Real processes: of two ``medfcn segment`` runs into one folder, one is refused (exit 2) or waits its turn
    after the other finished; the manifest holds every case."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_cases(inputs, 3)
    cmd = [sys.executable, "-m", "medfcn.cli", "segment", str(inputs), "-o", str(out), "--model", str(model_file)]
    procs = [
        subprocess.Popen(
            [*cmd, "--device", "cpu", "--quiet"], stderr=subprocess.PIPE, encoding="utf-8", errors="replace"
        )
        for _ in "ab"
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert any("another medfcn segment is writing" in err for code, err in results if code == 2)
    cases = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    assert sorted(c["case"] for c in cases) == ["case00", "case01", "case02"]


def test_names_long_enough_to_overflow_a_temporary_name_are_written(tmp_path, model_file):
    inputs, out = tmp_path / "in", tmp_path / "out"
    name = "n" * 240
    write_scan_file(inputs / f"{name}.nii.gz", head_volume((24, 28, 20)), affine_from_codes("LPS"))
    too_long = write_scan_file(inputs / f"{'m' * 250}.mha", head_volume((24, 28, 20)), affine_from_codes("LPS"))

    manifest = run_batch([inputs], out, model=model_file, settings=CPU, progress=False)

    by = {c.case: c for c in manifest.cases}
    assert by[name].status == Status.OK and (out / f"{name}.nii.gz").is_file()
    failed = by[too_long.name.removesuffix(".mha")]
    assert failed.status == Status.FAILED and "name too long" in failed.error.lower() and "\n" not in failed.error
    assert partial_files(out) == []


def test_temporary_names_fit_and_are_still_cleaned_up(tmp_path):
    from medfcn.data.writer import partial_path, remove_stale_partials

    for n in (1, 200, 247):
        tmp = partial_path(tmp_path / f"{'é' * (n // 2)}{'x' * (n - 2 * (n // 2))}.nii.gz")
        assert len(tmp.name.encode()) <= 255 and tmp.name.endswith(".part.nii.gz")
    stale = partial_path(tmp_path / ("z" * 247 + ".nii.gz"))
    stale.write_bytes(b"")
    # a temporary of this very process is stale once its write is over: remove_stale_partials takes it
    assert remove_stale_partials(tmp_path) == [stale]
    time.sleep(0)


# -- DICOM series that are not one volume -------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", ["FrameOfReferenceUID", "PatientID"])
def test_a_slice_of_another_patient_or_frame_with_the_same_series_uid_is_refused(tmp_path, keyword):
    import pydicom

    from medfcn.data.discovery import find_cases

    files = write_dicom_pydicom(tmp_path / "series", np.round(head_volume((12, 10, 8))), affine_from_codes("LPS"))
    ds = pydicom.dcmread(files[3])
    setattr(ds, keyword, "1.2.3.4" if keyword == "FrameOfReferenceUID" else "OTHER")
    ds.save_as(files[3])

    [case] = find_cases(tmp_path / "series")

    assert case.error is not None and f"different {keyword}s" in case.error and files[3].name in case.error


def test_an_end_slice_no_longer_dicom_is_left_out_with_a_warning(tmp_path, model_file):
    files = write_dicom_pydicom(tmp_path / "series", np.round(head_volume((12, 10, 8))), affine_from_codes("LPS"))
    files[0].write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())

    manifest = run_batch([tmp_path / "series"], tmp_path / "out", model=model_file, settings=CPU, progress=False)

    [case] = manifest.cases
    assert case.status == Status.OK and case.shape == [12, 10, 7]
    assert any("left out" in w and files[0].name in w for w in case.warnings)


# -- 6. one bad RTSTRUCT fails its own case -----------------------------------------------------------------------
@pytest.fixture
def two_structure_sets(tmp_path):
    """Two DICOM series, a NIfTI prediction and an RTSTRUCT reference for each: ``(series root, pred, ref)``."""
    from medfcn.batch.outputs import OutputFormat
    from medfcn.data.reader import read_scan
    from tests.support.dicom import SHAPE, synthetic_labels, write_all

    root = tmp_path / "series"
    for name in ("good", "bad"):
        write_dicom_pydicom(root / name, np.round(head_volume(SHAPE)), affine_from_codes("LPS"))
        scan = read_scan(root / name)
        write_all(scan, synthetic_labels(scan), tmp_path / "pred", formats=(OutputFormat.NIFTI,))
        write_all(scan, synthetic_labels(scan), tmp_path / "ref", formats=(OutputFormat.RTSTRUCT,))
    return root, tmp_path / "pred", tmp_path / "ref"


def _edit_first_contour(path: Path, edit) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    item = ds.ROIContourSequence[0].ContourSequence[0]
    edit(item)
    ds.save_as(path)


def test_a_nan_in_one_rtstruct_fails_its_case_naming_the_file(tmp_path, two_structure_sets, capsys):
    from medfcn.cli import main

    root, pred, ref = two_structure_sets
    bad = ref / "bad.rtstruct.dcm"
    _edit_first_contour(bad, lambda item: setattr(item, "ContourData", ["nan", *item.ContourData[1:]]))

    code = main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "report"), "--series", str(root)])

    assert code == 1
    out = capsys.readouterr()
    assert "internal error" not in out.err
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["cases"]["good"]["1"]["dice"] == pytest.approx(1.0)  # the good case is scored
    assert any(str(bad) in f and "NaN" in f and "ROI 1, contour 1" in f for f in report["failed"])


def test_a_contour_with_more_points_than_its_slice_can_hold_is_refused(tmp_path, two_structure_sets):
    from medfcn.dicom.refs import SeriesIndex
    from medfcn.dicom.rtstruct import read_rtstruct
    from medfcn.errors import MedfcnError

    root, _, ref = two_structure_sets
    bad = ref / "bad.rtstruct.dcm"
    _edit_first_contour(bad, lambda item: setattr(item, "ContourData", list(item.ContourData[:3]) * 700))
    start = time.perf_counter()
    with pytest.raises(MedfcnError, match="has 700 points, more than the 625 a slice can hold"):
        read_rtstruct(bad, SeriesIndex([root]))
    assert time.perf_counter() - start < 10


# -- rough edges: names, links, cards -----------------------------------------------------------------------------
def test_adding_a_case_never_renames_the_cases_already_done(tmp_path, model_file):
    one, two, out = tmp_path / "coll1", tmp_path / "coll2", tmp_path / "out"
    for folder, seed in ((one, 0), (two, 1)):
        write_scan_file(folder / "x.nii", head_volume((24, 28, 20), seed=seed), affine_from_codes("LPS"))
    first = run_batch([one, two], out, model=model_file, settings=CPU, progress=False)
    assert sorted(c.case for c in first.cases) == ["coll1_x", "coll2_x"]
    before = {p.name: _sha(p) for p in out.glob("*.nii.gz")}
    write_scan_file(one / "coll2_x.mha", head_volume((24, 28, 20), seed=2), affine_from_codes("LPS"))

    again = run_batch([one, two], out, model=model_file, settings=CPU, progress=False)

    by = {c.case: c for c in again.cases}
    assert by["coll2_x"].input == str(two / "x.nii") and by["coll2_x"].status == Status.SKIPPED
    assert by["coll1_x"].status == Status.SKIPPED
    assert by["coll1_coll2_x"].input == str(one / "coll2_x.mha") and by["coll1_coll2_x"].status == Status.OK
    assert {n: _sha(out / n) for n in before} == before


def test_a_symlink_loop_on_the_command_line_is_a_named_error(tmp_path, capsys):
    from medfcn.cli import main

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert main(["segment", str(loop), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfcn: error:") and "loop of symbolic links" in err and "internal" not in err


def test_a_model_card_nested_100000_deep_is_refused_as_damaged(tmp_path, capsys):
    from safetensors.numpy import save_file

    from medfcn.cli import main
    from medfcn.model.checkpoint import FORMAT, FORMAT_VERSION

    path = tmp_path / "deep.safetensors"
    card = "[" * 100_000 + "]" * 100_000
    save_file(
        {"w": np.zeros(1, np.float32)},
        str(path),
        {"format": FORMAT, "format_version": str(FORMAT_VERSION), "card": card},
    )
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "damaged model card" in err and "nested too deeply" in err and "internal" not in err


def test_a_qform_and_sform_that_disagree_are_said_and_both_kept(tmp_path, model_file):
    import nibabel as nib

    from medfcn.data.reader import read_scan

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = nib.Nifti1Image(head_volume((24, 28, 20)), affine_from_codes("RAS"))
    sform = affine_from_codes("LAS")
    sform[:3, 3] += [50.0, 0, 0]
    image.set_qform(affine_from_codes("RAS"), code=1)
    image.set_sform(sform, code=2)
    nib.save(image, inputs / "both.nii.gz")

    manifest = run_batch([inputs], out, model=model_file, settings=CPU, progress=False)

    [case] = manifest.cases
    assert case.status == Status.OK and any("qform and sform disagree" in w for w in case.warnings)
    written = nib.load(out / "both.nii.gz").header
    assert np.allclose(written.get_qform(), affine_from_codes("RAS"), atol=1e-4) and written["qform_code"] == 1
    assert np.allclose(written.get_sform(), sform, atol=1e-4) and written["sform_code"] == 2
    scan, labels = read_scan(inputs / "both.nii.gz"), read_scan(out / "both.nii.gz")
    assert scan.grid == labels.grid  # and medfcn (ITK) reads the label map on the scan's grid
