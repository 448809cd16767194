"""Into the model's frame and back.

A model sees every scan the same way: axes reordered to the nearest RAS orientation (MONAI ``Orientation``),
resampled to the model's spacing (MONAI ``Spacing``, which keeps any residual rotation of an oblique scan in the
affine, so nothing is rotated by interpolation), and intensities normalised. Its output, probabilities on that
frame, returns to the scan's own grid by the exact inverse mapping of voxel centres, resampled slab by slab
(:func:`probabilities_to_labels`), so a label map for a 0.5 mm scan never needs a float volume of its size.

>>> import numpy as np
>>> from medfcn.data.scan import Scan
>>> scan = Scan(np.random.rand(20, 30, 12).astype(np.float32), (2.0, 2.0, 3.0), (0, 0, 0), np.diag([-1, 1, 1]))
>>> frame = to_model_frame(scan, spacing=(1.5, 1.5, 1.5))
>>> frame.volume.shape
(26, 40, 23)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfcn._monai import import_monai
from medfcn.choices import parse_choice
from medfcn.data.scan import Scan
from medfcn.inference.postprocess import argmax_classes
from medfcn.model.card import Normalisation

__all__ = [
    "ModelFrame",
    "Normalisation",
    "to_model_frame",
    "normalise_intensity",
    "foreground_box",
    "probabilities_to_labels",
    "frame_to_scan_coordinates",
    "axis_sources",
]


@dataclass
class ModelFrame:
    """A scan brought into a model's frame.

    Attributes:
        volume: (X', Y', Z') float32 voxels on the model's grid (RAS-ordered axes, the model's spacing).
        affine: 4 x 4 RAS voxel-to-world matrix of that grid.
        scan_affine: the source scan's RAS affine, for the way back.
        scan_shape: the source scan's size (X, Y, Z).
    """

    volume: np.ndarray
    affine: np.ndarray
    scan_affine: np.ndarray
    scan_shape: tuple[int, int, int]


def _orientation(axcodes: str, lazy: bool = False):
    import warnings

    import_monai()
    from monai.transforms import Orientation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return Orientation(axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S")), lazy=lazy)


def _frame_geometry(
    scan: Scan, spacing: tuple[float, float, float], orientation: str
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The affine and shape MONAI's ``Orientation`` + ``Spacing`` give ``scan``, computed lazily (no voxels)."""
    import_monai()
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    empty = torch.zeros((1, 1, 1, 1)).expand(1, *scan.shape)  # a stride-0 stand-in: never read
    x = MetaTensor(empty, affine=torch.as_tensor(scan.affine, dtype=torch.float64))
    x = _orientation(orientation, lazy=True)(x)
    x = Spacing(pixdim=tuple(float(s) for s in spacing), mode="bilinear", padding_mode="border", lazy=True)(x)
    shape = tuple(int(n) for n in x.peek_pending_shape())
    return np.asarray(x.peek_pending_affine(), dtype=np.float64), shape  # type: ignore[return-value]


def axis_sources(m: np.ndarray, tol: float = 1e-6) -> list[int] | None:
    """For ``m`` (output voxel indices -> input voxel indices): the input axis each output axis runs along, when
    ``m`` is a scaled permutation (grids with parallel axes); ``None`` otherwise."""
    a = np.abs(m[:3, :3])
    sources = a.argmax(0)
    if sorted(sources.tolist()) != [0, 1, 2]:
        return None
    off = a.copy()
    off[sources, np.arange(3)] = 0.0
    return None if off.max() > tol * a.max() else sources.tolist()


def _lerp_table(scale: float, offset: float, n_out: int, n_in: int) -> tuple[torch.Tensor, ...]:
    """Indices i0, i1 and weights w (n_out,) of linear interpolation at ``scale * i + offset``, clamped to the ends."""
    c = np.clip(scale * np.arange(n_out, dtype=np.float64) + offset, 0.0, n_in - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return torch.from_numpy(i0), torch.from_numpy(i1), torch.from_numpy((c - i0).astype(np.float32))


def _lerp(x: torch.Tensor, dim: int, i0: torch.Tensor, i1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at the positions of a :func:`_lerp_table`."""
    shape = [1] * x.ndim
    shape[dim] = -1
    a = x.index_select(dim, i0)
    return a.add_(x.index_select(dim, i1).sub_(a).mul_(w.view(shape)))


def _resample_slabs(
    values: torch.Tensor, m: np.ndarray, sources: list[int], shape: tuple[int, int, int], slab: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Trilinear resampling (border-clamped) of ``values`` (C, *in_shape) onto ``shape``, for an axis-parallel
    ``m`` (output indices -> input indices; see :func:`axis_sources`): three 1-D linear interpolations, the same
    numbers as a 3-D ``grid_sample``. Yields ``(k0, k1, block)``: block (C, X, Y, k1 - k0) float32, slab by slab
    along the output's last axis; only the input slices a slab needs are converted to float."""
    v = values.permute(0, *(1 + s for s in sources))  # input axes in output order, a view
    tables = [_lerp_table(m[s, o], m[s, 3], shape[o], v.shape[1 + o]) for o, s in enumerate(sources)]
    z0, z1, wz = tables[2]
    for k0 in range(0, shape[2], slab):
        k1 = min(k0 + slab, shape[2])
        lo, hi = int(z0[k0:k1].min()), int(z1[k0:k1].max())
        block = _lerp(v[..., lo : hi + 1].to(torch.float32), 3, z0[k0:k1] - lo, z1[k0:k1] - lo, wz[k0:k1])
        yield k0, k1, _lerp(_lerp(block, 1, *tables[0]), 2, *tables[1])


MAX_FRAME_VOXELS = 1 << 30  # 4 GB as float32: a whole-body CT at 0.5 mm is ~0.9 G voxels


def check_frame_size(scan: Scan, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> None:
    """Refuse a scan whose grid in the model's frame would exceed :data:`MAX_FRAME_VOXELS` (a header with a
    wrong voxel size, e.g. pixdim 1e4, would otherwise try to allocate petabytes). Raises UnsupportedScanError."""
    from medfcn.errors import UnsupportedScanError

    n = float(np.prod(np.asarray(shape, dtype=float)))
    if n > MAX_FRAME_VOXELS:
        fov = [round(float(a) * float(b)) for a, b in zip(scan.shape, scan.spacing, strict=True)]
        raise UnsupportedScanError(
            f"{scan.source or scan.case}: a field of view of {fov} mm would be {' x '.join(map(str, shape))} voxels "
            f"({n:.3g}) at the model's {list(spacing)} mm, more than {MAX_FRAME_VOXELS:.3g}: "
            "check the voxel size (spacing) in its header"
        )


def to_model_frame(
    scan: Scan,
    spacing: tuple[float, float, float],
    *,
    orientation: str = "RAS",
    mode: str = "bilinear",
    array: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ModelFrame:
    """Reorient ``scan`` to ``orientation`` and resample it to ``spacing`` (mm) with MONAI transforms.

    The frame's grid is MONAI's (``Orientation`` then ``Spacing``). For ``bilinear`` resampling of an axis-parallel
    grid (every scan: the frame keeps the scan's rotation) the voxels are interpolated separably, slab by slab,
    straight from the scan's own voxel type: the same numbers as MONAI's ``Spacing`` without its float copies of
    the whole scan (~0.8 GB for a 0.5 mm head).

    Args:
        array: voxels to bring instead of the scan's own, on the same grid (e.g. a label map, ``mode="nearest"``).
        progress: called with the fraction of the frame's slabs done (slab by slab; once at the end otherwise).
        cancel: polled before each slab; :class:`~medfcn.errors.CancelledError` when it returns true.
    """
    from medfcn.errors import CancelledError

    import_monai()
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    data = scan.array if array is None else array
    affine, shape = _frame_geometry(scan, spacing, orientation)
    check_frame_size(scan, shape, spacing)
    if mode == "bilinear":
        m = np.linalg.inv(scan.affine) @ affine  # frame indices -> scan indices
        sources = axis_sources(m)
        if sources is not None:
            volume = np.empty(shape, dtype=np.float32)
            for k0, k1, block in _resample_slabs(torch.from_numpy(np.asarray(data))[None], m, sources, shape, 8):
                volume[:, :, k0:k1] = block[0].numpy()
                if progress is not None:
                    progress(k1 / shape[2])
                if cancel is not None and cancel():
                    raise CancelledError("cancelled while resampling onto the model's frame")
            return ModelFrame(volume=volume, affine=affine, scan_affine=scan.affine, scan_shape=scan.shape)
    x = MetaTensor(
        torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None],
        affine=torch.as_tensor(scan.affine, dtype=torch.float64),
    )
    x = _orientation(orientation)(x)
    x = Spacing(pixdim=tuple(float(s) for s in spacing), mode=mode, padding_mode="border")(x)
    if progress is not None:
        progress(1.0)
    return ModelFrame(
        volume=np.ascontiguousarray(x[0].numpy()),
        affine=x.affine.numpy().astype(np.float64),
        scan_affine=scan.affine,
        scan_shape=scan.shape,
    )


def normalise_intensity(volume: np.ndarray, method: str | Normalisation = Normalisation.PERCENTILE) -> np.ndarray:
    """Normalised float32 copy of ``volume`` (any shape). Constant volumes give zeros.

    Raises :class:`ModelError` for a ``method`` that is not a :class:`Normalisation` (a model card's setting).
    """
    method = parse_choice(Normalisation, method, "normalisation")
    v = np.asarray(volume, dtype=np.float32)
    if method is Normalisation.PERCENTILE:
        sample = v.ravel()[:: max(1, v.size // 2_000_000)]
        lo, hi = np.percentile(sample, [0.5, 99.5])
        if hi - lo < 1e-8:
            return np.zeros_like(v)
        return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    head = v[v > v.mean()]
    if head.size < 2 or head.std() < 1e-8:
        return np.zeros_like(v)
    return ((v - head.mean()) / head.std()).astype(np.float32)


def foreground_box(
    volume: np.ndarray, *, margin: int = 8, level: float = 0.1, min_fraction: float = 0.01
) -> tuple[slice, slice, slice]:
    """The box of a normalised frame ``volume`` (X', Y', Z') that holds the object (a head and its surroundings),
    ``margin`` voxels wider on each side (12 mm at 1.5 mm), clipped to the volume.

    A slice along an axis belongs to the object when more than ``min_fraction`` of its voxels lie above ``level``
    of the way from the volume's 1st to its 99th percentile (noise and scattered bright voxels do not count).
    The whole volume when nothing qualifies. Outside the box a scan holds air: the engine need not run there.
    """
    sample = volume[::4, ::4, ::4]
    lo, hi = np.percentile(sample, [1.0, 99.0]) if sample.size else (0.0, 0.0)
    if not hi > lo:
        return (slice(None),) * 3  # type: ignore[return-value]
    inside = volume > lo + level * (hi - lo)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = inside.sum(axis=other)
        area = volume.size // volume.shape[axis]
        rows = np.flatnonzero(counts > min_fraction * area)
        if rows.size == 0:
            return (slice(None),) * 3  # type: ignore[return-value]
        box.append(slice(max(0, int(rows[0]) - margin), min(volume.shape[axis], int(rows[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]


def frame_to_scan_coordinates(frame: ModelFrame) -> np.ndarray:
    """4 x 4 matrix taking scan voxel indices (i, j, k, 1) to the model frame's voxel indices."""
    return np.linalg.inv(frame.affine) @ frame.scan_affine


def probabilities_to_labels(
    probabilities: np.ndarray | torch.Tensor,
    frame: ModelFrame,
    *,
    slab: int = 16,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Labels on the scan's grid from class probabilities on the model's frame.

    Probabilities (not labels) are resampled trilinearly at the scan's voxel centres, then the arg-max is taken,
    one slab of ``slab`` scan slices at a time: only the block of the model frame a slab needs is ever converted
    to float.

    Args:
        probabilities: (C, X', Y', Z') on the model frame, any numeric type: the pipeline passes uint16 sums
            of probability x 255 over its slice axes (:meth:`medfcn.inference.pipeline.Segmenter.probabilities`);
            only their order per voxel matters.

    Returns:
        uint8 labels (X, Y, Z) (uint16 beyond 256 classes) on the scan's grid (class index of the highest
        probability), Fortran-ordered: the (Z, Y, X) memory order of NIfTI and SimpleITK, so writing them
        takes no transposed copy (57 MB for a 0.5 mm head), and each slab is written to contiguous memory.
    """
    probs = torch.as_tensor(probabilities)
    n_classes, *fshape = probs.shape
    dtype = np.uint8 if n_classes <= 256 else np.uint16
    nx, ny, nz = frame.scan_shape
    sources = axis_sources(frame_to_scan_coordinates(frame))
    if sources is not None:  # parallel axes (every scan): separable, ~4x faster and ~8x less memory
        out = np.empty((nx, ny, nz), dtype=dtype, order="F")
        m = frame_to_scan_coordinates(frame)
        if n_classes == 2:  # interpolation is linear: class 1 wins where the interpolated p1 - p0 is positive
            values = (probs[1].to(torch.float32) - probs[0].to(torch.float32))[None]  # half the work and memory
        else:
            values = probs
        for k0, k1, block in _resample_slabs(values, m, sources, (nx, ny, nz), slab):
            out[:, :, k0:k1] = (block[0] > 0).numpy() if n_classes == 2 else argmax_classes(block.numpy())
            if progress is not None:
                progress(k1 / nz)
        return out
    m = torch.as_tensor(frame_to_scan_coordinates(frame), dtype=torch.float64)
    out = np.empty((nx, ny, nz), dtype=dtype, order="F")
    i = torch.arange(nx, dtype=torch.float64)
    j = torch.arange(ny, dtype=torch.float64)
    base = m[:3, 0, None, None] * i[None, :, None] + m[:3, 1, None, None] * j[None, None, :]  # (3, X, Y)
    limits = torch.tensor(fshape, dtype=torch.float64) - 1
    for k0 in range(0, nz, slab):
        k = torch.arange(k0, min(k0 + slab, nz), dtype=torch.float64)
        coords = base[..., None] + (m[:3, 2, None] * k[None, :] + m[:3, 3, None])[:, None, None, :]  # (3,X,Y,K)
        coords = torch.minimum(torch.clamp(coords, min=0), limits[:, None, None, None])
        lo = torch.floor(coords.reshape(3, -1).amin(1)).long()
        hi = torch.ceil(coords.reshape(3, -1).amax(1)).long()
        block = probs[:, lo[0] : hi[0] + 1, lo[1] : hi[1] + 1, lo[2] : hi[2] + 1].float()
        size = (hi - lo).double().clamp(min=1)
        rel = (coords - lo.double()[:, None, None, None]) / size[:, None, None, None] * 2 - 1
        # grid_sample takes (x, y, z) = (W, H, D) order: the block's last axis first.
        grid = torch.stack([rel[2], rel[1], rel[0]], dim=-1)[None].float()  # (1, X, Y, K, 3)
        sampled = F.grid_sample(block[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
        out[:, :, k0 : k0 + len(k)] = argmax_classes(sampled[0].numpy())
        if progress is not None:
            progress(min(1.0, (k0 + len(k)) / nz))
    return out
