"""``medfcn evaluate OUT REF`` on a batch's output folder: the cases it scores are the manifest's segmented cases,
never the files a review or ``--masked-image`` put beside them (``OUT/corrected/``, ``<case>.masked.nii.gz``); a
manifest edited by hand to name a file outside OUT, or one that is missing, is one line naming the file."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from medfcn import cli
from medfcn.batch.outputs import OutputOptions
from medfcn.batch.review_queue import Decision, corrected_path, record_decision
from medfcn.batch.run import run_batch
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import write_cases


@pytest.fixture(scope="module")
def batch(tmp_path_factory, model_file):
    """A real batch of three heads with masked images, one case corrected in the review queue, and references
    (the label maps themselves)."""
    root = tmp_path_factory.mktemp("evaluate_batch")
    write_cases(root / "in", 3)
    out = root / "out"
    options = OutputOptions(masked_image=True)
    run_batch(
        [root / "in"], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False, options=options
    )
    fixed = corrected_path(out, "case00")
    fixed.parent.mkdir()
    shutil.copyfile(out / "case00.nii.gz", fixed)
    record_decision(out, "case00", Decision.CORRECTED, fixed)
    (root / "ref").mkdir()
    for case in ("case00", "case01", "case02"):
        shutil.copyfile(out / f"{case}.nii.gz", root / "ref" / f"{case}.nii.gz")
    return root


def _evaluate(pred, ref, report, capsys) -> tuple[int, str, set[str]]:
    """``medfcn evaluate``'s exit status, what it printed and the cases of its metrics.csv."""
    capsys.readouterr()
    code = cli.main(["evaluate", str(pred), str(ref), "-o", str(report)])
    printed = capsys.readouterr()
    cases = set()
    if (report / "metrics.csv").is_file():
        with open(report / "metrics.csv", newline="", encoding="utf-8") as f:
            cases = {row["case"] for row in csv.DictReader(f)}
    return code, printed.out + printed.err, cases


def test_a_batch_folder_is_evaluated_on_its_manifests_cases(batch, tmp_path, capsys):
    out = batch / "out"
    assert (out / "corrected" / "case00.nii.gz").is_file() and (out / "case01.masked.nii.gz").is_file()

    code, printed, cases = _evaluate(out, batch / "ref", tmp_path / "report", capsys)

    assert code == 0, printed
    assert printed.splitlines()[0] == "evaluated 3 cases"  # nothing unpaired, nothing failed
    assert cases == {"case00", "case01", "case02"}


def test_without_a_manifest_masked_images_and_corrections_are_still_no_predictions(batch, tmp_path, capsys):
    copy = tmp_path / "copied"
    shutil.copytree(batch / "out", copy)
    (copy / "manifest.json").unlink()
    (copy / "case02.nii.gz").unlink()  # no manifest: whatever label maps the folder holds

    code, printed, cases = _evaluate(copy, batch / "ref", tmp_path / "report", capsys)

    assert code == 0, printed
    assert printed.splitlines()[0] == "evaluated 2 cases (1 reference(s) without a prediction: case02)"
    assert cases == {"case00", "case01"}


def test_a_failed_case_is_not_evaluated_in_a_copied_folder(batch, tmp_path, capsys):
    """A label map left from an earlier run whose case failed this time is not one of the batch's results; the
    others are read from the copy (the manifest records where the batch was written, now elsewhere)."""
    copy = tmp_path / "out"
    shutil.copytree(batch / "out", copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    entry = next(c for c in manifest["cases"] if c["case"] == "case02")
    entry.update(status="failed", output=None, error="case02.nii.gz: unreadable")
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    code, printed, cases = _evaluate(copy, batch / "ref", tmp_path / "report", capsys)

    assert code == 0, printed
    assert printed.splitlines()[0] == "evaluated 2 cases (1 reference(s) without a prediction: case02)"
    assert cases == {"case00", "case01"}


def test_a_hand_edited_manifest_naming_a_file_outside_or_missing_is_one_line(batch, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(batch / "out", copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    outside, missing = tmp_path / "elsewhere" / "edited.nii.gz", copy / "gone" / "case01.nii.gz"
    outside.parent.mkdir()
    shutil.copyfile(batch / "ref" / "case00.nii.gz", outside)
    by_case = {c["case"]: c for c in manifest["cases"]}
    by_case["case00"]["output"] = str(outside)
    by_case["case01"]["output"] = str(missing)
    (copy / "case01.nii.gz").unlink()  # nowhere to be found, under any name
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    code, printed, cases = _evaluate(copy, batch / "ref", tmp_path / "report", capsys)

    assert code == 1 and "Traceback" not in printed
    assert printed.splitlines()[0] == "evaluated 1 case (2 failed)"
    assert [line for line in printed.splitlines() if str(outside) in line] == [
        f"failed: case00: {outside}: the label map {copy / 'manifest.json'} records for case00 lies outside the "
        f"batch's folder {copy}; not read"
    ]
    assert [line for line in printed.splitlines() if str(missing) in line] == [
        f"failed: case01: {missing}: the label map {copy / 'manifest.json'} records for case01 does not exist"
    ]
    assert cases == {"case02"}


def test_a_damaged_manifest_is_one_line(batch, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(batch / "out", copy)
    manifest = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    manifest["cases"][1] = 42
    (copy / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    code, printed, _ = _evaluate(copy, batch / "ref", tmp_path / "report", capsys)

    assert code == 2 and "Traceback" not in printed
    assert printed.strip().splitlines() == [
        f"medfcn: error: {copy / 'manifest.json'}: not a medfcn batch's manifest (case 2 is not an entry); "
        "medfcn segment writes one into its output folder"
    ]


def test_a_batch_written_as_rtstruct_and_nifti_is_scored_on_its_label_maps(model_file, tmp_path, capsys):
    """``--format rtstruct,nifti`` records the RTSTRUCT as the entry's first output; the score is the NIfTI label
    map's (exact), not a contour rebuilt on the series (which needs ``--series``): the manifest's case is read the
    way the folder's files were before manifests were read."""
    from tests.support.dicom import make_series

    series = tmp_path / "in" / "a"
    series.mkdir(parents=True)
    make_series("lps_shuffled", series)
    out = tmp_path / "out"
    run_batch(
        [series], out, model=model_file, settings=InferenceSettings(device="cpu"), progress=False,
        formats=("rtstruct", "nifti"),
    )  # fmt: skip
    entry = json.loads((out / "manifest.json").read_text())["cases"][0]
    assert entry["output"].endswith(".dcm") and entry["outputs"][1].endswith(".nii.gz")
    (tmp_path / "ref").mkdir()
    shutil.copyfile(entry["outputs"][1], tmp_path / "ref" / f"{entry['case']}.nii.gz")

    code, printed, cases = _evaluate(out, tmp_path / "ref", tmp_path / "report", capsys)

    assert code == 0, printed
    assert cases == {entry["case"]}
    with open(tmp_path / "report" / "metrics.csv", newline="", encoding="utf-8") as f:
        assert {float(row["dice"]) for row in csv.DictReader(f)} == {1.0}
