"""medfcn.evaluation.evaluate on real files: pairing, grid mismatches, unmatched cases, CSV/JSON contents, the CLI."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.data.reader import read_scan
from medfcn.errors import NoScansError
from medfcn.evaluation.evaluate import evaluate
from medfcn.evaluation.metrics import compute_metrics, worst_distance_mm
from medfcn.evaluation.results import CSV_COLUMNS
from medfcn.evaluation.scoring import aligned_to

SPACING = (0.9, 1.2, 2.5)
SHAPE = (36, 30, 16)


def _labels(seed: int, shift: int = 0, drop: int | None = None) -> np.ndarray:
    """Two box-like organs (1 and 2), moved by ``shift`` voxels along x; ``drop`` removes a label."""
    rng = np.random.default_rng(seed)
    a = np.zeros(SHAPE, np.uint8)
    lo = rng.integers(3, 6, 3)
    a[lo[0] + shift : 24 + shift, lo[1] : 22, lo[2] : 12] = 1
    a[8 + shift : 14 + shift, 10:16, 4:8] = 2
    if drop is not None:
        a[a == drop] = 0
    return a


def _write(a: np.ndarray, path: Path, spacing=SPACING, origin=(10.0, -20.0, 5.0)) -> Path:
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.T))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture
def folders(tmp_path):
    """pred: a, b (label 2 missed), c (another spacing), d (no reference); ref: a, b, c (as NRRD), e."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for name, seed in (("a", 0), ("b", 1), ("c", 2), ("e", 4)):
        _write(_labels(seed), ref / (f"{name}.nrrd" if name == "c" else f"{name}.nii.gz"))
    _write(_labels(0, shift=1), pred / "a.nii.gz")
    _write(_labels(1, shift=2, drop=2), pred / "b.nii.gz")
    _write(_labels(2), pred / "c.nii.gz", spacing=(0.9, 1.2, 3.0))
    _write(_labels(3), pred / "d.nii.gz")
    return pred, ref


def test_folders_pair_by_case_with_a_grid_mismatch_and_unmatched_cases(folders, tmp_path):
    pred, ref = folders
    ev = evaluate(pred, ref, tmp_path / "report", tolerance_mm=1.5)
    assert ev.cases == ["a", "b"]
    assert ev.unmatched_pred == ["d"] and ev.unmatched_ref == ["e"]
    assert len(ev.failed) == 1
    assert ev.failed[0].startswith("c:") and "spacing" in ev.failed[0] and "\n" not in ev.failed[0]
    # every case has every label; b's missed label 2 stays in the mean as Dice 0 and the worst distance
    assert [(r.case, r.label) for r in ev.rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    missed = next(r for r in ev.rows if (r.case, r.label) == ("b", 2))
    assert missed.dice == 0 and missed.status == "missed"
    assert missed.hd95_mm == pytest.approx(worst_distance_mm(SHAPE, read_scan(ref / "b.nii.gz").spacing))
    assert ev.label_stats()[2]["dice"]["n"] == 2
    assert next(iter(ev.case_scores())) == "b"
    lines = ev.summary_lines()
    assert lines[0].startswith("evaluated 2 cases") and "1 failed" in lines[0] and "d" in lines[0]
    assert any(line.startswith("worst case: b") for line in lines)
    assert not any(p.name.startswith(".") for p in (tmp_path / "report").iterdir())  # no partial files left


def test_csv_holds_the_metrics_of_each_pair_and_agrees_with_simpleitk(folders, tmp_path):
    pred, ref = folders
    evaluate(pred, ref, tmp_path / "report", tolerance_mm=1.5)
    with open(tmp_path / "report" / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [(r["case"], r["label"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    for case in ("a", "b"):
        p, r = read_scan(pred / f"{case}.nii.gz"), read_scan(ref / f"{case}.nii.gz")
        want = compute_metrics(p.array, r.array, r.spacing, tolerance_mm=1.5)
        f = sitk.LabelOverlapMeasuresImageFilter()
        f.Execute(sitk.ReadImage(str(ref / f"{case}.nii.gz")), sitk.ReadImage(str(pred / f"{case}.nii.gz")))
        for row in (x for x in rows if x["case"] == case):
            label = int(row["label"])
            if label in want:
                for col in CSV_COLUMNS[2:]:
                    assert float(row[col]) == pytest.approx(getattr(want[label], col), rel=1e-8, abs=1e-9)
                assert float(row["dice"]) == pytest.approx(f.GetDiceCoefficient(label), abs=1e-6)


def test_json_holds_per_case_values_and_per_label_statistics(folders, tmp_path):
    pred, ref = folders
    ev = evaluate(pred, ref, tmp_path / "report", label_names={"background": 0, "liver": 1})
    data = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert data["labels"] == {"1": "liver", "2": "label 2"}
    assert set(data["cases"]) == {"a", "b"} and data["cases"]["b"]["2"]["status"] == "missed"
    assert data["unmatched_pred"] == ["d"] and data["unmatched_ref"] == ["e"] and len(data["failed"]) == 1
    for label in ("1", "2"):
        dices = [data["cases"][c][label]["dice"] for c in ("a", "b")]
        st = data["per_label"][label]["dice"]
        assert st["n"] == 2
        assert st["mean"] == pytest.approx(np.mean(dices)) and st["median"] == pytest.approx(np.median(dices))
        assert st["std"] == pytest.approx(statistics.stdev(dices)) and st["min"] == min(dices)
        assert st["max"] == max(dices)
    assert ev.label_title(1) == "liver (1)"


def test_single_files_pair_whatever_their_names(tmp_path):
    p = _write(_labels(0, shift=1), tmp_path / "seg_output.nii.gz")
    r = _write(_labels(0), tmp_path / "truth.mha")
    ev = evaluate(p, r, tmp_path / "out")
    assert ev.cases == ["seg_output"] and not ev.failed
    assert 0.8 < ev.rows[0].dice < 1


def test_nothing_to_pair_raises(tmp_path):
    _write(_labels(0), tmp_path / "p" / "x.nii.gz")
    _write(_labels(0), tmp_path / "r" / "y.nii.gz")
    with pytest.raises(NoScansError, match="no case"):
        evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "out")
    with pytest.raises(NoScansError):
        evaluate(tmp_path / "missing", tmp_path / "r", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoScansError):
        evaluate(tmp_path / "p", tmp_path / "empty", tmp_path / "out")


def test_same_voxels_in_another_axis_order_are_reordered_not_refused(tmp_path):
    """A prediction stored flipped and transposed (nibabel, another affine) on the reference's very voxels."""
    ref_arr, pred_arr = _labels(0), _labels(0, shift=1)
    r = _write(ref_arr, tmp_path / "r" / "k.nii.gz")
    ref_img = nib.load(r)
    # voxel (i, j, k) of the new file is voxel (i, n_y - 1 - j, k) of the reference, axes stored as (j, i, k)
    flipped = np.flip(pred_arr, axis=1).transpose(1, 0, 2)
    (tmp_path / "p").mkdir()
    swap = np.array([[0, 1, 0, 0], [-1, 0, 0, SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(flipped, ref_img.affine @ swap), tmp_path / "p" / "k.nii.gz")
    assert aligned_to(read_scan(tmp_path / "p" / "k.nii.gz"), read_scan(r)) is not None
    ev = evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "out")
    want = compute_metrics(pred_arr, ref_arr, read_scan(r).spacing)
    assert not ev.failed and ev.rows[0].dice == pytest.approx(want[1].dice)


def test_unreadable_and_non_integer_maps_fail_alone(tmp_path):
    _write(_labels(0), tmp_path / "r" / "good.nii.gz")
    _write(_labels(1), tmp_path / "r" / "soft.nii.gz")
    _write(_labels(2), tmp_path / "r" / "broken.nii.gz")
    _write(_labels(0, shift=1), tmp_path / "p" / "good.nii.gz")
    _write(_labels(1) * 0.5, tmp_path / "p" / "soft.nii.gz")  # probabilities, not labels
    (tmp_path / "p" / "broken.nii.gz").write_bytes(b"not an image")
    ev = evaluate(tmp_path / "p", tmp_path / "r", tmp_path / "out")
    assert ev.cases == ["good"]
    assert sorted(f.split(":")[0] for f in ev.failed) == ["broken", "soft"]
    assert "integer" in next(f for f in ev.failed if f.startswith("soft"))


def test_images_beside_a_labels_folder_are_found(tmp_path):
    ref = _labels(0)
    _write(ref, tmp_path / "labels" / "a.nii.gz")
    _write(_labels(0, shift=1), tmp_path / "pred" / "a.nii.gz")
    img = (ref * 80 + np.random.default_rng(0).normal(0, 10, SHAPE)).astype(np.float32)
    _write(img, tmp_path / "images" / "a_0000.nii.gz")
    with_img = evaluate(tmp_path / "pred", tmp_path / "labels", tmp_path / "o1").thumbnails["a"]
    masks_only = evaluate(tmp_path / "pred", tmp_path / "labels", tmp_path / "o2", images={}).thumbnails["a"]
    assert len(with_img) == len(masks_only) >= 1
    assert with_img[0].png_base64 != masks_only[0].png_base64  # drawn over the image
    assert not math.isnan(with_img[0].dice[1])


def test_cli_evaluate_reports_failures_with_exit_1(folders, tmp_path, capsys):
    from medfcn import cli

    pred, ref = folders
    out = tmp_path / "report"
    assert cli.main(["evaluate", str(pred), str(ref), "-o", str(out), "--tolerance", "1.5"]) == 1
    said = capsys.readouterr()
    assert "Traceback" not in said.err
    assert "worst case: b" in said.out and "c: the prediction's grid differs" in said.out
    for name in ("metrics.csv", "metrics.json", "report.html"):
        assert (out / name).is_file()
    assert json.loads((out / "metrics.json").read_text())["tolerance_mm"] == 1.5
    assert cli.main(["evaluate", str(pred / "a.nii.gz"), str(ref / "a.nii.gz"), "-o", str(out)]) == 0
    assert cli.main(["evaluate", str(pred / "d.nii.gz"), str(ref), "-o", str(out)]) == 2  # nothing pairs
    assert capsys.readouterr().err.startswith("medfcn: error: no case")


def test_cli_runs_as_a_process(tmp_path):
    script = Path(sys.executable).with_name("medfcn")
    assert script.exists(), "the medfcn console script is not installed (pip install -e .)"
    p = _write(_labels(0, shift=1), tmp_path / "p.nii.gz")
    r = _write(_labels(0), tmp_path / "r.nii.gz")
    done = subprocess.run(
        [str(script), "evaluate", str(p), str(r), "-o", str(tmp_path / "out")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("evaluated 1 case")
