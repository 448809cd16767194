"""Batch segmentation (medfcn.batch.run): outputs, manifest, resume, fault isolation, a killed run, the progress bar.

Real files (nibabel, SimpleITK, pydicom), a real tiny model file, and a real ``medfcn segment`` process killed
with SIGKILL. Each output is checked against the same scan segmented directly with :class:`Segmenter`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from medfcn import __version__
from medfcn.batch.cases import error_message
from medfcn.batch.manifest import Manifest, Status
from medfcn.batch.run import run_batch
from medfcn.errors import NoScansError, OutputError, ScanReadError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import partial_files, read_labels, write_cases
from tests.support.scans import affine_from_codes, head_volume, write_scan_file

REPO = Path(__file__).resolve().parents[2]


def outputs(folder: Path) -> list[str]:
    """Names of the finished label maps in ``folder`` (not the hidden temporaries of a write in progress)."""
    return sorted(p.name for p in folder.glob("*.nii.gz") if not p.name.startswith(".")) if folder.is_dir() else []


def direct(segmenter, path: Path, series_uid: str | None = None) -> np.ndarray:
    """The label map of one scan segmented in-process, without the batch machinery."""
    from medfcn.data.reader import read_scan

    return segmenter.segment(read_scan(path, series_uid=series_uid))


def test_batch_outputs_and_manifest(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    nifti = write_cases(inputs, 2)
    nrrd = write_scan_file(inputs / "ct.nrrd", head_volume((26, 24, 18), seed=5), affine_from_codes("RAS"))
    dicom = write_scan_file(inputs / "series", head_volume((20, 22, 12), seed=6), affine_from_codes("LPS"))
    out = tmp_path / "out"

    manifest = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert manifest.exit_code == 0 and manifest.failed == 0
    assert [c.case for c in manifest.cases] == ["case00", "case01", "ct", "series"]  # discovery order
    assert all(c.status == Status.OK and c.error is None for c in manifest.cases)
    for path, entry in zip([*nifti, nrrd, dicom], manifest.cases, strict=True):
        from medfcn.data.reader import read_scan

        scan = read_scan(path)
        assert entry.input == str(path) and entry.output == str(out / f"{entry.case}.nii.gz")
        labels = read_labels(entry.output)
        expected = direct(segmenter, path)
        assert np.array_equal(labels, expected)
        assert 0 < np.count_nonzero(labels) < labels.size  # a real segmentation, not an empty or full one
        assert entry.shape == list(scan.shape)
        np.testing.assert_allclose(entry.spacing, scan.spacing, atol=1e-6)
        assert entry.device == "cpu" and entry.seconds > 0
        assert set(entry.timing) == {"read", "segment", "write"}
    assert manifest.cases[3].series_uid is not None  # the DICOM series' SeriesInstanceUID

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest.to_dict()
    assert on_disk["medfcn_version"] == __version__ and on_disk["device"] == "cpu"
    assert on_disk["model"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert on_disk["model"]["name"] == "tiny-test-model" and on_disk["model"]["path"] == str(model_file)
    flagged = len(manifest.flagged)  # the quality verdicts' count (tests/batch/test_quality_batch.py)
    assert on_disk["summary"] == {"ok": 4, "failed": 0, "skipped": 0, "flagged": flagged, "total": 4}
    assert datetime.fromisoformat(on_disk["started"]) <= datetime.fromisoformat(on_disk["finished"])
    assert sorted(p.name for p in out.iterdir()) == [
        "case00.nii.gz",
        "case01.nii.gz",
        "ct.nii.gz",
        "manifest.json",
        "series.nii.gz",
    ]


def test_broken_files_among_good_ones(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    good = write_cases(inputs, 2)
    (inputs / "empty.nii.gz").write_bytes(b"")
    (inputs / "garbage.nrrd").write_bytes(b"NRRD0004\nthis is not a header\n")
    whole = gzip.decompress(good[0].read_bytes())
    (inputs / "truncated.nii.gz").write_bytes(gzip.compress(whole)[: len(whole) // 8])
    out = tmp_path / "out"

    manifest = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    status = {c.case: c.status for c in manifest.cases}
    assert status == {"case00": "ok", "case01": "ok", "empty": "failed", "garbage": "failed", "truncated": "failed"}
    assert manifest.exit_code == 1 and manifest.failed == 3
    for entry in manifest.cases:
        if entry.status == Status.FAILED:
            assert entry.output is None and not (out / f"{entry.case}.nii.gz").exists()
            assert entry.error and "\n" not in entry.error and Path(entry.input).name in entry.error
    for path in good:
        assert np.array_equal(read_labels(out / path.name), direct(segmenter, path))
    saved = Manifest.read(out / "manifest.json")
    assert [(c.case, c.status, c.error) for c in saved.cases] == [(c.case, c.status, c.error) for c in manifest.cases]
    assert json.loads((out / "manifest.json").read_text())["summary"] == {
        "ok": 2,
        "failed": 3,
        "skipped": 0,
        "flagged": len(manifest.flagged),
        "total": 5,
    }
    assert partial_files(out) == []


def test_failed_redo_keeps_an_earlier_output_but_no_longer_counts_it(tmp_path, model_file):
    inputs = tmp_path / "in"
    [scan] = write_cases(inputs, 1)
    out = tmp_path / "out"
    run_batch([scan], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    before = (out / "case00.nii.gz").read_bytes()
    scan.write_bytes(b"not a scan any more")

    manifest = run_batch(
        [scan], out, model=model_file, settings=InferenceSettings(device="cpu"), overwrite=True, progress=False
    )

    assert manifest.cases[0].status == Status.FAILED and manifest.cases[0].output is None
    assert (out / "case00.nii.gz").read_bytes() == before  # a redo that fails never destroys a result


@pytest.mark.parametrize("make_out", [lambda t: t / "file.txt" / "sub", lambda t: t / "file.txt"])
def test_unwritable_output_folder(tmp_path, model_file, make_out):
    (tmp_path / "file.txt").write_text("a regular file where a folder should be")
    out = make_out(tmp_path)

    # The output is checked before anything else: even a missing input is not looked at first.
    with pytest.raises(OutputError) as info:
        run_batch(
            [tmp_path / "missing"], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False
        )

    assert str(out) in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert (tmp_path / "file.txt").read_text().startswith("a regular file")
    with pytest.raises(NoScansError):  # with a writable output, the missing input is what is reported
        run_batch(
            [tmp_path / "missing"],
            tmp_path / "ok",
            model=model_file,
            settings=InferenceSettings(device="cpu"),
            progress=False,
        )


def test_rerun_skips_everything_and_overwrite_redoes_it(tmp_path, model_file):
    inputs = tmp_path / "in"
    write_cases(inputs, 3)
    out = tmp_path / "out"
    first = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    stats = {p.name: p.stat() for p in out.glob("*.nii.gz")}

    again = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert [c.status for c in again.cases] == [Status.SKIPPED] * 3 and again.exit_code == 0
    assert [(c.case, c.output, c.shape, c.spacing) for c in again.cases] == [
        (c.case, c.output, c.shape, c.spacing) for c in first.cases
    ]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.nii.gz")} == {
        n: (s.st_ino, s.st_mtime_ns) for n, s in stats.items()
    }
    assert json.loads((out / "manifest.json").read_text())["summary"]["skipped"] == 3

    redone = run_batch(
        [inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), overwrite=True, progress=False
    )

    assert [c.status for c in redone.cases] == [Status.OK] * 3
    assert all(p.stat().st_ino != stats[p.name].st_ino for p in out.glob("*.nii.gz"))  # renamed into place anew


def test_damaged_output_is_redone(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    [scan] = write_cases(inputs, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "case00.nii.gz").write_bytes(b"\x1f\x8b not really gzip")  # not recorded in a manifest: made again

    manifest = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert manifest.cases[0].status == Status.OK
    assert np.array_equal(read_labels(out / "case00.nii.gz"), direct(segmenter, scan))


def test_progress_bar_on_stderr(tmp_path, model_file, capfd):
    inputs = tmp_path / "in"
    write_cases(inputs, 2)

    run_batch([inputs], tmp_path / "a", model=model_file, settings=InferenceSettings(device="cpu"), progress=True)
    shown = capfd.readouterr()
    run_batch([inputs], tmp_path / "b", model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    quiet = capfd.readouterr()

    assert "2/2" in shown.err and "case01" in shown.err and shown.out == ""
    assert quiet.err == "" and quiet.out == ""


def test_killed_run_is_finished_by_a_rerun(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    scans = write_cases(inputs, 6, shape=(32, 36, 28))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "medfcn.cli",
        "segment",
        str(inputs),
        "-o",
        str(out),
        "--model",
        str(model_file),
        "--device",
        "cpu",
        "--backend",
        "torch",  # as the in-process segmenter compared with (auto may measure another backend faster)
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not outputs(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # a case takes far longer to segment and write than this
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = outputs(out)
    assert 1 <= len(done_before) < len(scans), "the kill should land part-way through the batch"
    assert all(read_labels(out / name).size for name in done_before)  # complete: nibabel reads them whole

    rerun = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )

    assert rerun.returncode == 0, rerun.stderr
    manifest = Manifest.read(out / "manifest.json")
    skipped = {c.case + ".nii.gz" for c in manifest.cases if c.status == Status.SKIPPED}
    # an output renamed into place just before the kill, but not yet in the manifest, is made again
    assert skipped <= set(done_before) and len(skipped) >= len(done_before) - 1
    assert all(c.status in (Status.OK, Status.SKIPPED) for c in manifest.cases) and len(manifest.cases) == 6
    assert partial_files(out) == []
    for scan in scans:
        assert np.array_equal(read_labels(out / scan.name), direct(segmenter, scan))


def test_error_messages_are_one_line():
    assert error_message(ValueError("bad value\n  more detail\n")) == "ValueError: bad value"
    assert error_message(RuntimeError()) == "RuntimeError"
    assert error_message(ScanReadError("a.nii.gz: empty\nfile")) == "a.nii.gz: empty file"


def test_float32_is_honoured_and_the_precision_recorded(tmp_path, model_file):
    """``amp=False`` (``--float32``): the labels are float32's exactly; the manifest says which arithmetic ran."""
    from medfcn.data.reader import read_scan
    from medfcn.inference.pipeline import Segmenter
    from medfcn.inference.settings import InferenceSettings

    (scan,) = write_cases(tmp_path / "in", 1)
    manifest = run_batch(
        [scan], tmp_path / "f32", model=model_file, settings=InferenceSettings(device="cpu", amp=False), progress=False
    )
    assert manifest.precision == "float32"
    assert json.loads((tmp_path / "f32" / "manifest.json").read_text())["precision"] == "float32"
    written = read_scan(tmp_path / "f32" / "case00.nii.gz").array
    expected = Segmenter(model_file, InferenceSettings(device="cpu", amp=False)).segment(read_scan(scan))
    np.testing.assert_array_equal(written, expected)
    assert manifest.cases[0].precision == "float32"
    default = run_batch(
        [scan], tmp_path / "auto", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
    )
    native = Segmenter(model_file, InferenceSettings(device="cpu")).engine.precision
    assert default.precision == native and default.cases[0].precision == native
    # a rerun with another arithmetic skips the case: the file says how the output it lists was made
    rerun = run_batch(
        [scan], tmp_path / "auto", model=model_file, settings=InferenceSettings(device="cpu", amp=False), progress=False
    )
    assert rerun.cases[0].status == Status.SKIPPED and rerun.cases[0].precision == native
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["precision"] == native


def test_the_backend_is_recorded_per_case_and_for_the_outputs_listed(tmp_path, model_file, monkeypatch):
    """The manifest says what ran the network: each entry its own backend; the file's ``backend`` that of the outputs
    it lists, so a rerun with another backend that skips the finished case still says how that output was made."""
    pytest.importorskip("onnxruntime")
    from medfcn.inference.settings import InferenceSettings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first_scan, second_scan = write_cases(tmp_path / "in", 2)
    out = tmp_path / "out"

    def run(scans, backend):
        settings = InferenceSettings(device="cpu", backend=backend)
        return run_batch(scans, out, model=model_file, settings=settings, progress=False)

    first = run([first_scan], "onnxruntime")
    assert first.backend == "onnxruntime" and first.cases[0].backend == "onnxruntime"
    rerun = run([first_scan, second_scan], "torch")
    assert [c.status for c in rerun.cases] == [Status.SKIPPED, Status.OK]
    assert [c.backend for c in rerun.cases] == ["onnxruntime", "torch"]
    assert json.loads((out / "manifest.json").read_text())["backend"] == "onnxruntime, torch"


def test_an_empty_label_map_is_written_but_said(tmp_path, model_file, caplog):
    """A blank scan (every voxel 0: a failed export) segments to all background; the case is not an error, but the
    manifest entry and the log say the label map is empty. A scan with a head says nothing of the kind."""
    from medfcn.data.reader import read_scan

    inputs = tmp_path / "in"
    (head,) = write_cases(inputs, 1)
    blank = write_scan_file(inputs / "blank.nii.gz", np.zeros((20, 22, 18), np.int16), affine_from_codes("RAS"))
    with caplog.at_level("WARNING", logger="medfcn"):
        manifest = run_batch(
            [inputs], tmp_path / "out", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
        )
    entries = {c.case: c for c in manifest.cases}
    assert manifest.exit_code == 0 and entries["blank"].status == Status.OK
    assert not read_scan(entries["blank"].output).array.any()
    (warning,) = entries["blank"].warnings
    assert "label map is empty" in warning
    assert any(str(blank) in r.getMessage() and "label map is empty" in r.getMessage() for r in caplog.records)
    assert read_scan(entries[head.name.split(".")[0]].output).array.any()
    assert not any("empty" in w for w in entries[head.name.split(".")[0]].warnings)
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert any("label map is empty" in w for c in written["cases"] if c["case"] == "blank" for w in c["warnings"])
