"""medfcn.inference.pipeline: Segmenter.segment is its named stage methods, called in order; what a batch asks of it
besides its labels."""

from __future__ import annotations

import weakref

import numpy as np

from medfcn.data.scan import Scan
from medfcn.inference.frame import normalise_intensity, probabilities_to_labels, to_model_frame
from medfcn.inference.pipeline import Segmenter
from medfcn.inference.postprocess import apply_to_probabilities
from medfcn.inference.settings import InferenceSettings
from tests.support.scans import head_volume, lps_geometry, oblique_affine


def test_segment_is_its_stages_in_order(segmenter) -> None:
    """An oblique odd-shaped scan: the stages called one by one give segment()'s labels, and each stage is the
    frame/normalise/engine/post-process/resample rule it names, with the card's settings."""
    scan = Scan(head_volume((23, 29, 19)), *lps_geometry(oblique_affine()))
    card = segmenter.model.card
    frame = segmenter.to_frame(scan)
    np.testing.assert_array_equal(frame.volume, to_model_frame(scan, card.spacing, orientation=card.orientation).volume)
    volume = segmenter.normalise(frame)
    np.testing.assert_array_equal(volume, normalise_intensity(frame.volume, card.normalisation))
    probs = segmenter.probabilities(volume)
    assert probs.dtype == np.uint16 and probs.shape == (len(card.labels), *frame.volume.shape)
    expected = apply_to_probabilities(probs.copy(), card.postprocess)
    np.testing.assert_array_equal(segmenter.postprocess(probs), expected)
    labels = segmenter.to_scan(probs, frame)
    np.testing.assert_array_equal(labels, probabilities_to_labels(expected, frame))
    np.testing.assert_array_equal(segmenter.segment(scan), labels)


def _scan() -> Scan:
    rng = np.random.default_rng(0)
    return Scan((rng.random((40, 44, 30)) * 1000).astype(np.int16), (1.2, 1.0, 1.5), (3.0, -2.0, 1.0), np.eye(3))


def test_release_voxels_frees_the_scans_voxels_once_framed_and_keeps_labels_and_grid() -> None:
    segmenter = Segmenter(None, InferenceSettings(device="cpu"))
    expected = segmenter.segment(_scan())
    scan = _scan()
    grid = scan.grid
    voxels = weakref.ref(scan.array)
    freed: list[tuple[float, bool]] = []  # (progress, voxels gone) at each progress call
    labels = segmenter.segment(scan, release_voxels=True, progress=lambda f: freed.append((f, voxels() is None)))
    from medfcn.inference.pipeline import _FRAME_SHARE

    during_inference = [gone for f, gone in freed if f > _FRAME_SHARE]
    assert during_inference and all(during_inference)  # gone before the engine ran
    assert np.array_equal(labels, expected)
    assert scan.grid == grid and scan.array.dtype == np.int16  # the writers' grid is intact
    assert scan.array.strides == (0, 0, 0)  # a stand-in: no memory of the scan's size


def test_without_release_voxels_the_scan_is_left_alone() -> None:
    scan = _scan()
    before = scan.array
    Segmenter(None, InferenceSettings(device="cpu")).segment(scan)
    assert scan.array is before


def test_foreground_box_by_hand() -> None:
    from medfcn.inference.frame import foreground_box

    v = np.zeros((40, 50, 60), np.float32)
    v[10:20, 5:45, 30:40] = 1.0
    assert foreground_box(v, margin=3) == (slice(7, 23), slice(2, 48), slice(27, 43))
    assert foreground_box(v, margin=8) == (slice(2, 28), slice(0, 50), slice(22, 48))  # clipped to the volume
    noisy = v.copy()
    rng = np.random.default_rng(0)
    noisy[tuple(rng.integers(0, 40, 30)), tuple(rng.integers(0, 50, 30)), tuple(rng.integers(0, 60, 30))] = 5.0
    noisy += rng.normal(0, 0.02, v.shape).astype(np.float32)  # scattered bright voxels and noise do not count
    assert foreground_box(noisy, margin=3) == (slice(7, 23), slice(2, 48), slice(27, 43))
    whole = (slice(None),) * 3
    assert foreground_box(np.zeros_like(v)) == whole and foreground_box(np.full_like(v, 7.0)) == whole


def test_probabilities_run_only_inside_the_head_and_call_the_air_background(segmenter) -> None:
    """A head in a wide empty field of view: inside the box the probabilities are those of the box alone, bit for
    bit; outside, background with the certainty of every slice axis."""
    from medfcn.inference.frame import foreground_box

    head = normalise_intensity(head_volume((26, 30, 22)))
    wide = np.zeros((60, 54, 50), np.float32)
    wide[17:43, 9:39, 20:42] = head
    box = foreground_box(wide)
    assert wide[box].size < wide.size / 2 and (wide[box] > 0.1).sum() == (wide > 0.1).sum()  # all of the head
    probs = segmenter.probabilities(wide)
    inside = (slice(None), *box)
    np.testing.assert_array_equal(probs[inside], segmenter.probabilities(wide[box]))
    outside = np.ones(wide.shape, bool)
    outside[box] = False
    n_axes = len(segmenter.model.card.slice_axes)
    assert (probs[0][outside] == 255 * n_axes).all() and (probs[1:, outside] == 0).all()
