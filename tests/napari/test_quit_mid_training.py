"""Quitting napari while the Train dock trains (issue 33), in a real viewer in a process of its own (run under
``xvfb-run -a``): the process exits cleanly (it aborted with SIGABRT, "GeneratorWorkerSignals has been deleted"),
the training child process ends, and no copy of the scan is left in the temporary folder, whose copies only the
user could read while they existed. Closing the Train dock alone does the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.napari import gui

SCRIPT = r"""
import json, os, stat, sys, time
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
import medfcn.training.corrections as corrections
corrections.STEPS_PER_EPOCH = 1000  # one long epoch: the child is busy when the viewer goes
from napari_plugin._layers import labels_to_display
from tests.support.scans import head_labels

scan_file, model, how = sys.argv[1], sys.argv[2], sys.argv[3]
viewer = napari.Viewer()
(image,) = viewer.open(scan_file, plugin="medfcn")
_, segment = viewer.window.add_plugin_dock_widget("medfcn", "Segment")
segment.image.value = image
segment.use_model(model)
segment.device.value = "cpu"
segment.run()
def wait(cond, s=120):
    t0 = time.monotonic()
    while not cond():
        QApplication.processEvents(); time.sleep(0.01)
        if time.monotonic() - t0 > s:
            raise TimeoutError
wait(lambda: "head_labels" in viewer.layers and segment.run_button.enabled)
labels = viewer.layers["head_labels"]
truth = labels_to_display((head_labels() > 0).astype(np.uint8), image.as_layer_data_tuple()[1])
index = np.nonzero(np.ones(truth.shape[1:], bool))
labels.data_setitem((np.full(index[0].size, 12), *index), truth[12][index])
_, train = viewer.window.add_plugin_dock_widget("medfcn", "Train")
train.image.value, train.label_layer.value, train.minutes.value = image, labels, 5.0
assert train.run() is not None, train.status.value
wait(lambda: train.child_pid is not None and any(train.folder.rglob("images/*.nii.gz")))
copies = list(train.folder.rglob("*.nii.gz"))
modes = {str(p.relative_to(train.folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in copies}
info = {"folder": str(train.folder), "pid": train.child_pid, "modes": modes,
        "folder_mode": oct(stat.S_IMODE(train.folder.stat().st_mode))}
print("INFO " + json.dumps(info), flush=True)
if how == "dock":  # the dock's own close button (its title bar's x)
    from qtpy.QtWidgets import QDockWidget
    dock = train.native
    while not isinstance(dock, QDockWidget):
        dock = dock.parent()
    dock.destroyOnClose()
    wait(lambda: not train.folder.exists(), 30)
    print("DOCK_CLOSED", flush=True)
viewer.close()
QApplication.processEvents()
print("CLOSED", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its parent, which is gone too) counts as ended
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@gui
@pytest.mark.slow
@pytest.mark.parametrize("how", ["viewer", "dock"])
def test_closing_mid_training_ends_the_child_and_leaves_no_copy(tiny_model, scan_file, tmp_path, how):
    env = {**os.environ, "NAPARI_CONFIG": str(tmp_path / "napari.yaml")}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(scan_file), str(tiny_model), how],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = out.stdout.splitlines()
    info = json.loads(next(line for line in lines if line.startswith("INFO "))[5:])
    assert out.returncode == 0, (out.returncode, out.stderr[-3000:])
    assert "Abort" not in out.stderr and "has been deleted" not in out.stderr, out.stderr[-3000:]
    assert "CLOSED" in lines
    assert info["folder_mode"] == "0o700" and info["modes"] and set(info["modes"].values()) == {"0o600"}, info
    deadline = time.monotonic() + 10
    while _alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(info["pid"]), "the training process outlived the viewer"
    assert not Path(info["folder"]).exists(), list(Path(info["folder"]).rglob("*"))
