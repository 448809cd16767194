"""Headers that promise more than they hold (issue 25 point 4 and its neighbours): every read is bounded by its
header before anything is allocated.

Each bomb is read in a child process under an address-space limit (``RLIMIT_AS``: what it had after importing
medfcn plus 1.5 GB) and a time limit, so a regression fails the test instead of filling the machine.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfcn.data.reader import read_scan
from medfcn.errors import MedfcnError, ScanReadError, UnsupportedScanError
from tests.support.scans import affine_from_codes, head_volume, write_dicom_pydicom

_CHILD = """
import resource, sys
from medfcn.data.reader import read_scan
from medfcn.errors import MedfcnError
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 29), size + (3 << 29)))
try:
    scan = read_scan(sys.argv[1])
except MedfcnError as e:
    print("REFUSED", type(e).__name__, e)
else:
    print("READ", scan.shape, scan.warnings)
"""


def read_bounded(path: Path, timeout: float = 60) -> str:
    """What reading ``path`` gives in a child process under a memory and a time limit: ``REFUSED ...`` or
    ``READ ...`` (a MemoryError or any traceback fails the test)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0 and done.stdout.startswith(("REFUSED", "READ")), done.stderr[-2000:]
    return done.stdout.strip()


def _nifti_bomb(path: Path, shape, dtype, pixdim=(1.0, 1.0, 1.0), payload: int = 8 << 20, random=False) -> Path:
    """A ``.nii.gz`` whose header says ``shape`` x ``dtype`` and whose gzip stream holds ``payload`` bytes: zeros, or
    ``random`` ones (incompressible: the file is as large as a real scan of that header could be, ~1/1000)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms(pixdim)
    header.set_qform(np.diag([*pixdim, 1.0]), code=1)
    data = np.random.default_rng(0).integers(0, 256, payload, np.uint8).tobytes() if random else b"\0" * payload
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\0" * 4)  # vox_offset 352
        f.write(data)
    return path


@pytest.mark.parametrize(
    ("shape", "dtype", "pixdim", "payload"),
    [((2000, 2000, 2000), np.uint8, (1.0,) * 3, 8_000_000), ((1710, 1710, 1710), np.float32, (0.5,) * 3, 20_000_000)],
)
def test_a_nifti_with_a_huge_header_is_refused_before_allocating(tmp_path, shape, dtype, pixdim, payload):
    """8 and 20 MB of incompressible data: as much as deflate could expand to the header's size (~1032:1), so the
    file's size alone cannot refuse it; the voxel bound does, in the header."""
    path = _nifti_bomb(tmp_path / "bomb.nii.gz", shape, dtype, pixdim, payload, random=True)
    out = read_bounded(path, timeout=30)
    assert out.startswith("REFUSED UnsupportedScanError") and str(path) in out and "MEDFCN_MAX_VOXELS" in out


def test_a_small_nifti_with_a_huge_header_is_refused_as_truncated(tmp_path):
    path = _nifti_bomb(tmp_path / "bomb.nii.gz", (2000, 2000, 2000), np.uint8)
    assert path.stat().st_size < 100_000
    assert read_bounded(path, timeout=30).startswith("REFUSED ScanReadError")


def test_a_nifti_header_within_the_bound_but_longer_than_its_stream_is_refused(tmp_path):
    path = _nifti_bomb(tmp_path / "bomb.nii.gz", (1000, 1000, 1000), np.uint8, payload=1 << 20)
    out = read_bounded(path, timeout=30)
    assert out.startswith("REFUSED ScanReadError") and "truncated or a damaged header" in out


def test_the_bound_is_raised_by_the_environment(tmp_path, monkeypatch):
    path = _nifti_bomb(tmp_path / "small.nii.gz", (40, 40, 40), np.uint8, payload=64_000)
    monkeypatch.setenv("MEDFCN_MAX_VOXELS", "1000")
    with pytest.raises(UnsupportedScanError, match="more than the 1e\\+03"):
        read_scan(path)
    monkeypatch.setenv("MEDFCN_MAX_VOXELS", "1e5")
    assert read_scan(path).shape == (40, 40, 40)


def _mhd(path: Path, data_file: str, size=(1024, 1024, 1024), element="MET_FLOAT") -> Path:
    path.write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCompressedData = False\n"
        f"DimSize = {' '.join(map(str, size))}\nElementSpacing = 1 1 1\nElementType = {element}\n"
        f"ElementDataFile = {data_file}\n"
    )
    return path


@pytest.mark.parametrize("device", ["/dev/urandom", "/dev/zero"])
def test_a_metaimage_reading_a_device_is_refused(tmp_path, device):
    out = read_bounded(_mhd(tmp_path / "bomb.mhd", device), timeout=30)
    assert out.startswith("REFUSED ScanReadError") and device in out and "not a regular file" in out


def test_a_metaimage_data_file_outside_its_folder_is_read_and_said(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "in").mkdir()
    voxels = np.round(head_volume((12, 10, 8))).astype("<f4")
    np.transpose(voxels).tofile(tmp_path / "secret" / "data.raw")  # MetaImage stores x fastest
    header = _mhd(tmp_path / "in" / "a.mhd", "../secret/data.raw", size=(12, 10, 8))

    scan = read_scan(header)

    assert np.array_equal(scan.array, voxels)
    assert any("outside the header's folder" in w and "secret" in w for w in scan.warnings)
    short = _mhd(tmp_path / "in" / "b.mhd", "/etc/hostname", size=(64, 64, 64))
    with pytest.raises(ScanReadError, match="promises 1,048,576 bytes"):
        read_scan(short)


def test_a_dicom_series_whose_rows_and_columns_lie_is_refused_before_reading(tmp_path):
    import pydicom

    files = write_dicom_pydicom(tmp_path / "series", np.round(head_volume((24, 20, 12))), affine_from_codes("LPS"))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.Rows = ds.Columns = 4096
        ds.save_as(f)
    out = read_bounded(tmp_path / "series", timeout=30)
    assert out.startswith("REFUSED DicomSeriesError") and "4096 x 4096 promise 33,554,432 bytes" in out


def test_a_dicom_series_beyond_the_voxel_bound_is_refused(tmp_path, monkeypatch):
    write_dicom_pydicom(tmp_path / "series", np.round(head_volume((24, 20, 12))), affine_from_codes("LPS"))
    monkeypatch.setenv("MEDFCN_MAX_VOXELS", "5000")
    with pytest.raises(MedfcnError, match="24 x 20 x 12 voxels"):
        read_scan(tmp_path / "series")


# -- NIfTI rough edges ----------------------------------------------------------------------------------------------
def _raw_nifti(path: Path, pixdim, sform: np.ndarray | None = None) -> Path:
    """A NIfTI-1 written byte by byte (nibabel's writer would repair a zero pixdim)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((6, 7, 8))
    if sform is not None:
        header.set_sform(sform, code=1)
    raw = bytearray(header.binaryblock)
    raw[76:108] = np.asarray([1.0, *pixdim, 0, 0, 0, 0], dtype="<f4").tobytes()
    path.write_bytes(bytes(raw) + b"\0" * 4 + np.arange(6 * 7 * 8, dtype="<i2").tobytes())
    return path


def test_zero_pixdim_is_refused_not_read_as_1_mm(tmp_path):
    with pytest.raises(ScanReadError, match="pixdim.*no sform or qform gives one"):
        read_scan(_raw_nifti(tmp_path / "zero.nii", (0.0, 1.0, 1.0)))
    # beside an sform too: ITK's spacing comes from pixdim (it would read 1 mm against the sform's 2 mm)
    with pytest.raises(ScanReadError, match="pixdim.*ITK reads pixdim"):
        read_scan(_raw_nifti(tmp_path / "placed.nii", (0.0, 1.0, 1.0), sform=np.diag([2.0, 1.0, 1.0, 1.0])))
    assert read_scan(_raw_nifti(tmp_path / "fine.nii", (2.0, 1.0, 1.0))).spacing == (2.0, 1.0, 1.0)


def test_a_complex_nifti_is_refused(tmp_path):
    path = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image((np.ones((6, 7, 8)) * (1 + 2j)).astype(np.complex64), np.eye(4)), path)
    with pytest.raises(UnsupportedScanError, match="complex voxels.*magnitude"):
        read_scan(path)


def test_a_multi_member_gzip_nifti_reads_like_nibabel(tmp_path):
    plain = tmp_path / "plain.nii"
    nib.save(nib.Nifti1Image(np.round(head_volume((30, 20, 10))).astype(np.int16), affine_from_codes("RAS")), plain)
    data = plain.read_bytes()
    members = tmp_path / "members.nii.gz"  # as bgzip or `cat a.gz b.gz` write it: several gzip members
    members.write_bytes(b"".join(gzip.compress(data[i : i + 5000]) for i in range(0, len(data), 5000)))

    scan = read_scan(members)

    assert np.array_equal(scan.array, np.asanyarray(nib.load(str(members)).dataobj))


def test_a_deflated_dicom_series_smaller_than_its_pixels_is_read(tmp_path):
    """The byte bound applies to uncompressed pixels only: a deflated series (files smaller than Rows x Columns x 2)
    is read, voxel for voxel."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    volume = np.round(head_volume((40, 36, 6)))
    files = write_dicom_pydicom(tmp_path / "series", volume, affine_from_codes("LPS"))
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(f, enforce_file_format=True)
    assert all(f.stat().st_size < 40 * 36 * 2 for f in files)

    scan = read_scan(tmp_path / "series")

    assert scan.shape == (40, 36, 6) and np.allclose(np.sort(scan.array.ravel()), np.sort(volume.ravel()))
