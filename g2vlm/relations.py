"""Spatial relations between objects, as facts computed from 3D boxes and one viewpoint.

Boxes are axis-aligned [cx, cy, cz, dx, dy, dz] (metres, world frame, z up). The viewer is a camera
(K, w2c: OpenCV, x right, y down, z forward) of width W. For subject a and object b:

- "left of" / "right of": a's projected centre lies left / right of b's by at least 8% of the image
  width (both centres in front of the camera): `common.synthetic`'s rule for its left_of questions;
- "in front of" / "behind": a's centre is closer to / farther from the camera centre than b's, by a
  factor of at least 1.15 and at least 0.25 m: `common.synthetic`'s rule for "closer" questions;
- "on": a's bottom is within 5 cm of b's top and their footprints overlap;
- "above" / "below": a's bottom is more than 5 cm above b's top (b's bottom above a's top) and
  their footprints overlap;
- "near": the gap between the two boxes is below 0.5 m.

A pair can hold several relations (multi-label); the scene graph is the set of (a, predicate, b).
"""

from __future__ import annotations

import numpy as np

RELATIONS = ("left of", "right of", "in front of", "behind", "above", "below", "on", "near")
SIDE_MARGIN = 0.08
CLOSER_RATIO, CLOSER_GAP = 1.15, 0.25
ON_TOLERANCE = 0.05
NEAR_GAP = 0.5


def _project(center: np.ndarray, K: np.ndarray, w2c: np.ndarray) -> tuple[float, float]:
    cam = w2c[:3, :3] @ center + w2c[:3, 3]
    return (float((K @ cam)[0] / cam[2]) if cam[2] > 0 else float("nan")), float(cam[2])


def _box_gap(a: np.ndarray, b: np.ndarray) -> float:
    lo = np.maximum(a[:3] - a[3:] / 2, b[:3] - b[3:] / 2)
    hi = np.minimum(a[:3] + a[3:] / 2, b[:3] + b[3:] / 2)
    return float(np.linalg.norm(np.clip(lo - hi, 0, None)))


def _footprints_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(np.abs(a[:2] - b[:2]) < (a[3:5] + b[3:5]) / 2))


def pair_relations(a: np.ndarray, b: np.ndarray, K: np.ndarray, w2c: np.ndarray, width: int) -> np.ndarray:
    """Booleans [len(RELATIONS)]: which relations hold for (a, b) from this camera."""
    out = np.zeros(len(RELATIONS), dtype=bool)
    ua, za = _project(a[:3], K, w2c)
    ub, zb = _project(b[:3], K, w2c)
    if za > 0 and zb > 0:
        out[0] = ub - ua >= SIDE_MARGIN * width
        out[1] = ua - ub >= SIDE_MARGIN * width
    eye = -w2c[:3, :3].T @ w2c[:3, 3]
    da, db = float(np.linalg.norm(a[:3] - eye)), float(np.linalg.norm(b[:3] - eye))
    clear = max(da, db) >= CLOSER_RATIO * min(da, db) and abs(da - db) >= CLOSER_GAP
    out[2], out[3] = clear and da < db, clear and da > db
    bottom_a, top_a = a[2] - a[5] / 2, a[2] + a[5] / 2
    bottom_b, top_b = b[2] - b[5] / 2, b[2] + b[5] / 2
    over = _footprints_overlap(a, b)
    out[6] = over and abs(bottom_a - top_b) <= ON_TOLERANCE
    out[4] = over and bottom_a > top_b + ON_TOLERANCE
    out[5] = over and bottom_b > top_a + ON_TOLERANCE
    out[7] = _box_gap(a, b) < NEAR_GAP
    return out


def relation_matrix(boxes: np.ndarray, K: np.ndarray, w2c: np.ndarray, width: int) -> np.ndarray:
    """[N, N, len(RELATIONS)] booleans over ordered pairs (the diagonal is all False)."""
    n = len(boxes)
    out = np.zeros((n, n, len(RELATIONS)), dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j:
                out[i, j] = pair_relations(boxes[i], boxes[j], K, w2c, width)
    return out


def triplets(matrix: np.ndarray) -> set[tuple[int, str, int]]:
    """{(subject, predicate, object)} of a relation matrix [N, N, R] of booleans."""
    return {(int(i), RELATIONS[r], int(j)) for i, j, r in zip(*np.nonzero(matrix))}


def triplet_scores(pred: set, gt: set) -> tuple[float, float, float]:
    """(precision, recall, F1) of predicted triplets against ground-truth ones (1, 1, 1 when both empty)."""
    if not pred and not gt:
        return 1.0, 1.0, 1.0
    tp = len(pred & gt)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gt) if gt else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
