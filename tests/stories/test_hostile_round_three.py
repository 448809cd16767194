"""Hostile inputs, round three (issue 32), outside DICOM: manifests edited by hand, --pairs lists built as bombs,
NaN in label maps, a killed Dask client's scratch. Each test writes a real file the way an attack did and checks it no
longer loses data, hangs, exhausts memory or is scored as if it were whole. The SEG and RTSTRUCT attacks are in
``test_hostile_seg.py`` and ``test_hostile_rtstruct.py``; memory bombs run in a child process under an address-space
limit (:func:`tests.support.hostile.read_bounded`).
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

from medfcn.batch.manifest import MANIFEST_NAME, Status
from medfcn.batch.run import run_batch
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import write_cases
from tests.support.hostile import read_bounded

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
