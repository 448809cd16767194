"""Segment a NIfTI scan with a model exported by ``medfcn export``, with ONNX Runtime and no medfcn.

Only onnxruntime, nibabel, numpy and scipy: what a hospital's own pipeline, a viewer or a web service could run.
Everything the graph needs around it comes from the file's metadata (the model card: frame spacing, slice axes,
context, post-processing; the stride the input is padded to). Run:

    medfcn export -o model.onnx
    python docs/onnx_segment.py model.onnx sample_data/images/colin27.nii.gz colin27_mask.nii.gz

The steps are medfcn's (reorient to RAS, resample to the model's spacing, percentile normalisation, the head's bounding
box, slices with their neighbours along each slice axis, probabilities summed, largest component and holes filled
per slice, back onto the scan's grid by trilinear interpolation of the probabilities); medfcn sums the probabilities
as rounded uint16 and reads the geometry with SimpleITK, so a few voxels at the edge may differ.
"""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy import ndimage


def resample(volume: np.ndarray, step: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear samples of ``volume`` at index ``i * step`` along each axis (clamped at the borders)."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, step, strict=True)], indexing="ij", sparse=True)
    coords = [np.clip(np.broadcast_to(g, shape), 0, n - 1) for g, n in zip(grids, volume.shape, strict=True)]
    return ndimage.map_coordinates(volume, coords, order=1, mode="nearest").astype(np.float32)


def probabilities(session: ort.InferenceSession, volume: np.ndarray, axis: int, context: int, stride: int):
    """(C, X, Y, Z) softmax of the network over the slices of ``volume`` along ``axis``."""
    v = np.moveaxis(volume, axis, 0)
    depth, h, w = v.shape
    ph, pw = -h % stride, -w % stride
    out = []
    for start in range(0, depth, 16):
        idx = np.arange(start, min(start + 16, depth))
        x = np.stack([v[np.clip(idx + k, 0, depth - 1)] for k in range(-context, context + 1)], axis=1)
        x = np.pad(x, ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="edge")
        logits = session.run(None, {"slices": np.ascontiguousarray(x, dtype=np.float32)})[0]
        logits = logits[:, :, ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.moveaxis(np.concatenate(out), 0, axis + 1)  # (D, C, H, W) -> (C, ...) with D back at ``axis``


def foreground_box(volume: np.ndarray, margin: int = 8, level: float = 0.1, min_fraction: float = 0.01) -> tuple:
    """The box holding the head, ``margin`` voxels wider: the slices along each axis with more than ``min_fraction``
    of their voxels above ``level`` of the way from the 1st to the 99th percentile. The network runs inside it (its
    input size decides how slices meet the network's pooling grid, so the box is part of the recipe)."""
    lo, hi = np.percentile(volume[::4, ::4, ::4], [1.0, 99.0])
    if not hi > lo:
        return (slice(None),) * 3
    inside = volume > lo + level * (hi - lo)
    box = []
    for axis in range(3):
        counts = inside.sum(axis=tuple(a for a in range(3) if a != axis))
        rows = np.flatnonzero(counts > min_fraction * (volume.size // volume.shape[axis]))
        if rows.size == 0:
            return (slice(None),) * 3
        box.append(slice(max(0, rows[0] - margin), min(volume.shape[axis], rows[-1] + 1 + margin)))
    return tuple(box)


def clean(mask: np.ndarray, steps: list[str]) -> np.ndarray:
    """The card's post-processing: keep the largest component; fill holes in 3-D and in every slice."""
    for step in steps:
        if not mask.any():
            break
        if step == "largest_component":
            components, n = ndimage.label(mask)
            if n > 1:
                mask = components == np.bincount(components.ravel())[1:].argmax() + 1
        else:
            if step == "fill_slices":
                for axis in range(3):
                    m = np.moveaxis(mask, axis, 0)
                    mask = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in m]), 0, axis)
            mask = ndimage.binary_fill_holes(mask)
    return mask


def main(model: str, scan: str, output: str) -> None:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    card, stride = json.loads(meta["medfcn_card"]), int(meta["medfcn_stride"])
    image = nib.load(scan)
    to_ras = nib.orientations.io_orientation(image.affine)
    data = nib.orientations.apply_orientation(np.asarray(image.dataobj, dtype=np.float32), to_ras)
    zooms = np.empty(3)
    zooms[to_ras[:, 0].astype(int)] = image.header.get_zooms()[:3]  # the spacing of the RAS-ordered axes
    step = np.asarray(card["spacing"]) / zooms  # frame index -> scan index
    shape = tuple(int(np.floor((n - 1) / s + 1e-6)) + 1 for n, s in zip(data.shape, step, strict=True))
    frame = resample(data, step, shape)
    sample = frame.ravel()[:: max(1, frame.size // 2_000_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    frame = np.clip((frame - lo) / (hi - lo), 0, 1).astype(np.float32)
    context = (card["network"].get("in_channels", 3) - 1) // 2
    box = foreground_box(frame)
    total = np.zeros((len(card["labels"]), *frame.shape), dtype=np.float32)
    total[0] = len(card["slice_axes"])  # outside the head's box: background, certain
    total[(slice(None), *box)] = sum(probabilities(session, frame[box], a, context, stride) for a in card["slice_axes"])
    weights = np.asarray(card.get("class_weights") or [1.0] * total.shape[0], dtype=np.float32)
    total *= weights[:, None, None, None]
    labels = total.argmax(0)
    score = total[1] - total[0] if total.shape[0] == 2 else None
    if score is None:
        raise SystemExit("this example handles two labels (background and one structure)")
    cleaned = clean(labels == 1, list(card.get("postprocess", [])))
    score[cleaned & (labels != 1)], score[~cleaned & (labels == 1)] = 1.0, -1.0
    back = resample(score, 1.0 / step, data.shape) > 0  # the scan's voxel centres on the frame
    from_ras = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), to_ras)
    labels_out = nib.orientations.apply_orientation(back.astype(np.uint8), from_ras)
    nib.save(nib.Nifti1Image(labels_out.astype(np.uint8), image.affine, image.header), output)
    print(f"{output}: {int(labels_out.sum())} voxels labelled")


if __name__ == "__main__":
    main(*sys.argv[1:4])
