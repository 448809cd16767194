"""Quality verdicts in a batch: every segmented case's manifest entry, ``--skip-flagged``, the end line, and what
``medfcn evaluate`` makes of them against references (metrics.csv, metrics.json, the report, the summary line).

Real files, the tiny real model, a real ``medfcn segment`` process. A blank scan (every voxel 0) is the case the
verdict must flag whatever the model: its label map is empty.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from html import escape
from pathlib import Path

import numpy as np

from medfcn.batch.manifest import Manifest, Status, read_verdicts
from medfcn.batch.outputs import OutputOptions
from medfcn.batch.run import run_batch
from medfcn.evaluation.evaluate import evaluate
from medfcn.evaluation.flags import flag_agreement
from medfcn.inference.settings import InferenceSettings
from tests.support.batch import read_labels, write_cases
from tests.support.scans import affine_from_codes, write_scan_file

REPO = Path(__file__).resolve().parents[2]
CPU = InferenceSettings(device="cpu")


def _inputs(folder: Path) -> Path:
    write_cases(folder, 2)
    write_scan_file(folder / "blank.nii.gz", np.zeros((20, 22, 16), np.int16), affine_from_codes("LPS"))
    return folder


def test_every_segmented_case_has_a_verdict_and_the_blank_one_is_flagged(tmp_path, model_file):
    out = tmp_path / "out"
    manifest = run_batch([_inputs(tmp_path / "in")], out, model=model_file, settings=CPU, progress=False)

    entries = json.loads((out / "manifest.json").read_text())["cases"]
    assert [e["case"] for e in entries] == ["blank", "case00", "case01"]
    for e in entries:
        assert set(e["quality"]) == {"review", "score", "reasons"} and 0.0 <= e["quality"]["score"] <= 1.0
    blank = entries[0]
    assert blank["status"] == "ok" and blank["quality"]["review"] is True and blank["quality"]["score"] == 0.0
    assert (out / "blank.nii.gz").is_file()  # flagged, but nothing is lost: the mask is written
    assert manifest.flagged_line().startswith(f"{len(manifest.flagged)} of 3 cases flagged for review: blank (no ")
    assert json.loads((out / "manifest.json").read_text())["summary"]["flagged"] == len(manifest.flagged)


def test_skip_flagged_writes_no_mask_and_says_so(tmp_path, model_file):
    out = tmp_path / "out"
    inputs = _inputs(tmp_path / "in")
    manifest = run_batch(
        [inputs], out, model=model_file, settings=CPU, progress=False, options=OutputOptions(skip_flagged=True)
    )

    blank = next(c for c in manifest.cases if c.case == "blank")
    assert blank.status == Status.FLAGGED and blank.output is None and blank.sha256 is None
    assert not (out / "blank.nii.gz").exists() and manifest.exit_code == 0
    assert "flagged for review: no label map written (--skip-flagged)" in blank.warnings
    for c in manifest.cases:
        if c.status == Status.OK:
            assert read_labels(c.output).shape == tuple(c.shape)
    # read back: the status and the verdict survive the file
    again = Manifest.read(out / "manifest.json")
    assert [c.status for c in again.cases] == [c.status for c in manifest.cases]
    assert again.cases[0].quality == blank.quality


def test_skip_flagged_leaves_an_earlier_mask_and_notes_it(tmp_path, model_file):
    out = tmp_path / "out"
    inputs = _inputs(tmp_path / "in")
    run_batch([inputs], out, model=model_file, settings=CPU, progress=False)
    before = (out / "blank.nii.gz").read_bytes()
    manifest = run_batch(
        [inputs],
        out,
        model=model_file,
        settings=CPU,
        progress=False,
        options=OutputOptions(skip_flagged=True),
        overwrite=True,
    )
    blank = next(c for c in manifest.cases if c.case == "blank")
    assert blank.status == Status.FLAGGED and (out / "blank.nii.gz").read_bytes() == before
    assert any(
        "was flagged and not written; blank.nii.gz from an earlier run left unchanged" in w for w in blank.warnings
    )


def test_cli_end_line_and_evaluate_with_flags(tmp_path, model_file):
    inputs = _inputs(tmp_path / "in")
    refs = tmp_path / "refs"
    for name in ("case00", "case01", "blank"):  # references: the blank one has a brain in its reference
        ref = np.zeros((20, 22, 16) if name == "blank" else read_labels_shape(inputs / f"{name}.nii.gz"), np.uint8)
        ref[5:12, 5:12, 4:10] = 1
        write_scan_file(refs / f"{name}.nii.gz", ref, affine_from_codes("LPS"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "medfcn.cli", "segment", str(inputs), "-o", str(out), "--model", str(model_file)]
    run = subprocess.run([*command, "--device", "cpu", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    manifest = Manifest.read(out / "manifest.json")
    assert manifest.flagged_line() in run.stdout.splitlines()

    run = subprocess.run(
        [sys.executable, "-m", "medfcn.cli", "evaluate", str(out), str(refs), "-o", str(tmp_path / "report")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    ev = evaluate(out, refs, tmp_path / "again", quality=read_verdicts(out))  # what the command computed
    rows = list(csv.DictReader((tmp_path / "report" / "metrics.csv").open()))
    by_case = {r["case"]: r for r in rows}
    assert by_case["blank"]["review"] == "true" and by_case["blank"]["quality_score"] == "0.000"
    assert by_case["blank"]["quality_reasons"].startswith("no brain found")
    expected = flag_agreement(ev.case_scores(), {c.case: c.quality for c in manifest.cases})
    assert expected.poor >= 1 and expected.poor_flagged >= 1  # the blank case: Dice 0, flagged
    assert expected.line() in ev.summary_lines() and expected.line() in run.stdout.splitlines()
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["flags"] == expected.to_dict()
    html = (tmp_path / "report" / "report.html").read_text()
    assert "quality: flagged for review, score 0.00" in html and escape(expected.line()) in html


def read_labels_shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    return nib.load(str(path)).shape


def test_flag_agreement_by_hand():
    dice = {"a": 0.97, "b": 0.80, "c": 0.96, "d": 0.93, "e": 0.85}
    verdicts = {
        "a": {"review": False, "score": 0.9},
        "b": {"review": True, "score": 0.1},
        "c": {"review": True, "score": 0.45},
        "d": {"review": False, "score": 0.7},
        "e": {"review": False, "score": 0.6},
    }
    a = flag_agreement(dice, verdicts)
    assert (a.poor, a.poor_flagged, a.middling, a.middling_flagged, a.good, a.good_flagged) == (2, 1, 1, 0, 2, 1)
    # ranks of score: b1 c2 e3 d4 a5; of Dice: b1 e2 d3 c4 a5 -> d^2 = 0+4+1+1+0 = 6 -> rho = 1 - 6*6/(5*24) = 0.7
    assert a.spearman == 0.7 and a.line().endswith("Spearman (score, Dice) 0.70 over 5 cases")
    few = flag_agreement({k: dice[k] for k in "abcd"}, verdicts)  # 4 cases: too few to rank
    assert few.spearman is None and "Spearman" not in few.line()
