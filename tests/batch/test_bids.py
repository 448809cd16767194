"""``medfcn bids BIDS_DIR OUTPUT_DIR participant`` (medfcn.batch.bids): a BIDS App on a dataset built from the sample
scans (two participants, two sessions, two runs, acq- entity, T1w and T2w), checked by the real BIDS validator
(``bids-validator-deno``, offline) and by pybids reading the derivatives; each mask against ``medfcn segment``'s label
map of the same scan, each skull-stripped image against the input times the mask (nibabel), the statistics against
SimpleITK. Bad input: one line, exit status 2, nothing written.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfcn import __version__
from medfcn.cli import main
from medfcn.data.writer import file_sha256
from medfcn.model.checkpoint import DEFAULT_MODEL_PATH

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_data" / "images"
IMAGES = {  # the raw dataset: relative path -> the sample scan it holds
    "sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz": "colin27",
    "sub-01/ses-1/anat/sub-01_ses-1_run-1_T2w.nii.gz": "robex_head",  # same entities, other suffix
    "sub-01/ses-2/anat/sub-01_ses-2_run-2_T1w.nii.gz": "robex_head",
    "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T1w.nii.gz": "robex_head",
}
MASKS = {
    "sub-01/ses-1/anat/sub-01_ses-1_run-1_T1w.nii.gz": "sub-01/ses-1/anat/sub-01_ses-1_run-1_desc-brain_mask.nii.gz",
    "sub-01/ses-1/anat/sub-01_ses-1_run-1_T2w.nii.gz": "sub-01/ses-1/anat/sub-01_ses-1_run-1_desc-brainT2w_mask.nii.gz",
    "sub-01/ses-2/anat/sub-01_ses-2_run-2_T1w.nii.gz": "sub-01/ses-2/anat/sub-01_ses-2_run-2_desc-brain_mask.nii.gz",
    "sub-02/ses-1/anat/sub-02_ses-1_acq-fast_T1w.nii.gz": "sub-02/ses-1/anat/"
    "sub-02_ses-1_acq-fast_desc-brain_mask.nii.gz",
}


def make_dataset(root: Path) -> Path:
    root.mkdir(parents=True)
    description = {"Name": "medfcn sample heads", "BIDSVersion": "1.10.0", "Authors": ["medfcn", "tests"]}
    (root / "dataset_description.json").write_text(json.dumps(description))
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\n")
    for rel, sample in IMAGES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / f"{sample}.nii.gz", root / rel)
        (root / rel.replace(".nii.gz", ".json")).write_text(json.dumps({"RepetitionTime": 2.3}))
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, modification time) and folder (by name) under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def validator() -> str:
    """The ``bids-validator-deno`` executable of this environment (a dev dependency)."""
    here = Path(sys.executable).parent / "bids-validator-deno"
    return str(here) if here.exists() else shutil.which("bids-validator-deno") or "bids-validator-deno"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The raw dataset, a bids run into its derivatives/medfcn, and a segment run of the two sample scans."""
    tmp = tmp_path_factory.mktemp("bids")
    raw = make_dataset(tmp / "raw")
    out = raw / "derivatives" / "medfcn"
    argv = ["bids", str(raw), str(out), "participant", "--suffix", "T1w", "T2w", "--statistics"]
    code = main([*argv, "--device", "cpu", "--quiet"])
    plain = tmp / "plain"
    assert main(["segment", str(SAMPLES), "-o", str(plain), "--device", "cpu", "--quiet"]) == 0
    return raw, out, plain, code


@pytest.mark.slow
def test_the_derivatives_pass_the_bids_validator(run):
    raw, out, _, code = run
    assert code == 0
    done = subprocess.run(
        [validator(), str(out), "--format", "json"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    report = json.loads(done.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [] and done.returncode == 0


@pytest.mark.slow
def test_pybids_finds_every_mask_with_its_entities(run):
    from bids import BIDSLayout

    raw, out, _, _ = run
    layout = BIDSLayout(str(raw), derivatives=str(out))
    found = layout.get(suffix="mask", extension=".nii.gz", scope="derivatives")
    assert sorted(Path(f.path).relative_to(out).as_posix() for f in found) == sorted(MASKS.values())
    t1 = layout.get(suffix="mask", desc="brain", subject="02", acquisition="fast", scope="derivatives")
    assert [f.filename for f in t1 if f.filename.endswith(".nii.gz")] == [Path(MASKS[list(IMAGES)[3]]).name]
    assert layout.get(suffix="mask", desc="brainT2w", session="1", run=1, extension=".nii.gz", scope="derivatives")
    stripped = layout.get(desc="brain", suffix=["T1w", "T2w"], extension=".nii.gz", scope="derivatives")
    assert len(stripped) == len(IMAGES)


@pytest.mark.slow
def test_masks_are_segments_and_stripped_images_are_input_times_mask(run):
    raw, out, plain, _ = run
    model_sha = file_sha256(DEFAULT_MODEL_PATH)
    verdicts = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["cases"]
    for rel, sample in IMAGES.items():
        mask_path = out / MASKS[rel]
        mask = np.asarray(nib.load(str(mask_path)).dataobj)
        assert np.array_equal(mask, np.asarray(nib.load(str(plain / f"{sample}.nii.gz")).dataobj))
        name = Path(rel).name
        suffix = name.split("_")[-1].split(".")[0]
        stripped_path = mask_path.parent / name.replace(f"_{suffix}.nii.gz", f"_desc-brain_{suffix}.nii.gz")
        source, stripped = nib.load(str(raw / rel)), nib.load(str(stripped_path))
        assert stripped.get_data_dtype() == source.get_data_dtype() and stripped.shape == source.shape
        assert stripped.header.get_slope_inter() == source.header.get_slope_inter()
        inside = (mask != 0).reshape(mask.shape + (1,) * (len(source.shape) - 3))
        assert np.array_equal(np.asanyarray(stripped.dataobj), np.asanyarray(source.dataobj) * inside)

        sidecar = json.loads(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Type"] == "Brain" and sidecar["Sources"] == [f"bids:raw:{rel}"]
        entry = next(c for c in verdicts if Path(c["output"]).resolve() == mask_path.resolve())
        assert set(entry["quality"]) == {"review", "score", "reasons"}  # the verdict of that case, as in the manifest
        assert sidecar["medfcn"] == {
            "model": "medfcn-brain-t1",
            "model_sha256": model_sha,
            "medfcn_version": __version__,
            "quality": entry["quality"],
        }
        side = json.loads(stripped_path.with_name(stripped_path.name.replace(".nii.gz", ".json")).read_text())
        assert side["SkullStripped"] is True and side["Sources"] == [f"bids:raw:{rel}", f"bids::{MASKS[rel]}"]
        for uri in side["Sources"]:  # BIDS URIs that resolve: raw through DatasetLinks, bids:: in this dataset
            dataset, _, path = uri.removeprefix("bids:").partition(":")
            assert (
                out
                / (
                    json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]["raw"]
                    if dataset == "raw"
                    else "."
                )
                / path
            ).is_file()
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "medfcn" and description["GeneratedBy"][0]["Version"] == __version__
    assert model_sha in description["GeneratedBy"][0]["Description"]


@pytest.mark.slow
def test_statistics_agree_with_simpleitk(run):
    raw, out, _, _ = run
    rows = {r["case"]: r for r in csv.DictReader((out / "statistics.csv").open())}
    assert sorted(rows) == sorted(Path(rel).name.removesuffix(".nii.gz") for rel in IMAGES)
    for rel in IMAGES:
        row = rows[Path(rel).name.removesuffix(".nii.gz")]
        image = sitk.Cast(sitk.ReadImage(str(raw / rel)), sitk.sitkFloat64)
        if image.GetDimension() == 4:
            image = image[:, :, :, 0]
        labels = sitk.ReadImage(str(out / MASKS[rel]))
        labels.CopyInformation(image)
        stats, shape = sitk.LabelStatisticsImageFilter(), sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(image, labels)
        shape.Execute(labels)
        assert int(row["voxels"]) == stats.GetCount(1)
        assert float(row["volume_ml"]) == pytest.approx(shape.GetPhysicalSize(1) / 1000, rel=1e-5)
        assert float(row["mean"]) == pytest.approx(stats.GetMean(1), rel=1e-5)
        assert float(row["std"]) == pytest.approx(stats.GetSigma(1), rel=1e-5)


@pytest.mark.slow
def test_a_rerun_resumes(run, capsys):
    raw, out, _, _ = run
    before = snapshot(out)
    argv = ["bids", str(raw), str(out), "participant", "--suffix", "T1w", "T2w", "--statistics", "--quiet"]
    assert main(argv) == 0
    assert "0 segmented, 4 kept, 0 failed" in capsys.readouterr().out
    after = snapshot(out)
    changed = {k for k in before if before[k] != after.get(k)} | (set(after) - set(before))
    assert changed <= {"manifest.json", "statistics.csv"}  # every image's files kept as they were
    # one participant, one session: only its images are in this run's manifest
    assert main(["bids", str(raw), str(out), "participant", "--participant-label", "sub-02", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["case"] for c in manifest["cases"]] == ["sub-02_ses-1_acq-fast_T1w"]
    assert manifest["cases"][0]["status"] == "skipped"


@pytest.mark.parametrize(
    "case",
    ["not BIDS", "no such participant", "no such session", "no such suffix", "output inside", "level", "no T2w"],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, case, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes((SAMPLES / "robex_head.nii.gz").read_bytes())
    out, level, extra = tmp_path / "out", "participant", []
    if case == "not BIDS":
        (raw / "dataset_description.json").unlink()
    elif case == "no such participant":
        extra = ["--participant-label", "07"]
    elif case == "no such session":
        extra = ["--session-label", "2"]
    elif case == "no such suffix":
        extra = ["--suffix", "FLAIR"]
    elif case == "output inside":
        out = raw / "sub-01" / "medfcn"
    elif case == "level":
        level = "group"
    elif case == "no T2w":
        extra = ["--participant-label", "01", "--suffix", "T2w"]
    before = snapshot(tmp_path)
    assert main(["bids", str(raw), str(out), level, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfcn: error: ") and "\n" not in err, err
    assert snapshot(tmp_path) == before  # nothing written, in the dataset or anywhere else


def label_model(path: Path, labels: dict[str, int]) -> Path:
    """An untrained FCN with ``labels`` (its outputs are arbitrary: the naming and the files are under test)."""
    import torch

    from medfcn.model.checkpoint import ModelCard, save_model
    from medfcn.model.network import FCN

    torch.manual_seed(0)
    net = FCN(in_channels=3, num_classes=len(labels), width=4, max_width=8, depth=2, variant="fcn16s", stem_stride=1)
    card = ModelCard(network=net.config.to_dict(), name="label-test", labels=labels, spacing=(1.5, 1.5, 1.5))
    return save_model(path, net.eval(), card)


@pytest.mark.parametrize(
    "labels, mask",
    [
        ({"background": 0, "grey matter": 1, "white matter": 2}, "sub-01_ses-1_desc-medfcn_dseg"),
        ({"background": 0, "tumour": 1}, "sub-01_ses-1_desc-tumour_mask"),
    ],
)
def test_other_models_write_dseg_or_their_label_and_pass_the_validator(tmp_path, labels, mask):
    from bids import BIDSLayout

    from tests.support.scans import affine_from_codes, head_volume, write_scan_file

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    write_scan_file(
        raw / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", head_volume((24, 28, 20)), affine_from_codes("LPS")
    )
    model = label_model(tmp_path / "model.safetensors", labels)
    out = tmp_path / "deriv"
    argv = ["bids", str(raw), str(out), "participant", "--model", str(model), "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    anat = out / "sub-01" / "ses-1" / "anat"
    names = sorted(p.name for p in anat.iterdir())
    stripped = "sub-01_ses-1_desc-medfcn_T1w" if "dseg" in mask else "sub-01_ses-1_desc-tumour_T1w"
    tsv = [f"{mask}.tsv"] if "dseg" in mask else []
    assert names == sorted([f"{mask}.json", f"{mask}.nii.gz", *tsv, f"{stripped}.json", f"{stripped}.nii.gz"])
    sidecar = json.loads((anat / f"{mask}.json").read_text())
    if "dseg" in mask:
        assert (anat / f"{mask}.tsv").read_text() == "index\tname\n0\tbackground\n1\tgrey matter\n2\twhite matter\n"
        assert "Type" not in sidecar
    else:
        assert sidecar["Type"] == "ROI"
    assert json.loads((anat / f"{stripped}.json").read_text())["SkullStripped"] is False  # the validator requires it
    done = subprocess.run(
        [validator(), str(out), "--format", "json"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=300,
    )
    assert [i for i in json.loads(done.stdout)["issues"]["issues"] if i["severity"] == "error"] == []
    found = BIDSLayout(str(raw), derivatives=str(out)).get(scope="derivatives", extension=".nii.gz")
    assert sorted(f.filename for f in found) == sorted([f"{mask}.nii.gz", f"{stripped}.nii.gz"])


def test_a_second_run_into_the_same_output_is_refused(tmp_path, capsys):
    from medfcn.batch.run import _lock, _unlock

    raw = tmp_path / "raw"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    (raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes((SAMPLES / "robex_head.nii.gz").read_bytes())
    out = raw / "derivatives" / "medfcn"
    out.mkdir(parents=True)
    _lock(out)  # as a run in progress holds it
    try:
        before = snapshot(tmp_path)
        assert main(["bids", str(raw), str(out), "participant", "--device", "cpu", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "another medfcn segment is writing into this folder" in err and "\n" not in err
        assert snapshot(tmp_path) == before
    finally:
        _unlock(out)
