"""The pipeline's stages: Segmenter.segment is its named stage methods, called in order."""

from __future__ import annotations

import numpy as np
from conftest import head_volume, lps_geometry, oblique_affine

from medfcn.frame import normalise_intensity, probabilities_to_labels, to_model_frame
from medfcn.postprocess import apply_to_probabilities
from medfcn.scan import Scan


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
