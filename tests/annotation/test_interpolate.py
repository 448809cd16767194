"""Fill between slices: hand-worked cases, ITK's filter called directly in a process of its own, the command in a
real process (exit status, geometry, refusals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.annotation.interpolate import (
    Plane,
    drawn_axis,
    interpolate_file,
    interpolate_labels,
    parse_key_slices,
    plane_axis,
)
from medfcn.annotation.itk_process import shared_interpolator
from medfcn.errors import OutputError, UnsupportedScanError, UsageError
from tests.support.scans import affine_from_codes, head_labels, head_volume, lps_geometry, write_scan_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # ITK's first use in a process takes 10-40 s


@pytest.fixture(scope="module")
def fill():
    """The process's shared ITK child (its first use loads ITK: 10 s or more), as napari's Annotate docks use it."""
    return shared_interpolator()


def _square(shape, k, lo, hi, axis=2):
    """A bool volume with the square [lo, hi)^2 on slice ``k`` across ``axis``."""
    out = np.zeros(shape, bool)
    index = [slice(lo, hi)] * 3
    index[axis] = k
    out[tuple(index)] = True
    return out


# ---- the rules, on hand-worked cases


def test_the_same_shape_on_two_slices_fills_every_slice_between_and_none_beyond(fill):
    labels = np.zeros((20, 20, 12), np.uint8)
    labels[_square(labels.shape, 2, 5, 11) | _square(labels.shape, 7, 5, 11)] = 3
    result = interpolate_labels(labels, 2, interpolator=fill)
    for k in range(12):
        expected = labels[..., 2] if 2 <= k <= 7 else np.zeros((20, 20), np.uint8)
        assert np.array_equal(result.labels[..., k], expected), k
    assert result.axis == 2 and result.slices == {3: (2, 7)} and result.added == {3: 4 * 36}
    assert result.labels.dtype == np.uint8


def test_a_growing_shape_lies_between_its_two_contours(fill):
    labels = np.zeros((24, 24, 9), np.uint8)
    labels[_square(labels.shape, 0, 10, 14) | _square(labels.shape, 8, 6, 18)] = 1
    out = interpolate_labels(labels, 2, interpolator=fill).labels > 0
    inner, outer = labels[..., 0] > 0, labels[..., 8] > 0
    areas = [int(out[..., k].sum()) for k in range(9)]
    assert areas == sorted(areas) and 16 < areas[4] < 144, areas
    for k in range(9):
        assert np.all(out[..., k] <= outer) and np.all(inner <= out[..., k]), k


def test_many_labels_in_one_call_overlaps_go_to_the_higher_label_and_painted_voxels_stay(fill):
    labels = np.zeros((30, 30, 10), np.uint8)
    labels[_square(labels.shape, 1, 4, 14)] = 1
    labels[_square(labels.shape, 7, 4, 14)] = 1
    labels[_square(labels.shape, 3, 8, 20)] = 2  # 2 overlaps 1's fill on slices 4-6, in [8, 14)^2
    labels[_square(labels.shape, 8, 8, 20)] = 2
    labels[5, 5, 5] = 7  # a painted voxel inside 1's fill, of a label on one slice only
    result = interpolate_labels(labels, 2, interpolator=fill)
    out = result.labels
    assert set(result.slices) == {1, 2, 7} and result.slices[1] == (1, 7) and result.slices[2] == (3, 8)
    assert np.all(out[8:14, 8:14, 4:7] == 2)  # both fills: the higher label
    assert np.all(out[4:8, 4:14, 2:7][out[4:8, 4:14, 2:7] != 7] == 1)  # 1 alone where 2 does not reach
    assert out[5, 5, 5] == 7  # painted, kept
    assert np.all(out[labels > 0] == labels[labels > 0])
    assert not out[..., 0].any() and not out[..., 9].any()


def test_adjacent_painted_slices_and_a_one_voxel_thin_structure_are_filled(fill):
    """ITK's own slice detection leaves both unfilled (checked against ITK directly below)."""
    labels = np.zeros((20, 20, 12), np.uint8)
    labels[_square(labels.shape, 1, 4, 10) | _square(labels.shape, 2, 4, 10) | _square(labels.shape, 8, 4, 10)] = 1
    labels[12, 3:17, 3] = 2  # a line one voxel thin, on slices 3 and 9
    labels[12, 3:17, 9] = 2
    out = interpolate_labels(labels, 2, interpolator=fill).labels
    assert all((out[..., k] == 1).sum() == 36 for k in range(1, 9))
    assert all((out[..., k] == 2).sum() == 14 for k in range(3, 10))


def test_a_checked_empty_slice_ends_the_label_there(fill):
    labels = np.zeros((20, 20, 13), np.uint8)
    labels[_square(labels.shape, 2, 5, 15) | _square(labels.shape, 10, 5, 15)] = 1
    labels[_square(labels.shape, 6, 16, 19)] = 2  # slice 6 holds another label
    free = interpolate_labels(labels, 2, interpolator=fill)
    assert (free.labels[..., 6] == 1).sum() == 100  # unchecked: 1 runs through slice 6
    checked = interpolate_labels(labels, 2, key_slices=(0, 6, 12), interpolator=fill)
    out = checked.labels
    assert np.array_equal(out[..., 6], labels[..., 6])  # a checked slice stays as painted
    assert checked.slices[1] == (2, 6, 10)  # 0 and 12 lie beyond label 1: not used
    sizes = [int((out[..., k] == 1).sum()) for k in range(2, 11)]
    assert sizes[0] == sizes[-1] == 100 and 0 < sizes[3] < sizes[1] < 100 and 0 < sizes[5] < sizes[7] < 100, sizes
    assert not out[..., :2].any() and not (out[..., 11:] == 1).any()


def test_nothing_to_fill_returns_the_map_unchanged_without_itk():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:5, 2:5, 2:5] = 300
    result = interpolate_labels(labels, 0, interpolator=_NeverCalled())
    assert result.axis is None and np.array_equal(result.labels, labels) and result.labels.dtype == np.int16


class _NeverCalled:
    def __call__(self, *args, **kwargs):
        raise AssertionError("ITK was asked to fill a map with nothing to fill")


def test_large_label_values_and_float_maps_keep_their_values(fill):
    labels = np.zeros((16, 16, 9), np.float32)
    labels[_square(labels.shape, 1, 3, 9) | _square(labels.shape, 7, 3, 9)] = 2001.0
    labels[_square(labels.shape, 2, 10, 14) | _square(labels.shape, 6, 10, 14)] = 70000.0
    out = interpolate_labels(labels, 2, interpolator=fill).labels
    assert out.dtype == np.int32 and set(np.unique(out)) == {0, 2001, 70000}
    assert (out[..., 4] == 2001).sum() == 36 and (out[..., 4] == 70000).sum() == 16


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.full((4, 4, 4), 0.5, np.float32), "not whole numbers"),
        (np.full((4, 4, 4), -1, np.int16), "negative"),
    ],
)
def test_a_map_that_is_not_of_labels_is_refused(array, words):
    with pytest.raises(UnsupportedScanError, match=words):
        interpolate_labels(array, 0)


def test_options_out_of_range_are_refused_before_itk_starts():
    labels = np.zeros((5, 6, 7), np.uint8)
    with pytest.raises(UsageError, match=r"outside the 7 slices \(0-6\)"):
        interpolate_labels(labels, 2, key_slices=(3, 7), interpolator=_NeverCalled())
    with pytest.raises(UsageError, match="not an index axis"):
        interpolate_labels(labels, 3, interpolator=_NeverCalled())
    with pytest.raises(UsageError, match="'1-x'"):
        parse_key_slices("4,1-x")
    with pytest.raises(UsageError, match="'9-3'"):
        parse_key_slices("9-3")
    assert parse_key_slices(" 7, 2-3,3 ") == (2, 3, 7) and parse_key_slices(None) == ()


def test_the_painted_axis_is_the_one_with_empty_slices_between_labelled_ones():
    labels = np.zeros((20, 21, 22), np.uint8)
    labels[4:12, ::4, 5:15] = 1  # painted on every 4th slice across index axis 1
    labels[13:18, 2:19:3, 3:9] = 2
    assert drawn_axis(labels) == 1
    assert drawn_axis(np.ones((4, 4, 4), np.uint8)) is None
    tie = np.zeros((9, 9, 9), np.uint8)
    tie[0, 0, 0] = tie[4, 4, 0] = 1  # gaps along axes 0 and 1 alike
    with pytest.raises(UsageError, match="give --axis"):
        drawn_axis(tie)


def test_a_plane_names_the_index_axis_napari_slices_through():
    _, _, direction = lps_geometry(affine_from_codes("LSA"))  # i left, j superior, k anterior
    assert plane_axis("axial", direction) == 1
    assert plane_axis(Plane.CORONAL, direction) == 2
    assert plane_axis("Sagittal", direction) == 0
    with pytest.raises(UsageError, match="not one of: auto, axial"):
        plane_axis("oblique", direction)


# ---- against ITK's filter called directly, in a process that has never imported SimpleITK

_ITK_DIRECT = textwrap.dedent(
    """
    import json, os, sys, numpy as np, itk
    labels = np.load(sys.argv[1])  # (Z, Y, X): ITK's numpy order
    axis, slices = int(sys.argv[3]), json.loads(sys.argv[4])
    out = []
    for custom in (True, False):
        f = itk.MorphologicalContourInterpolator[itk.Image[itk.UC, 3]].New()
        f.SetInput(itk.image_from_array(labels))
        f.SetAxis(axis)
        if custom:
            f.SetUseCustomSlicePositions(True)
            for label, where in slices.items():
                f.SetLabeledSliceIndices(axis, int(label), where)
        f.Update()
        out.append(itk.array_from_image(f.GetOutput()))
    np.save(sys.argv[2], np.stack(out))
    os._exit(0)  # ITK's wrapping can crash in interpreter teardown, after the work (seen with ITK alone too)
    """
)


def _itk_directly(tmp_path: Path, labels: np.ndarray, axis: int, slices) -> tuple[np.ndarray, np.ndarray]:
    """ITK's filter on ``labels`` (X, Y, Z) with ``slices`` as custom positions, and with its own slice detection."""
    src, dst = tmp_path / "in.npy", tmp_path / "out.npy"
    np.save(src, np.ascontiguousarray(labels.transpose(2, 1, 0)))
    run = subprocess.run(
        [sys.executable, "-c", _ITK_DIRECT, str(src), str(dst), str(axis), json.dumps(slices)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    custom, detected = np.load(dst)
    return custom.transpose(2, 1, 0), detected.transpose(2, 1, 0)


def test_the_same_as_itk_called_directly_on_a_multi_label_map(tmp_path, fill):
    """ITK with every label's slices as its custom positions, on the whole map at once: voxel for voxel what
    medfcn writes (which runs ITK label by label on each label's box). With ITK's own slice detection the thin
    line and the adjacent slices stay unfilled."""
    full = head_labels((40, 36, 30))  # 1 brain, 2 an off-centre blob
    full[5:9, 6:30, :] = np.where(full[5:9, 6:30, :] == 0, 3, full[5:9, 6:30, :])  # a slab touching the others
    sparse = np.zeros_like(full)
    keep = [3, 4, 9, 15, 21, 27]  # 3 and 4 adjacent
    sparse[..., keep] = full[..., keep]
    sparse[20, 4:30, 12] = 4  # a one-voxel line on slices 12 and 24
    sparse[20, 4:30, 24] = 4
    ours = interpolate_labels(sparse, 2, interpolator=fill)
    slices = {str(k): list(v) for k, v in ours.slices.items()}
    direct, detected = _itk_directly(tmp_path, sparse, 2, slices)
    assert np.array_equal(ours.labels, direct)
    between = [13, 14, 16, 17, 18, 19, 20, 22, 23]  # not the painted slices 15 and 21 (painted voxels stay)
    assert (ours.labels[20, 4:30, between] == 4).all() and not (detected[..., 13:24] == 4).any()
    assert (ours.labels[5:9, 6:30, 5:9] == 3).all() and not (detected[..., 5:9] == 3).any()
    for label in (1, 3):  # against the full map the fill is far better than the key slices alone
        dice = [
            2 * ((m == label) & (full == label)).sum() / ((m == label).sum() + (full == label).sum())
            for m in (ours.labels, sparse)
        ]
        assert dice[0] > 0.8 and dice[0] > dice[1] + 0.2, (label, dice)


# ---- the command, in a real process


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "medfcn.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_the_command_writes_the_filled_map_on_the_input_grid_and_exits_0(tmp_path, fill):
    """Exit status 0 (ITK and SimpleITK in one process abort at exit with 134), every geometry field equal to the
    input's, the same voxels as the library call; an oblique-free but reoriented (LSA) grid with odd spacing."""
    affine = affine_from_codes("LSA", spacing=(0.9, 2.5, 1.1), origin=(12.0, -40.0, 7.5))
    full = head_labels((30, 24, 28))
    sparse = np.zeros_like(full)
    sparse[:, ::3, :] = full[:, ::3, :]  # axial slices: index axis 1 is superior
    src = write_scan_file(tmp_path / "sparse.nii.gz", sparse, affine)
    out = tmp_path / "filled.nii.gz"
    run = _cli("interpolate", str(src), "-o", str(out), "--axis", "axial")
    assert run.returncode == 0, run.stderr
    assert "axial slices" in run.stdout and "written to" in run.stdout
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    assert np.array_equal(nib.load(out).affine, nib.load(src).affine)
    written = np.asanyarray(nib.load(out).dataobj)
    assert np.array_equal(written, interpolate_labels(sparse, 1, spacing=(0.9, 2.5, 1.1), interpolator=fill).labels)
    auto = tmp_path / "auto.nii.gz"
    interpolate_file(src, auto, interpolator=fill)  # the command's own function: auto finds index axis 1
    assert np.array_equal(np.asanyarray(nib.load(auto).dataobj), written)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--key-slices", "3,6"], "--key-slices needs --axis"),
        (["--axis", "oblique"], "not one of: auto, axial, coronal, sagittal"),
        (["--axis", "axial", "--key-slices", "2,x"], "'x' is not a slice number"),
    ],
)
def test_the_command_refuses_bad_options_with_one_line_and_status_2(tmp_path, args, words):
    src = write_scan_file(tmp_path / "l.nii.gz", head_labels((10, 11, 12)), np.eye(4))
    run = _cli("interpolate", str(src), "-o", str(tmp_path / "o.nii.gz"), *args)
    assert run.returncode == 2 and words in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_the_input_and_an_existing_output_are_never_overwritten(tmp_path):
    src = write_scan_file(tmp_path / "l.nii.gz", head_labels((10, 11, 12)), np.eye(4))
    before = src.read_bytes()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(src)
    for target in (src, link):
        with pytest.raises(OutputError, match="is the input label map"):
            interpolate_file(src, target, overwrite=True)
    other = tmp_path / "other.nii.gz"
    other.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="exists; give --overwrite"):
        interpolate_file(src, other)
    with pytest.raises(UsageError, match="must be a NIfTI file"):
        interpolate_file(src, tmp_path / "out.nrrd")
    assert src.read_bytes() == before and other.read_bytes() == b"keep me"


def test_a_scan_given_as_labels_is_refused_naming_the_file(tmp_path):
    src = write_scan_file(tmp_path / "t1.nii.gz", head_volume((10, 11, 12)), np.eye(4))
    run = _cli("interpolate", str(src), "-o", str(tmp_path / "o.nii.gz"))
    assert run.returncode == 1 and "t1.nii.gz: not a label map" in run.stderr, run.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_a_killed_itk_process_is_replaced_by_the_next_call(fill):
    labels = np.zeros((12, 12, 9), np.uint8)
    labels[_square(labels.shape, 1, 3, 9) | _square(labels.shape, 7, 3, 9)] = 1
    interpolate_labels(labels, 2, interpolator=fill)  # a warm child
    dead = fill._process
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait(timeout=30)  # gone for sure (a call racing the kill raises "ITK's interpolation process ended")
    assert (interpolate_labels(labels, 2, interpolator=fill).labels[..., 4] == 1).sum() == 36
    assert fill._process is not dead and fill._process.poll() is None


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_killed_command_leaves_no_itk_process_and_no_output(tmp_path):
    """``kill -9`` of ``medfcn interpolate`` while ITK loads: its child ends within seconds, nothing is written."""
    full = head_labels((30, 24, 28))
    sparse = np.zeros_like(full)
    sparse[..., ::3] = full[..., ::3]
    src = write_scan_file(tmp_path / "sparse.nii.gz", sparse, np.eye(4))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-m", "medfcn.cli", "interpolate", str(src), "-o", str(tmp_path / "out.nii.gz")], env=env
    )
    deadline = time.monotonic() + 300
    while not (child := _children(parent.pid)) and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child, "the command started no ITK process"
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    stat = Path(f"/proc/{child[0]}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", "the ITK process outlived it"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sparse.nii.gz"]
