"""Accepting a model's prediction into the labels a person paints: copied in where nothing is painted."""

from __future__ import annotations

import numpy as np

from medfcn.errors import MedfcnError

__all__ = ["accept_prediction"]


def accept_prediction(painted: np.ndarray, prediction: np.ndarray, *, name: str = "the labels") -> np.ndarray:
    """``painted`` with ``prediction`` copied in where nothing is painted (value 0); painted voxels, of any label,
    are kept. Same shape and type as ``painted``. Raises :class:`MedfcnError` (naming ``name``) when the shapes
    differ or a predicted label does not fit ``painted``'s type.

    >>> accept_prediction(np.array([0, 2, 0, 1]), np.array([1, 1, 0, 0]))
    array([1, 2, 0, 1])
    """
    painted, prediction = np.asarray(painted), np.asarray(prediction)
    if painted.shape != prediction.shape:
        raise MedfcnError(f"{name}: its shape {painted.shape} is not that of the prediction {prediction.shape}")
    if prediction.size and np.issubdtype(painted.dtype, np.integer):
        info = np.iinfo(painted.dtype)
        if prediction.min() < info.min or prediction.max() > info.max:
            raise MedfcnError(f"{name}: the prediction's labels do not fit its type {painted.dtype}")
    return np.where(painted != 0, painted, prediction).astype(painted.dtype, copy=False)
