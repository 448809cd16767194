"""The command line as a user meets it: help, exit statuses, one-line errors, the sample run end to end."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medfcn.cli", *args], cwd=cwd, capture_output=True, encoding="utf-8", errors="replace"
    )


@pytest.mark.parametrize("command", ["segment", "evaluate", "train", "interpolate", "export", "info"])
def test_every_subcommand_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: medfcn " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["segment", "no_such_scan.nii.gz", "-o", "{tmp}/out"], 2, "no such file"),
        (["segment", "sample_data/images", "-o", "README.md/sub"], 2, "cannot write"),
        (["info", "README.md"], 2, "not a medfcn model"),
        (["train", "-o", "{tmp}/m.safetensors"], 2, "--images and --labels"),
        (
            ["evaluate", "sample_data/labels", "sample_data/labels", "-o", "{tmp}/r", "--tolerance", "-1"],
            2,
            "tolerance",
        ),
        (["segment", "sample_data/images"], 2, "-o/--output"),
    ],
)
def test_bad_usage_gives_one_line_and_status_2(tmp_path, args, code, words):
    result = _cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode == code
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_info_describes_the_bundled_model():
    result = _cli("info")
    assert result.returncode == 0
    assert "medfcn-brain-t1" in result.stdout and "background=0, brain=1" in result.stdout
    assert "medfcn train" in result.stdout


def test_segment_then_dice_report_on_a_small_copy_of_the_sample(tmp_path):
    """The README's main job, on a 2 mm copy of the sample to stay fast."""
    for kind, interp in (("images", sitk.sitkLinear), ("labels", sitk.sitkNearestNeighbor)):
        img = sitk.ReadImage(str(ROOT / "sample_data" / kind / "colin27.nii.gz"))
        small = sitk.Resample(
            img, [91, 109, 91], sitk.Transform(), interp, img.GetOrigin(), (2.0, 2.0, 2.0), img.GetDirection()
        )
        (tmp_path / kind).mkdir()
        sitk.WriteImage(small, str(tmp_path / kind / "head.nii.gz"))
    result = _cli(
        "segment",
        str(tmp_path / "images"),
        "-o",
        str(tmp_path / "out"),
        "--reference",
        str(tmp_path / "labels"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "brain (1): Dice" in result.stdout
    out = sitk.ReadImage(str(tmp_path / "out" / "head.nii.gz"))
    ref = sitk.ReadImage(str(tmp_path / "labels" / "head.nii.gz"))
    assert out.GetSize() == ref.GetSize() and np.allclose(out.GetOrigin(), ref.GetOrigin())
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk.Cast(ref, sitk.sitkUInt8), sitk.Cast(out, sitk.sitkUInt8))
    assert overlap.GetDiceCoefficient() > 0.93  # the bundled model's floor on a 2 mm copy of its training subject
    rows = list(csv.DictReader(open(tmp_path / "out" / "evaluation" / "metrics.csv")))
    assert rows[0]["case"] == "head" and abs(float(rows[0]["dice"]) - overlap.GetDiceCoefficient()) < 1e-4


def test_a_process_started_by_the_command_line_lets_idle_openmp_threads_sleep():
    """OMP_WAIT_POLICY is read when torch loads its OpenMP runtime: the CLI sets it first, unless the user did."""
    code = (
        "import os, sys; from medfcn.cli import main; os.environ.pop('OMP_WAIT_POLICY', None); "
        "assert 'torch' not in sys.modules; main(['info']); print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, encoding="utf-8", errors="replace", cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "PASSIVE"
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    kept = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from medfcn.cli import main; main(['info']); print(os.environ['OMP_WAIT_POLICY'])",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=ROOT,
        env=env,
    )
    assert kept.stdout.strip().splitlines()[-1] == "ACTIVE"


def test_help_and_usage_errors_answer_before_torch_is_imported():
    """``medfcn --help`` and a usage error import neither torch nor MONAI (they cost seconds)."""
    probe = (
        "import sys\n"
        "from medfcn.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['segment', '--help'], ['train', '-o', 'm.safetensors']):\n"
        "    try:\n"
        "        code = main(argv)\n"
        "    except SystemExit as e:\n"
        "        code = e.code\n"
        "    assert code in (0, 2), (argv, code)\n"
        "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "give --images and --labels" in done.stderr


def test_a_reader_that_stops_reading_is_not_an_error(tmp_path):
    """`medfcn info MODEL | grep -q X` under `set -o pipefail`: grep exits at its match and the rest of the output
    meets a closed pipe; medfcn ends quietly with status 0 (it failed with an internal error when the environment
    made stdout unbuffered, as PYTHONUNBUFFERED=1 does)."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader is gone before medfcn writes a byte
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "medfcn.cli", "info"], stdout=write, stderr=subprocess.PIPE, env=env, timeout=120
    )
    os.close(write)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"internal error" not in done.stderr
