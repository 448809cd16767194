"""The batch never loses a scan or a result: outputs never replace inputs, short files never count as done,
resume never hands one subject's label map to another, a bad model keeps earlier outputs, one malformed file
never ends the batch.

Real files, a real tiny model file, and real ``medfcn segment`` processes where the operating system takes part
(a file-size limit standing in for a full disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfcn.batch.manifest import Manifest, Status
from medfcn.batch.run import run_batch
from medfcn.cli import main
from medfcn.errors import OutputError
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import partial_files, read_labels, write_cases
from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom, write_scan_file

REPO = Path(__file__).resolve().parents[2]


def md5s(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob("*.nii*")}


def direct(segmenter, path: Path) -> np.ndarray:
    from medfcn.data.reader import read_scan

    return segmenter.segment(read_scan(path))


# -- point 1 and 5: an output never replaces an input, OUT is never read as input ----------------------------------
def test_output_folder_equal_to_the_input_folder_is_refused(tmp_path, model_file, capsys):
    inputs = tmp_path / "scans"
    write_cases(inputs, 2)
    before = md5s(inputs)

    for extra in ([], ["--overwrite"]):
        code = main(["segment", str(inputs), "-o", str(inputs), "--model", str(model_file), "--quiet", *extra])
        assert code == 2
        err = capsys.readouterr().err
        assert "is the input folder" in err and err.count("\n") == 1
    assert md5s(inputs) == before and not (inputs / "manifest.json").exists()
    # the same folder named another way, and an input file inside the output folder
    with pytest.raises(OutputError, match="is the input folder"):
        run_batch([inputs / "." / ".." / "scans"], inputs, model=model_file, progress=False)
    with pytest.raises(OutputError, match="holds the input"):
        run_batch([inputs / "case00.nii.gz"], inputs, model=model_file, progress=False)
    with pytest.raises(OutputError, match="holds the input"):
        run_batch([inputs], tmp_path, model=model_file, progress=False)
    assert md5s(inputs) == before


def test_output_folder_inside_the_input_is_never_read_back(tmp_path, model_file):
    inputs = tmp_path / "scans"
    write_cases(inputs, 2)
    before = md5s(inputs)

    first = run_batch(
        [inputs], inputs / "out", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
    )
    second = run_batch(
        [inputs], inputs / "out", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
    )
    other = run_batch(
        [inputs], inputs / "out2", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
    )

    assert [c.case for c in first.cases] == ["case00", "case01"] and first.exit_code == 0
    assert [(c.case, c.status) for c in second.cases] == [("case00", Status.SKIPPED), ("case01", Status.SKIPPED)]
    assert [c.case for c in other.cases] == ["case00", "case01"]  # out/ holds a manifest: not read as scans
    assert sorted(p.name for p in (inputs / "out").glob("*.nii.gz")) == ["case00.nii.gz", "case01.nii.gz"]
    assert {k: v for k, v in md5s(inputs).items() if "/" not in k} == before


# -- point 2: a full disk never leaves a short label map that a rerun accepts --------------------------------------
_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from medfcn.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_full_disk_never_leaves_a_short_output_that_resume_accepts(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    [scan] = write_cases(inputs, 1, shape=(100, 110, 90))  # a label map of ~6 KB
    out = tmp_path / "out"
    args = ["segment", str(inputs), "-o", str(out), "--model", str(model_file), "--device", "cpu", "--quiet"]
    args += ["--backend", "torch"]  # as the in-process segmenter compared with (auto may measure another faster)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    labels = direct(segmenter, scan)
    from medfcn.data.reader import read_scan
    from medfcn.data.writer import write_labels

    probe = write_labels(labels, read_scan(scan), tmp_path / "probe.nii.gz")
    full_size = probe.stat().st_size
    limit = full_size // 2  # the label map cannot fit; the manifest (~1 KB) can
    assert limit > 2500, f"the test scan's label map ({full_size} bytes) is too small to cut"

    cut = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(limit), *args],
        env=env,
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )

    assert cut.returncode == 1, cut.stderr
    manifest = Manifest.read(out / "manifest.json")
    [case] = manifest.cases
    assert case.status == Status.FAILED and "disk full" in case.error, case.error
    assert not (out / "case00.nii.gz").exists() and partial_files(out) == []

    rerun = subprocess.run(
        [sys.executable, "-m", "medfcn.cli", *args], env=env, capture_output=True, encoding="utf-8", errors="replace"
    )

    assert rerun.returncode == 0, rerun.stderr
    assert Manifest.read(out / "manifest.json").cases[0].status == Status.OK
    assert np.array_equal(read_labels(out / "case00.nii.gz"), labels)


def test_a_short_or_replaced_output_is_made_again(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    scans = write_cases(inputs, 2)
    out = tmp_path / "out"
    run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    whole = (out / "case00.nii.gz").read_bytes()
    (out / "case00.nii.gz").write_bytes(whole[: len(whole) // 3])  # what SimpleITK leaves on a full disk
    (out / "case01.nii.gz").write_bytes((out / "case00.nii.gz").read_bytes())

    again = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert [c.status for c in again.cases] == [Status.OK, Status.OK]
    for scan in scans:
        assert np.array_equal(read_labels(out / scan.name), direct(segmenter, scan))


# -- point 3: case names stable under added cases; resume never pins a map to another subject ----------------------
def _bids(root: Path, subjects: dict[str, tuple[int, int, int]]) -> dict[str, Path]:
    return {
        sub: write_scan_file(
            root / sub / "anat" / "T1w.nii.gz", head_volume(shape, seed=i), affine_from_codes("RAS", (1.5,) * 3)
        )
        for i, (sub, shape) in enumerate(subjects.items())
    }


def test_resume_after_adding_a_subject_keeps_every_map_on_its_own_scan(tmp_path, model_file, segmenter):
    root = tmp_path / "bids"
    scans = _bids(root, {"sub-01": (24, 26, 20), "sub-02": (30, 32, 26)})
    out = tmp_path / "out"
    first = run_batch([root], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    assert [c.case for c in first.cases] == ["sub-01_anat_T1w", "sub-02_anat_T1w"]

    scans |= _bids(root, {"sub-00": (40, 44, 36)})
    second = run_batch([root], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert [(c.case, c.status) for c in second.cases] == [
        ("sub-00_anat_T1w", Status.OK),
        ("sub-01_anat_T1w", Status.SKIPPED),
        ("sub-02_anat_T1w", Status.SKIPPED),
    ]
    for c in second.cases:
        sub = c.case.split("_")[0]
        assert c.input == str(scans[sub])
        assert np.array_equal(read_labels(c.output), direct(segmenter, scans[sub]))


def test_an_output_whose_record_names_another_input_is_made_again(tmp_path, model_file, segmenter):
    inputs = tmp_path / "in"
    write_cases(inputs, 1)
    out = tmp_path / "out"
    run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    # the scan is replaced by another subject's under the same name
    [scan] = write_cases(inputs, 1, shape=(30, 22, 26), first_seed=7)

    again = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert again.cases[0].status == Status.OK
    assert np.array_equal(read_labels(out / "case00.nii.gz"), direct(segmenter, scan))


# -- point 4 and 12: another model redoes; a bad model keeps every earlier output ---------------------------------
def _bad_model(model_file: Path, path: Path, **card_changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    card = json.loads(meta["card"]) | card_changes
    save_file(tensors, str(path), metadata={**meta, "card": json.dumps(card)})
    return path


def test_overwrite_with_an_unusable_model_keeps_every_output(tmp_path, model_file, capsys):
    inputs = tmp_path / "in"
    write_cases(inputs, 2)
    out = tmp_path / "out"
    run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    before = md5s(out)
    bad = _bad_model(model_file, tmp_path / "bad.safetensors", normalisation="magic")

    code = main(["segment", str(inputs), "-o", str(out), "--model", str(bad), "--overwrite", "--quiet"])

    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "magic" in err and err.count("\n") == 1
    assert md5s(out) == before


def test_a_failed_redo_keeps_the_earlier_output(tmp_path, model_file):
    inputs = tmp_path / "in"
    [scan] = write_cases(inputs, 1)
    out = tmp_path / "out"
    run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    before = md5s(out)
    scan.write_bytes(scan.read_bytes()[:200])  # the scan is damaged afterwards

    again = run_batch(
        [inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), overwrite=True, progress=False
    )

    assert again.cases[0].status == Status.FAILED and again.cases[0].output is None
    assert md5s(out) == before


def test_another_model_makes_the_outputs_again(tmp_path, model_file):
    inputs = tmp_path / "in"
    write_cases(inputs, 1)
    out = tmp_path / "out"
    first = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    other = _bad_model(model_file, tmp_path / "other.safetensors", name="another-model")

    again = run_batch([inputs], out, model=other, settings=InferenceSettings(device="cpu"), progress=False)

    assert again.cases[0].status == Status.OK
    assert again.cases[0].model_sha256 == again.model["sha256"] != first.cases[0].model_sha256


# -- point 6: nothing in the input or the output folder ends the batch ---------------------------------------------
def test_a_malformed_dicom_slice_fails_its_series_only(tmp_path, model_file):
    import pydicom

    inputs = tmp_path / "in"
    write_cases(inputs, 1)
    files = write_dicom_pydicom(inputs / "series", np.round(head_volume((20, 22, 12))), affine_from_codes("LPS"))
    raw = files[3].read_bytes()
    iop = bytes(pydicom.dcmread(files[3]).get_item((0x0020, 0x0037)).value)
    files[3].write_bytes(raw.replace(iop, iop[:5] + b"x" + iop[6:]))

    manifest = run_batch(
        [inputs], tmp_path / "out", model=model_file, settings=InferenceSettings(device="cpu"), progress=False
    )

    by = {c.case: c for c in manifest.cases}
    assert by["case00"].status == Status.OK and by["series"].status == Status.FAILED
    assert files[3].name in by["series"].error and "\n" not in by["series"].error


def test_a_folder_named_like_an_output_is_a_failed_case(tmp_path, model_file):
    inputs = tmp_path / "in"
    write_cases(inputs, 2)
    out = tmp_path / "out"
    (out / "case00.nii.gz").mkdir(parents=True)
    (out / "case00.nii.gz" / "keep.txt").write_text("a user's file")

    manifest = run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)

    assert [c.status for c in manifest.cases] == [Status.FAILED, Status.OK]
    assert "case00.nii.gz" in manifest.cases[0].error
    assert (out / "case00.nii.gz" / "keep.txt").read_text() == "a user's file" and partial_files(out) == []


# -- point 12: names that a spreadsheet or a terminal would run ------------------------------------------------------
def test_hostile_case_names_reach_neither_spreadsheet_nor_terminal(tmp_path, model_file, capsys):
    import csv

    inputs, refs = tmp_path / "in", tmp_path / "ref"
    formula, escape = '=HYPERLINK("evil")', "a\x1b[31mred"
    for name in (formula, escape):
        write_scan_file(inputs / f"{name}.nii.gz", head_volume((24, 28, 20)), affine_from_codes("LPS"))
    out = tmp_path / "out"
    run_batch([inputs], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False)
    refs.mkdir()
    for p in out.glob("*.nii.gz"):
        (refs / p.name).write_bytes(p.read_bytes())

    code = main(["evaluate", str(out), str(refs), "-o", str(tmp_path / "report")])

    assert code == 0
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err
    assert "a_[31mred.nii.gz" in {p.name for p in out.iterdir()}
    with open(tmp_path / "report" / "metrics.csv", newline="") as f:
        cases = {row["case"] for row in csv.DictReader(f)}
    assert "'" + formula in cases and not any(c.startswith(("=", "+", "-", "@")) for c in cases)
    code = main(["segment", str(tmp_path / "no\x1b[2Jwhere"), "-o", str(out), "--model", str(model_file)])
    err = capsys.readouterr().err
    assert code == 2 and "\x1b" not in err and "\\x1b[2J" in err
