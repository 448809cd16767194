"""The whole path from a scan to its label map: one function that the CLI, the napari widget and the tests call.

The stages, each a method of :class:`Segmenter` that :meth:`Segmenter.segment` calls in this order (training's
validation and the benchmarks call the same methods, never a copy of the sequence):

1. :meth:`~Segmenter.to_frame`: scan -> the model's frame (orientation, spacing: :mod:`medfcn.inference.frame`)
2. :meth:`~Segmenter.normalise`: intensity normalisation as recorded in the model's card
3. :meth:`~Segmenter.probabilities`: the slice engine along each of the model's slice axes (probabilities
   summed, stored as uint16 on the model's frame: never a float volume of the scan's size)
4. :meth:`~Segmenter.postprocess`: the card's clean-up steps, on the probabilities
5. :meth:`~Segmenter.to_scan`: probabilities resampled slab by slab onto the scan's own grid -> labels

>>> from medfcn.data.scan import Scan
>>> scan = Scan(np.random.rand(30, 34, 20).astype(np.float32), (2.0, 2.0, 3.0), (0, 0, 0), np.eye(3))
>>> segment_scan(scan, settings=InferenceSettings(device="cpu")).shape  # the bundled model
(30, 34, 20)
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import medfcn.inference.frame as model_frame
from medfcn.data.scan import Scan
from medfcn.inference.engine import SliceEngine, slice_stack
from medfcn.inference.frame import ModelFrame, foreground_box, probabilities_to_labels
from medfcn.inference.postprocess import apply_to_probabilities, argmax_classes
from medfcn.inference.quality import (
    AxisVotes,
    Evidence,
    face_names,
    measure_frame,
    measure_labels,
    uncertain_voxels,
)
from medfcn.inference.settings import DEFAULT_SETTINGS, InferenceSettings
from medfcn.inference.verdict import Verdict, judge
from medfcn.model.checkpoint import Model, ModelCard, load_model
from medfcn.model.expectations import Expectations

__all__ = ["Segmenter", "Segmentation", "segment_scan", "frame_for_model", "normalise_for_model", "real_slices"]

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
Cancel = Callable[[], bool]

_FRAME_SHARE = 0.15  # of the progress bar: resampling onto the model's frame (7.5 s of a 0.5 mm head)
_INFERENCE_SHARE = 0.85  # up to here: the network; the rest is resampling back onto the scan's grid


def frame_for_model(
    scan: Scan,
    card: ModelCard,
    *,
    array: np.ndarray | None = None,
    mode: str = "bilinear",
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> ModelFrame:
    """Stage 1 for the model ``card`` describes: ``scan`` (or ``array`` on its grid, e.g. a label map with
    ``mode="nearest"``) on the model's frame (its orientation and spacing). Training prepares its cases with it.
    ``progress`` and ``cancel`` as :func:`medfcn.inference.frame.to_model_frame` takes them."""
    return model_frame.to_model_frame(
        scan, card.spacing, orientation=card.orientation, array=array, mode=mode, progress=progress, cancel=cancel
    )


def normalise_for_model(frame: ModelFrame, card: ModelCard) -> np.ndarray:
    """Stage 2 for the model ``card`` describes: (X', Y', Z') float32 intensities of ``frame``, normalised."""
    return model_frame.normalise_intensity(frame.volume, card.normalisation)


class Segmenter:
    """A model prepared once (weights loaded, batch norm folded, on its device) to segment many scans.

    ``model``: a :class:`Model`, a model file, or ``None`` for the bundled brain-extraction model.
    ``settings``: device, precision, test-time augmentation, batch size
    (:class:`~medfcn.inference.settings.InferenceSettings`). Raises :class:`ModelError` for a bad model.
    """

    def __init__(self, model: Model | str | Path | None = None, settings: InferenceSettings = DEFAULT_SETTINGS) -> None:
        self.model = model if isinstance(model, Model) else load_model(model)
        self.settings = settings
        self.engine = SliceEngine(self.model.network, settings, model=self.model)
        self.device = self.engine.device

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.model.card.labels)

    @property
    def expectations(self) -> Expectations:
        """What the model's card records of its training data (empty for an older card)."""
        return Expectations.from_dict(self.model.card.expectations)

    # -- the stages, in order ------------------------------------------------------------------------------------

    def to_frame(self, scan: Scan, *, progress: Progress | None = None, cancel: Cancel | None = None) -> ModelFrame:
        """Stage 1: ``scan`` reoriented and resampled onto the model's frame (its card's orientation and spacing),
        slab by slab, reporting ``progress`` and polling ``cancel`` between slabs."""
        return frame_for_model(scan, self.model.card, progress=progress, cancel=cancel)

    def normalise(self, frame: ModelFrame) -> np.ndarray:
        """Stage 2: (X', Y', Z') float32 intensities of ``frame`` normalised as the model was trained."""
        return normalise_for_model(frame, self.model.card)

    def probabilities(
        self,
        volume: np.ndarray,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        box: tuple[slice, slice, slice] | None = None,
        votes: AxisVotes | None = None,
    ) -> np.ndarray:
        """Stage 3: (C, X', Y', Z') uint16 sums over the slice axes of probabilities x 255, for a normalised frame
        volume (X', Y', Z').

        The network runs only inside :func:`~medfcn.inference.frame.foreground_box` (the head and 12 mm around it);
        the air outside is background with certainty. A scan whose field of view is larger than the head (an oblique
        grid, a neck, a wide in-plane field) costs only its head. ``box``: that box, when already known; ``votes``
        (:class:`~medfcn.inference.quality.AxisVotes` shaped like the box) receives each slice direction's labels.
        """
        card = self.model.card
        n_classes, axes = len(card.labels), card.slice_axes
        acc = np.zeros((n_classes, *volume.shape), dtype=np.uint16)
        # probabilities x 255 (x each class's decision weight, at most 1 after scaling), summed over <= 3 axes
        weights = np.asarray(card.class_weights or (1.0,) * n_classes, dtype=np.float32)
        scale = torch.from_numpy(255.0 * weights / weights.max()).view(1, n_classes, 1, 1)
        box = (slice(None), *(box or foreground_box(volume)))
        inner = acc[box]  # a view: what the engine computes is written into acc
        if inner.size < acc.size:
            acc[0] = int(torch.round(scale[0, 0, 0, 0])) * len(axes)  # air: background, certain
            inner[0] = 0
        vol = torch.from_numpy(np.ascontiguousarray(volume[box[1:]], dtype=np.float32))
        for n, axis in enumerate(axes):
            view = torch.from_numpy(inner).movedim(axis + 1, 1)  # (C, D, H, W), writes go into acc
            sub = None if progress is None else (lambda f, n=n: progress((n + f) / len(axes)))
            for start, probs in self.engine.iter_probabilities(
                vol, axis=axis, context=card.context, progress=sub, cancel=cancel
            ):
                probs.mul_(scale.to(probs.device))
                if votes is not None:
                    votes.add(n, axis=axis, start=start, labels=argmax_classes(probs.numpy().swapaxes(0, 1)))
                q = probs.round_().to(torch.int32).permute(1, 0, 2, 3)
                block = view[:, start : start + q.shape[1]]
                block.copy_((block.to(torch.int32) + q).to(torch.uint16))
        return acc

    def postprocess(self, probabilities: np.ndarray) -> np.ndarray:
        """Stage 4: the card's post-processing steps applied to ``probabilities`` (C, X', Y', Z') in place;
        returns them."""
        return apply_to_probabilities(probabilities, self.model.card.postprocess)

    def to_scan(self, probabilities: np.ndarray, frame: ModelFrame, *, progress: Progress | None = None) -> np.ndarray:
        """Stage 5: uint8 labels (X, Y, Z) on the grid of the scan ``frame`` came from (see
        :func:`medfcn.inference.frame.probabilities_to_labels`)."""
        return probabilities_to_labels(probabilities, frame, progress=progress)

    def segment(
        self,
        scan: Scan,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        release_voxels: bool = False,
    ) -> np.ndarray:
        """uint8 labels (X, Y, Z) on ``scan``'s own grid (label ids as in the model's card).

        ``progress(fraction)`` is called as work advances (0 to 1); ``cancel()`` is polled between batches and
        stops the work with :class:`CancelledError` when it returns true. ``release_voxels``: once the scan is in
        the model's frame, ``scan.array`` becomes a zero-stride stand-in of the same shape and type (the geometry
        stays, for the writers), so the voxels are freed while the rest runs (114 MB for a 0.5 mm int16 head); for
        a caller that does not look at them again (a batch).
        """
        return self._run(scan, progress, cancel, release_voxels, check=False).labels

    def segment_and_check(
        self,
        scan: Scan,
        *,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        release_voxels: bool = False,
        uncertainty: bool = False,
    ) -> Segmentation:
        """The labels of :meth:`segment` with a quality verdict (:mod:`medfcn.inference.verdict`) from evidence
        gathered on the way (:mod:`medfcn.inference.quality`). Arguments as :meth:`segment`; ``uncertainty``: also
        the voxels the model is unsure of (:func:`~medfcn.inference.quality.uncertain_voxels`) on the scan's grid,
        resampled as the labels are (one more pass back)."""
        return self._run(scan, progress, cancel, release_voxels, check=True, uncertainty=uncertainty)

    def _run(
        self,
        scan: Scan,
        progress: Progress | None,
        cancel: Cancel | None,
        release_voxels: bool,
        check: bool,
        uncertainty: bool = False,
    ) -> Segmentation:
        t0 = time.perf_counter()
        ahead = None if progress is None else (lambda f: progress(_FRAME_SHARE * f))
        frame = self.to_frame(scan, progress=ahead, cancel=cancel)
        if release_voxels:
            scan.array = np.broadcast_to(np.zeros((), dtype=scan.array.dtype), scan.shape)
        volume = self.normalise(frame)
        inner = None if progress is None else (lambda f: progress(_FRAME_SHARE + (_INFERENCE_SHARE - _FRAME_SHARE) * f))
        box = foreground_box(volume)
        card = self.model.card
        shape = tuple(len(range(*b.indices(n))) for b, n in zip(box, volume.shape, strict=True))
        votes = AxisVotes(shape, len(card.slice_axes)) if check else None
        probs = self.probabilities(volume, progress=inner, cancel=cancel, box=box, votes=votes)
        unsure = uncertain_voxels(probs, box, votes) if uncertainty else None
        raw = probs.copy() if check else None  # the evidence needs them before and after post-processing
        self.postprocess(probs)
        seen = None
        if raw is not None:
            delivered = argmax_classes(probs[(slice(None), *box)]) > 0
            seen = measure_frame(volume, raw, box, votes, card.spacing, delivered=delivered)
        del volume, votes, raw  # the normalised copy is not needed on the way back: free it before resampling
        _trim_heap()
        back = None if progress is None else (lambda f: progress(_INFERENCE_SHARE + (1 - _INFERENCE_SHARE) * f))
        labels = self.to_scan(probs, frame, progress=back)
        _trim_heap()  # and the resampling's slab blocks, before the labels are written
        uncertain = None
        if unsure is not None:  # two "classes", sure and unsure: resampled like probabilities, unsure where > 0.5
            uncertain = self.to_scan(np.stack([~unsure, unsure]).view(np.uint8), frame)
            del unsure
        verdict = evidence = None
        if seen is not None:
            volume_ml, contact = measure_labels(labels, scan.spacing, card.labels, face_names(scan.direction))
            evidence = Evidence(seen, volume_ml, contact)
            verdict = judge(evidence, self.expectations, axes=len(card.slice_axes))
        log.debug("segmented %s %s in %.2f s on %s", scan.case, scan.shape, time.perf_counter() - t0, self.device)
        return Segmentation(labels, verdict, evidence, uncertain)


@dataclass(frozen=True)
class Segmentation:
    """A label map (X, Y, Z) uint8 on its scan's grid, with its quality :class:`Verdict` and the
    :class:`Evidence` it came from (both ``None`` when not asked for), and ``uncertain``, uint8 (X, Y, Z) on the same
    grid, 1 where the model is unsure (:func:`~medfcn.inference.quality.uncertain_voxels`; ``None`` unless asked)."""

    labels: np.ndarray
    verdict: Verdict | None = None
    evidence: Evidence | None = None
    uncertain: np.ndarray | None = None


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere). After the
    engine glibc still holds its freed activations (~60-90 MB for a 0.5 mm head: its dynamic mmap threshold has risen
    past their size, so they came from the heap), and after the way back the slab blocks (~35 MB), which the stages
    after them reuse only in part."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


def segment_scan(
    scan: Scan,
    model: Model | str | Path | None = None,
    *,
    settings: InferenceSettings = DEFAULT_SETTINGS,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> np.ndarray:
    """uint8 labels (X, Y, Z) for one scan on its own grid; see :class:`Segmenter` (which loads a model once)."""
    return Segmenter(model, settings).segment(scan, progress=progress, cancel=cancel)


def real_slices(model: Model, scan: str | Path, n: int = 8) -> list[torch.Tensor]:
    """``n`` neighbouring stacks of slices (n, K, H, W) through the middle of ``scan`` (a file) on ``model``'s frame,
    normalised as the model expects, one batch per slice axis of its card: what the network sees in a real run."""
    from medfcn.data.reader import read_scan

    card = model.card
    volume = torch.from_numpy(normalise_for_model(frame_for_model(read_scan(scan), card), card))
    batches = []
    for axis in card.slice_axes:
        start = max(0, volume.shape[axis] // 2 - n // 2)
        stop = min(volume.shape[axis], start + n)
        batches.append(slice_stack(volume, start, stop, axis=axis, context=card.context))
    return batches
