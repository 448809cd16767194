"""Accepting a prediction into painted labels: painted voxels of any label kept, the prediction elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from medfcn.annotation.accept import accept_prediction
from medfcn.errors import MedfcnError


def test_the_prediction_fills_only_what_is_not_painted():
    painted = np.zeros((4, 5, 6), np.uint16)
    painted[1, 1:3, 2] = 7  # a label the model does not have
    painted[2, 2, 2] = 1
    prediction = np.zeros((4, 5, 6), np.uint8)
    prediction[1:3, :, 2] = 1
    out = accept_prediction(painted, prediction)
    assert out.dtype == np.uint16 and out.shape == painted.shape
    # hand-worked: slice x=1 and x=2 of column z=2 predicted (10 voxels); 3 of them painted (7, 7, 1)
    assert (out == 1).sum() == 10 - 2 and (out == 7).sum() == 2 and (out[..., [0, 1, 3, 4, 5]] == 0).all()
    assert accept_prediction(painted, np.zeros_like(prediction)).tolist() == painted.tolist()


def test_other_shapes_and_labels_that_do_not_fit_are_refused_naming_the_layer():
    with pytest.raises(MedfcnError, match=r"^blob: its shape \(2, 2\) is not that of the prediction \(2, 3\)$"):
        accept_prediction(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), name="blob")
    with pytest.raises(MedfcnError, match="blob: the prediction's labels do not fit its type uint8"):
        accept_prediction(np.zeros(3, np.uint8), np.array([0, 300, 1]), name="blob")
