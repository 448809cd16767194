"""The scan: a voxel array that carries its geometry from reader to writer.

Conventions (those of ITK, SimpleITK, NRRD and DICOM):

- ``array`` has shape ``(X, Y, Z)``: index ``[i, j, k]`` is voxel ``(i, j, k)`` of the file, ``i`` fastest on disk
  (the order nibabel uses; SimpleITK's ``GetArrayFromImage`` gives the transpose ``(Z, Y, X)``).
- ``spacing`` in mm along ``i, j, k``; ``origin`` is the centre of voxel ``(0, 0, 0)`` in LPS world mm;
  ``direction`` is a 3 x 3 matrix whose column ``n`` is the LPS direction of index axis ``n``.
- :attr:`Scan.affine` gives the same grid as a 4 x 4 RAS voxel-to-world matrix (nibabel's and MONAI's).

>>> import numpy as np
>>> s = Scan(np.zeros((4, 5, 6), np.float32), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0),
...          direction=np.eye(3), case="demo")
>>> float(s.affine[2, 2]), s.shape
(2.0, (4, 5, 6))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Scan", "Grid", "LPS_TO_RAS"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space: size (voxels), spacing (mm), origin (LPS mm), direction (3 x 3, LPS)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 numbers, row-major, as SimpleITK's GetDirection()

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 voxel-to-world matrix in RAS (nibabel's and MONAI's convention)."""
        lps = np.eye(4)
        lps[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        lps[:3, 3] = self.origin
        return LPS_TO_RAS @ lps

    def differences(
        self, other: Grid, *, spacing_tol: float = 1e-4, origin_tol: float = 1e-3, direction_tol: float = 1e-5
    ) -> list[str]:
        """The properties in which ``other`` differs from this grid: ``[]`` when they are the same grid."""
        out = []
        if tuple(self.size) != tuple(other.size):
            out.append(f"size {tuple(other.size)} != {tuple(self.size)}")
        if not np.allclose(self.spacing, other.spacing, atol=spacing_tol):
            out.append(f"spacing {np.round(other.spacing, 4).tolist()} != {np.round(self.spacing, 4).tolist()}")
        if not np.allclose(self.origin, other.origin, atol=origin_tol):
            out.append(f"origin {np.round(other.origin, 3).tolist()} != {np.round(self.origin, 3).tolist()}")
        if not np.allclose(self.direction, other.direction, atol=direction_tol):
            out.append("direction differs")
        return out


@dataclass
class Scan:
    """A 3-D scan: voxels ``(X, Y, Z)`` and the geometry that places them in the patient.

    Attributes:
        array: voxel values, shape ``(X, Y, Z)`` (see the module docstring for the index order).
        spacing: mm between voxel centres along each index axis.
        origin: LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
        direction: 3 x 3 matrix; column ``n`` is the LPS unit vector of index axis ``n``.
        source: the file or DICOM folder read.
        case: the case name outputs are named after.
        series_uid: the DICOM SeriesInstanceUID, for scans read from a DICOM series.
        warnings: what was noticed and repaired while reading (e.g. non-finite voxels replaced).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    source: Path | None = None
    case: str = "scan"
    series_uid: str | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(v) for v in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(v) for v in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if self.source is not None:
            self.source = Path(self.source)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.array.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing, self.origin, tuple(self.direction.flatten().tolist()))

    @property
    def affine(self) -> np.ndarray:
        """4 x 4 voxel-to-world matrix in RAS (nibabel's and MONAI's convention)."""
        return self.grid.affine

    def with_array(self, array: np.ndarray) -> Scan:
        """A scan on the same grid with other voxels (e.g. a label map); ``array`` must have the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array of shape {tuple(array.shape)} does not fit a grid of size {self.shape}")
        return Scan(array, self.spacing, self.origin, self.direction, self.source, self.case, self.series_uid)

    def to_sitk(self, array: np.ndarray | None = None):
        """A SimpleITK image of ``array`` (default: the scan's voxels) on this scan's grid."""
        import SimpleITK as sitk

        data = self.array if array is None else array
        if tuple(data.shape) != self.shape:
            raise ValueError(f"array of shape {tuple(data.shape)} does not fit a grid of size {self.shape}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.flatten().tolist()))
        return image

    @classmethod
    def from_sitk(cls, image, **kwargs) -> Scan:
        """A scan from a 3-D SimpleITK image (voxels transposed to ``(X, Y, Z)``)."""
        import SimpleITK as sitk

        array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
        return cls(array, image.GetSpacing(), image.GetOrigin(), np.reshape(image.GetDirection(), (3, 3)), **kwargs)
