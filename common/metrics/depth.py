"""Depth metrics: AbsRel, SqRel, RMSE, log-RMSE, SILog, log10, delta thresholds.

Definitions follow the Eigen et al. / KITTI set as implemented in MonST3R's
`dust3r/depth_eval.py::depth_evaluation` (reused by CUT3R and IVGT's tables) and SpatialRGPT's
`compute_errors` (DepthLM / VLM3 / DepthVLM). With p = predicted depth, g = ground-truth depth over
the valid pixels:

    abs_rel  = mean |p - g| / g
    sq_rel   = mean (p - g)^2 / g
    rmse     = sqrt(mean (p - g)^2)
    rmse_log = sqrt(mean (log p - log g)^2)
    silog    = 100 * sqrt(mean e^2 - mean(e)^2),  e = log p - log g     (KITTI benchmark)
    log10    = mean |log10 p - log10 g|
    deltaK   = mean 1[max(p/g, g/p) < 1.25^K],  K = 1, 2, 3

`depth` is z-depth in metres (DESIGN.md); whether a package compares z-depth or ray distance is
the package's decision, the formulas are the same.
"""

from __future__ import annotations

import numpy as np

from ._utils import as_mask, as_numpy, check_same_shape

DEPTH_METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10", "delta1", "delta2", "delta3")


def _valid_or_all(valid, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    if valid is None:
        return np.isfinite(gt) & np.isfinite(pred) & (gt > 0)
    return as_mask(valid, "valid", gt.shape)


def _median(x: np.ndarray, kind: str) -> float:
    if kind == "numpy":
        return float(np.median(x))
    if kind == "torch":  # torch.median: the lower of the two middle values on an even count
        return float(np.partition(x, (x.size - 1) // 2)[(x.size - 1) // 2])
    raise ValueError(f"median: expected 'numpy' or 'torch', got {kind!r}")


def align_median(pred, gt, valid=None, median: str = "numpy") -> np.ndarray:
    """Median scaling: returns s * pred with s = median(gt[valid]) / median(pred[valid]).

    One scale for everything passed in: pass one image for per-frame alignment (the
    DUSt3R/MonST3R monocular default), or a whole [T, H, W] video for one scale per sequence
    (video-depth protocol). `valid` defaults to finite, positive gt. Returns float64 numpy.

    median: "numpy" (the mean of the two middle values on an even pixel count, np.median) or
    "torch" (the lower middle value, as `torch.median` in evaluation code written in torch, e.g.
    MonST3R's and MoGe's); the two differ only on an even count of valid pixels.
    """
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    valid = _valid_or_all(valid, pred, gt)
    if not valid.any():
        raise ValueError("valid: no valid pixel to align on")
    med_pred = _median(pred[valid], median)
    if not np.isfinite(med_pred) or med_pred <= 0:
        raise ValueError(
            f"pred: median over valid pixels is {med_pred}, median scaling needs a positive value"
        )
    return pred * (_median(gt[valid], median) / med_pred)


def align_lstsq(pred, gt, valid=None) -> np.ndarray:
    """Least-squares scale and shift: returns s * pred + t minimising sum_valid (s p + t - g)^2.

    One (s, t) for everything passed in (see `align_median`). Alignment is in depth space; for
    the disparity-space protocol of Depth Anything / MoGe pass 1/depth and invert the result.
    Returns float64 numpy.
    """
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    valid = _valid_or_all(valid, pred, gt)
    if valid.sum() < 2:
        raise ValueError("valid: least-squares scale and shift needs at least 2 valid pixels")
    p, g = pred[valid], gt[valid]
    if not np.all(np.isfinite(p)):
        raise ValueError("pred: contains NaN or inf at valid pixels")
    A = np.stack([p, np.ones_like(p)], axis=1)  # [N, 2]
    (s, t), *_ = np.linalg.lstsq(A, g, rcond=None)
    return pred * s + t


def silog(pred, gt, valid=None, lam: float = 1.0, scale: float = 100.0) -> float:
    """Scale-invariant log error: scale * sqrt(mean(e^2) - lam * mean(e)^2), e = log pred - log gt.

    Defaults (lam=1, scale=100) are the KITTI depth benchmark convention used in our reports.
    DepthVLM's training loss is the same expression with lam=0.5, scale=1 (Eigen et al. 2014 loss).
    Pred must be positive on the valid pixels (`depth_metrics` clamps it to `min_depth` first).
    """
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    valid = _valid_or_all(valid, pred, gt)
    if not valid.any():
        raise ValueError("valid: no valid pixel")
    p, g = pred[valid], gt[valid]
    if np.any(~(p > 0)) or np.any(~(g > 0)):
        raise ValueError("pred and gt must be positive and finite on valid pixels for SILog")
    e = np.log(p) - np.log(g)
    # With lam=1 this is the variance of e; rounding can make it slightly negative.
    return float(scale * np.sqrt(max(np.mean(e**2) - lam * np.mean(e) ** 2, 0.0)))


def _errors(p: np.ndarray, g: np.ndarray) -> dict:
    """All metrics over 1-D arrays of valid predicted / ground-truth depths (p, g > 0)."""
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "silog": float(100.0 * np.sqrt(max(np.mean(log_diff**2) - np.mean(log_diff) ** 2, 0.0))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def depth_metrics(
    pred, gt, mask=None, align=None, min_depth: float = 1e-3, max_depth=None, per_image: bool = False
) -> dict:
    """Depth metrics (module docstring) between pred and gt, [H, W] or [B, H, W], metres.

    Valid pixels: finite gt with min_depth < gt (< max_depth when given), and `mask` when given.
    Pred must be finite on valid pixels (ValueError otherwise: a NaN prediction is a bug to see,
    not a number to average).

    align: None (default; metric depth stays metric), "median" (`align_median`) or "lstsq"
    (`align_lstsq`), fitted per image on its valid pixels. For one scale per video call
    `align_median` on the whole sequence yourself and pass align=None.

    After alignment pred is clamped to >= min_depth (so logs and ratios are defined) for every
    metric; it is not clamped above.

    per_image=False pools all valid pixels of all images and computes each metric once
    (MonST3R-style pixel averaging; RMSE is then the RMSE over all pixels). per_image=True computes
    each image's metrics and averages them with equal weight per image (DepthVLM aggregates per
    sample); images without a valid pixel are skipped. SILog uses the KITTI default (see `silog`).

    Returns a dict of floats with keys abs_rel, sq_rel, rmse, rmse_log, silog, log10, delta1,
    delta2, delta3 (deltas as fractions in [0, 1]).
    """
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    if pred.ndim not in (2, 3):
        raise ValueError(f"pred: expected [H, W] or [B, H, W], got shape {pred.shape}")
    if not min_depth > 0:
        raise ValueError(f"min_depth: must be > 0 (logs are taken), got {min_depth}")
    if align not in (None, "median", "lstsq"):
        raise ValueError(f"align: expected None, 'median' or 'lstsq', got {align!r}")
    squeeze = pred.ndim == 2
    if squeeze:
        pred, gt = pred[None], gt[None]  # [1, H, W]

    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > min_depth)  # [B, H, W]
        if max_depth is not None:
            valid &= gt < max_depth
    if mask is not None:
        m = as_mask(mask, "mask", pred.shape[1:] if squeeze else pred.shape)
        valid &= m[None] if squeeze else m
    if not valid.any():
        raise ValueError("gt: no valid pixel (check mask, min_depth, max_depth)")
    if not np.all(np.isfinite(pred[valid])):
        raise ValueError("pred: contains NaN or inf at valid pixels")

    pred = pred.copy()
    if align is not None:
        fit = align_median if align == "median" else align_lstsq
        for b in range(pred.shape[0]):
            if valid[b].any():
                pred[b] = fit(pred[b], gt[b], valid[b])
    pred = np.maximum(pred, min_depth)

    if not per_image:
        return _errors(pred[valid], gt[valid])
    per = [_errors(pred[b][valid[b]], gt[b][valid[b]]) for b in range(pred.shape[0]) if valid[b].any()]
    return {k: float(np.mean([d[k] for d in per])) for k in DEPTH_METRIC_KEYS}
