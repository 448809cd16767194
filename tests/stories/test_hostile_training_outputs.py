"""Hostile inputs, round three (issue 32), for ``medfcn train``'s output: two runs writing one model, a full disk.

Real ``medfcn train`` processes on real files: the second run is started while the first holds the model, and the
full disk is the kernel's file size limit (``RLIMIT_FSIZE``, as ``ulimit -f`` sets it) in the child process, which
torch and safetensors meet as they would a full device (they report both in their own words).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.batch import SHAPE, write_cases
from tests.support.scans import affine_from_codes, head_labels, write_scan_file

pytestmark = pytest.mark.slow  # real training runs of a few seconds each

_TINY = ["--width", "4", "--spacing", "3", "--batch-size", "2", "--val-cases", "0", "--no-augment", "--quiet"]


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    write_cases(folder / "images", 1)
    labels = (head_labels(SHAPE) > 0).astype(np.uint8)
    write_scan_file(folder / "labels" / "case00.nii.gz", labels, affine_from_codes("LPS"))
    return folder


def _train(data: Path, output: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "medfcn.cli", "train", "--images", str(data / "images")]
    return [*base, "--labels", str(data / "labels"), "-o", str(output), *_TINY, *extra]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=env, **kw)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 2. two runs writing the same -o: the second is refused, the first's model and state stay one run's ----------
def test_a_second_train_run_writing_the_same_model_is_refused(tmp_path, data):
    import torch

    from medfcn.model.checkpoint import load_model

    model = tmp_path / "m" / "model.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        _train(data, model, "--epochs", "1000", "--steps-per-epoch", "2", "--max-minutes", "0.25"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        lock = model.with_name(f".{model.name}.lock")
        deadline = time.monotonic() + 120
        while not model.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the first run has written its first epoch's model: it holds the lock
        assert model.exists() and first.poll() is None, "the first run ended before the second started"
        holder = lock.read_text(encoding="utf-8") if lock.exists() else ""
        second = _run(_train(data, model, "--epochs", "1", "--steps-per-epoch", "2", "--width", "8"))
        still_running = first.poll() is None
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert still_running, "the first run ended before the second was refused: the test proves nothing"
    # was: both exit 0 and say "model written"; the file held one run's model, .state.pt the other's
    assert second.returncode == 2, second.stderr[-2000:]
    [line] = [x for x in second.stderr.splitlines() if "another medfcn train" in x]
    assert str(model) in line and f"pid {first.pid}" in line and "Traceback" not in second.stderr
    assert f"pid {first.pid}" in holder
    assert first.returncode == 0 and b"model written" in out + err, err[-2000:]
    assert not lock.exists()  # released when the first run ended
    width = load_model(model).network.config.to_dict()["width"]
    state = torch.load(model.with_name(model.name + ".state.pt"), weights_only=True)
    assert width == 4 and state["network"].keys() == load_model(model).network.state_dict().keys()
    for name, weight in load_model(model).network.state_dict().items():
        assert state["network"][name].shape == weight.shape, name


def test_a_lock_left_by_a_killed_run_is_taken_by_the_next(tmp_path):
    from medfcn.training.output import writing

    output = tmp_path / "model.safetensors"
    output.with_name(f".{output.name}.lock").write_text("pid 999999 on elsewhere", encoding="utf-8")  # not held
    with writing(output):
        pass
    assert sorted(tmp_path.iterdir()) == []


# -- rough edge: a full disk ends the run in one line naming the file, and keeps what was written ------------------
_FULL = """
import resource, signal, sys
from medfcn.cli import main
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as one past a full disk
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("limit", "existing", "failed"),
    [
        (100_000, False, "model.safetensors"),  # the 309 KB model cannot be written (safetensors' error)
        (600_000, False, "model.safetensors.state.pt"),  # the model is, its 968 KB state is not (torch's error)
        (600_000, True, "model.safetensors.state.pt"),  # over an existing model: kept until the run ends
    ],
    ids=["model", "state", "over-a-model"],
)
def test_train_onto_a_full_disk_says_so_in_one_line(tmp_path, data, limit, existing, failed):
    from tests.support.batch import train_tiny_model

    model = tmp_path / "m" / "model.safetensors"
    if existing:
        train_tiny_model(model)
    before = _sha(model) if existing else None
    cmd = _train(data, model, "--epochs", "2", "--steps-per-epoch", "2")
    done = _run([sys.executable, "-c", _FULL, str(limit), *cmd[3:]])
    # was: "internal error: RuntimeError: [enforce fail at inline_container.cc:672]" (torch) or SafetensorError
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if "error" in x]
    assert f"{model.parent / failed}: cannot write (File too large" in line, line
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    hidden = model.with_name(f".{model.name}.training.safetensors")
    if existing:  # the earlier model is untouched; this run's best so far is named, for --resume
        assert _sha(model) == before and f"best model so far is {hidden}" in line and "is unchanged" in line
    elif failed.endswith("state.pt"):
        assert f"best model so far is {model}" in line
    else:
        assert not model.exists() and "best model so far" not in line
    assert "--resume" in line
    left = {p.name for p in model.parent.iterdir()} - {model.name, hidden.name}
    assert not left, left  # no partial file under any name
    if existing:  # with room again, --resume finishes the run and its best replaces the earlier model
        again = _run(cmd + ["--resume"])
        assert again.returncode == 0 and "model written" in again.stdout + again.stderr, again.stderr[-2000:]
        assert _sha(model) != before and not hidden.exists()


# -- a best model left by an earlier run that did not end is never put over OUTPUT by a run that finished nothing ---
def test_a_run_that_finishes_no_epoch_leaves_the_model_at_output_alone(tmp_path, data):
    from medfcn.training.options import NetworkOptions
    from medfcn.training.train import TrainConfig, iter_train
    from tests.support.batch import train_tiny_model

    model = train_tiny_model(tmp_path / "model.safetensors")
    hidden = model.with_name(f".{model.name}.training.safetensors")
    stale = train_tiny_model(hidden, shape=(20, 24, 18))  # another model: an earlier run's best, left
    before = _sha(model)
    config = TrainConfig(
        images=str(data / "images"),
        labels=str(data / "labels"),
        output=str(model),
        spacing=3.0,
        epochs=2,
        steps_per_epoch=2,
        batch_size=2,
        augment=False,
        device="cpu",
        network=NetworkOptions(width=4),
    )
    run = iter_train(config, cancel=lambda: True)  # cancelled at its first step: no epoch finished
    try:
        while True:
            next(run)
    except StopIteration as stop:
        summary = stop.value
    assert summary.cancelled and summary.epochs == 0
    assert _sha(model) == before  # was: the earlier run's hidden best renamed over OUTPUT
    assert stale.exists()  # left for the --resume of the run it belongs to
