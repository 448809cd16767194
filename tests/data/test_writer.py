"""Label maps written on the scan's own grid, as the smallest integer type, atomically."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from medfcn.data.reader import read_scan
from medfcn.data.writer import atomic_write_text, label_dtype, partial_path, remove_stale_partials, write_labels
from medfcn.errors import MedfcnError, OutputError
from tests.support.scans import affine_from_codes, assert_same_grid, head_labels, head_volume, oblique_affine, voxels_on

FORMATS = [
    ("t1.nii.gz", affine_from_codes("LSA"), {}),
    ("t1.nii.gz", oblique_affine(), {}),
    ("t1.nii", affine_from_codes("RAS"), {}),
    ("scan.nrrd", affine_from_codes("LSA"), {}),
    ("scan.nrrd", oblique_affine(), {}),
    ("scan.mha", affine_from_codes("RAS"), {}),
    ("scan.mhd", oblique_affine(), {}),
    ("series", affine_from_codes("LPS"), {}),
    ("series", affine_from_codes("LPI"), {"dicom_writer": "sitk"}),
    ("series", oblique_affine(), {}),
]


def gdcm_read(folder):
    r = sitk.ImageSeriesReader()
    r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


@pytest.mark.parametrize(("name", "affine", "kwargs"), FORMATS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(FORMATS)])
def test_label_map_overlays_the_scan(write_scan, tmp_path, name, affine, kwargs):
    src = write_scan(name, affine, np.round(head_volume()), **kwargs)
    scan = read_scan(src)
    labels = head_labels()
    out = write_labels(labels, scan, tmp_path / "out" / f"{scan.case}.nii.gz")
    assert out == tmp_path / "out" / f"{scan.case}.nii.gz" and out.is_file()
    written = sitk.ReadImage(str(out))
    assert written.GetPixelID() == sitk.sitkUInt8
    if name == "series":  # the same physical grid as GDCM's series reader gives
        reference = gdcm_read(src)
        voxels_on(reference, scan)
        voxels_on(written, scan)
    else:  # the same size, spacing, origin and direction as SimpleITK reads from the input file
        reference = sitk.ReadImage(str(src))
        assert_same_grid(written, reference, atol=1e-5)
    np.testing.assert_array_equal(voxels_on(written, scan), labels)
    # medfcn reads it back on the scan's grid
    back = read_scan(out)
    assert back.array.dtype == np.uint8 and back.grid.differences(scan.grid) == []
    np.testing.assert_array_equal(back.array, labels)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left


def test_grid_is_enough_to_write_on(tmp_path, write_scan):
    scan = read_scan(write_scan("s.mha", oblique_affine()))
    out = write_labels(head_labels(), scan.grid, tmp_path / "g.nii.gz")
    assert_same_grid(sitk.ReadImage(str(out)), scan)
    np.testing.assert_array_equal(read_scan(out).array, head_labels())


def test_label_dtype_is_uint8_unless_labels_need_more():
    assert label_dtype(np.array([0, 1, 255])) == np.uint8
    assert label_dtype(np.array([0, 256])) == np.uint16
    assert label_dtype(np.array([0, 65535])) == np.uint16
    assert label_dtype(np.array([0, 70000])) == np.int32
    assert label_dtype(np.array([-1, 3])) == np.int32
    assert label_dtype(np.zeros(0)) == np.uint8


@pytest.mark.parametrize(("top", "pixel"), [(2, sitk.sitkUInt8), (300, sitk.sitkUInt16), (70000, sitk.sitkInt32)])
def test_wider_type_only_when_needed(tmp_path, write_scan, top, pixel):
    scan = read_scan(write_scan("s.nrrd"))
    labels = head_labels().astype(np.int64) * (top // 2)
    out = write_labels(labels, scan, tmp_path / "lab")  # suffix added
    assert out.name == "lab.nii.gz"
    img = sitk.ReadImage(str(out))
    assert img.GetPixelID() == pixel
    np.testing.assert_array_equal(np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)), labels)


def test_labels_of_the_wrong_shape_are_a_programming_error(tmp_path, write_scan):
    scan = read_scan(write_scan("s.nii.gz"))
    with pytest.raises(ValueError, match="does not fit"):
        write_labels(np.zeros((3, 3, 3), np.uint8), scan, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


# -- atomicity -----------------------------------------------------------------------------------------------------
def test_partial_names_are_hidden_in_the_same_folder(tmp_path):
    p = partial_path(tmp_path / "case.nii.gz")
    assert p.parent == tmp_path and p.name.startswith(".case.nii.gz.") and p.name.endswith(".part.nii.gz")
    assert str(os.getpid()) in p.name
    assert partial_path(tmp_path / "manifest.json").name.endswith(".part.json")


def test_output_under_a_regular_file_is_an_output_error(tmp_path, write_scan):
    scan = read_scan(write_scan("s.nii.gz"))
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    target = blocker / "out" / "s.nii.gz"
    for write in (lambda: write_labels(head_labels(), scan, target), lambda: atomic_write_text(target, "{}")):
        with pytest.raises(OutputError) as e:
            write()
        assert isinstance(e.value, MedfcnError) and e.value.exit_code == 2
        assert "\n" not in str(e.value) and str(blocker / "out") in str(e.value)
    assert blocker.read_text() == "a file, not a folder"


def test_failed_rename_leaves_no_partial_file(tmp_path, write_scan):
    scan = read_scan(write_scan("s.nii.gz"))
    out = tmp_path / "out"
    (out / "s.nii.gz").mkdir(parents=True)  # a folder in the way: the final rename fails after the data is written
    (out / "s.nii.gz" / "keep").write_text("x")
    with pytest.raises(OutputError) as e:
        write_labels(head_labels(), scan, out / "s.nii.gz")
    assert str(out / "s.nii.gz") in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["s.nii.gz"]
    (out / "m.json").mkdir()
    (out / "m.json" / "keep").write_text("x")
    with pytest.raises(OutputError):
        atomic_write_text(out / "m.json", "{}")
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "s.nii.gz"]


def test_atomic_write_text_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "manifest.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second" and [p.name for p in path.parent.iterdir()] == ["manifest.json"]


_WRITER = """
import sys
import numpy as np
from medfcn.data.scan import Scan
from medfcn.data.writer import write_labels
rng = np.random.default_rng(0)
labels = rng.integers(0, 255, size=(400, 400, 400), dtype=np.uint8)  # incompressible: takes a while to write
scan = Scan(labels, (1, 1, 1), (0, 0, 0), np.eye(3))
print("ready", flush=True)
write_labels(labels, scan, sys.argv[1], compression_level=9)
"""


def test_killed_writer_leaves_only_a_hidden_partial_that_is_cleaned_up(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "big.nii.gz"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part.nii.gz") for p in out.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started its partial file"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    names = [p.name for p in out.iterdir()]
    assert not target.exists()
    assert len(names) == 1 and names[0].startswith(".big.nii.gz.") and str(proc.pid) in names[0]
    removed = remove_stale_partials(out)
    assert [p.name for p in removed] == names and list(out.iterdir()) == []


def test_remove_stale_partials_keeps_live_and_foreign_partials(tmp_path):
    host = socket.gethostname().replace(".", "-")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        live = tmp_path / f".a.nii.gz.{host}.{sleeper.pid}.part.nii.gz"
        stale = tmp_path / f".b.nii.gz.{host}.{dead.pid}.part.nii.gz"
        stale_odd = tmp_path / f".x.part2.nii.gz.{host}.{dead.pid}.part.nii.gz"  # a case name holding ".part"
        foreign = tmp_path / f".c.nii.gz.other-host.{dead.pid}.part.nii.gz"
        keep = [tmp_path / "d.nii.gz", tmp_path / ".hidden", live, foreign]
        for p in [*keep, stale, stale_odd]:
            p.write_bytes(b"x")
        assert sorted(remove_stale_partials(tmp_path)) == sorted([stale, stale_odd])
        assert sorted(tmp_path.iterdir()) == sorted(keep)
        assert remove_stale_partials(tmp_path / "missing") == []
    finally:
        sleeper.kill()
        sleeper.wait()
