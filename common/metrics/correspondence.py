"""2D correspondence / flow / point-tracking metrics: end-point error and PCK.

EPE = |pred - gt|_2 per point in pixels (optical flow, matching); PCK@tau = fraction of points
with EPE < tau pixels (strict, as TAP-Vid's `< threshold` position accuracy).
"""

from __future__ import annotations

import numpy as np

from ._utils import as_mask, as_numpy, check_finite, check_last_dim, check_same_shape


def end_point_error(pred, gt) -> np.ndarray:
    """Per-point Euclidean distance [...] between 2D points or flow vectors pred, gt [..., 2]."""
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    check_last_dim(pred, "pred", 2)
    check_finite(pred, "pred")
    check_finite(gt, "gt")
    return np.linalg.norm(pred - gt, axis=-1)


def _valid_epe(pred, gt, valid) -> np.ndarray:
    epe = end_point_error(pred, gt)
    if valid is not None:
        epe = epe[as_mask(valid, "valid", epe.shape)]
    if epe.size == 0:
        raise ValueError("valid: no valid point")
    return epe.reshape(-1)


def epe_stats(pred, gt, valid=None) -> dict:
    """Mean and median end-point error (pixels) over the valid points: {"mean", "median"}."""
    epe = _valid_epe(pred, gt, valid)
    return {"mean": float(epe.mean()), "median": float(np.median(epe))}


def pck(pred, gt, thresholds=(1.0, 3.0, 5.0), valid=None) -> dict:
    """Percentage of Correct Keypoints as fractions in [0, 1]: {"pck@1": ..., "pck@3": ...}.

    PCK@tau = mean 1[EPE < tau] over the valid points; thresholds in pixels.
    """
    epe = _valid_epe(pred, gt, valid)
    return {f"pck@{t:g}": float(np.mean(epe < t)) for t in thresholds}
