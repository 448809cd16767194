"""napari sample data: File > Open Sample > medfcn > "Brain MRI (Colin27)".

The two files ship inside the package (``napari_plugin/sample_data/``, package data; attribution in the README
beside them), so the sample opens from an installed wheel as from a source checkout.
"""

from __future__ import annotations

from pathlib import Path

from medfcn.errors import NoScansError

__all__ = ["SAMPLE_FOLDER", "sample_files", "colin27"]

SAMPLE_FOLDER = Path(__file__).resolve().parent / "sample_data"
_T1, _MASK = "colin27_t1.nii.gz", "colin27_brain_mask.nii.gz"


def sample_files() -> tuple[Path, Path]:
    """The sample's T1 and brain-mask files.

    Raises:
        NoScansError: they are missing (a broken installation).
    """
    t1, mask = SAMPLE_FOLDER / _T1, SAMPLE_FOLDER / _MASK
    for path in (t1, mask):
        if not path.is_file():
            raise NoScansError(f"{path}: medfcn's sample data is missing; reinstall medfcn")
    return t1, mask


def colin27() -> list[tuple]:
    """The Colin27 T1 head MRI (Image layer) and its reference brain mask (Labels layer)."""
    from medfcn.data.reader import read_scan

    from ._layers import scan_layer_data
    from ._reader import _watch_current_viewer

    t1_path, mask_path = sample_files()
    t1 = read_scan(t1_path, case="colin27")
    mask = read_scan(mask_path, case="colin27_brain_mask")
    _watch_current_viewer()  # orientation letters and patient coordinates, as for a file opened with the reader
    return [scan_layer_data(t1, layer_type="image"), scan_layer_data(mask, layer_type="labels")]
