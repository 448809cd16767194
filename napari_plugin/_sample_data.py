"""napari sample data: File > Open Sample > medfcn > "Brain MRI (Colin27)".

The files are the repository's ``sample_data/`` (``images/colin27.nii.gz`` and ``labels/colin27.nii.gz``), found
beside the package: in a source checkout and in an editable install (``pip install -e .``) the package is the
checkout's ``napari_plugin/`` folder, so ``sample_data/`` is its sibling. A copy inside the package
(``napari_plugin/sample_data/``) is used first when one is shipped.
"""

from __future__ import annotations

from pathlib import Path

from medfcn.errors import NoScansError

__all__ = ["sample_data_folder", "colin27"]

_HERE = Path(__file__).resolve().parent


def sample_data_folder() -> Path:
    """The folder holding ``images/`` and ``labels/`` of the sample data.

    Raises:
        NoScansError: it is in neither place (a wheel installed without the repository).
    """
    for folder in (_HERE / "sample_data", _HERE.parent / "sample_data"):
        if (folder / "images" / "colin27.nii.gz").is_file():
            return folder
    raise NoScansError(
        f"medfcn's sample data is not installed (looked in {_HERE / 'sample_data'} and "
        f"{_HERE.parent / 'sample_data'}); install medfcn from a clone with `pip install -e .`"
    )


def colin27() -> list[tuple]:
    """The Colin27 T1 head MRI (Image layer) and its reference brain mask (Labels layer)."""
    from medfcn.reader import read_scan

    from ._layers import scan_layer_data

    folder = sample_data_folder()
    t1 = read_scan(folder / "images" / "colin27.nii.gz")
    mask = read_scan(folder / "labels" / "colin27.nii.gz", case="colin27_brain_mask")
    return [scan_layer_data(t1, layer_type="image"), scan_layer_data(mask, layer_type="labels")]
