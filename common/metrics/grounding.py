"""3D visual grounding metrics: box IoU (axis-aligned and oriented), Acc@IoU, Multi3DRefer F1.

A box is (center [3], size [3]) or (center [3], size [3], R [3, 3]): `size` is the full extent
along the box's own axes, `R` rotates box coordinates into the world (its columns are the box
axes), so a corner is center + R @ (±size / 2). Metres.

Protocols: ScanRefer Acc@k and Multi3DRefer F1@k as in Video-3D-LLM `llava/eval/eval_scanrefer.py`
/ `eval_multi3drefer.py` (axis-aligned boxes); VG-LLM uses oriented IoU, hence
`box_iou_3d_oriented`.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial import ConvexHull, HalfspaceIntersection, QhullError

from ._utils import as_numpy, check_finite, check_last_dim


def _vec3(x, name: str) -> np.ndarray:
    x = as_numpy(x, name)
    check_last_dim(x, name, 3)
    check_finite(x, name)
    return x


def _size(x, name: str) -> np.ndarray:
    x = _vec3(x, name)
    if np.any(x < 0):
        raise ValueError(f"{name}: box sizes must be >= 0")
    return x


def _rotation(R, name: str, batch_shape: tuple) -> np.ndarray:
    if R is None:
        return np.broadcast_to(np.eye(3), batch_shape + (3, 3))
    R = as_numpy(R, name)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape [..., 3, 3], got {R.shape}")
    check_finite(R, name)
    return R


def _scalar_or_array(x: np.ndarray):
    return float(x) if x.ndim == 0 else x


def box_corners(center, size, R=None) -> np.ndarray:
    """The 8 corners [..., 8, 3] of boxes center [..., 3], size [..., 3], R [..., 3, 3] (None: I).

    Corner k has local signs ((k >> 2) & 1, (k >> 1) & 1, k & 1) mapped 0 -> -, 1 -> + for (x, y, z).
    """
    center = _vec3(center, "center")
    size = _size(size, "size")
    batch = np.broadcast_shapes(center.shape[:-1], size.shape[:-1])
    R = _rotation(R, "R", batch)
    signs = np.array(list(itertools.product((-0.5, 0.5), repeat=3)))  # [8, 3]
    local = signs * size[..., None, :]  # [..., 8, 3]
    return center[..., None, :] + np.einsum("...ij,...kj->...ki", R, local)


def box_iou_3d_axis_aligned(center_a, size_a, center_b, size_b):
    """IoU of axis-aligned boxes, batched over [...] with broadcasting.

    IoU = V_inter / (V_a + V_b - V_inter); Video-3D-LLM adds 1e-8 to the denominator, we return 0
    when the union is empty instead (both boxes degenerate). Returns a float for single boxes,
    else an array [...].
    """
    ca, sa = _vec3(center_a, "center_a"), _size(size_a, "size_a")
    cb, sb = _vec3(center_b, "center_b"), _size(size_b, "size_b")
    lo = np.maximum(ca - sa / 2, cb - sb / 2)
    hi = np.minimum(ca + sa / 2, cb + sb / 2)
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    union = np.prod(sa, axis=-1) + np.prod(sb, axis=-1) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return _scalar_or_array(iou)


def _halfspaces(center: np.ndarray, size: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The box as 6 halfspaces [6, 4] in Qhull's form A x + b <= 0 (A rows are unit normals)."""
    normals = np.concatenate([R.T, -R.T], axis=0)  # [6, 3]: +x, +y, +z, -x, -y, -z box axes
    offsets = np.concatenate([size, size]) / 2 + normals @ center  # n . x <= n . c + s/2
    return np.concatenate([normals, -offsets[:, None]], axis=1)


def _oriented_intersection_volume(ca, sa, Ra, cb, sb, Rb) -> float:
    hs = np.concatenate([_halfspaces(ca, sa, Ra), _halfspaces(cb, sb, Rb)])  # [12, 4]
    A, b = hs[:, :3], -hs[:, 3]
    # Chebyshev centre: the point deepest inside both boxes, max r s.t. A x + r |A_i| <= b.
    # Its depth r tells whether the intersection has an interior (else the volume is 0) and it
    # is the interior point HalfspaceIntersection needs.
    res = linprog(
        c=[0, 0, 0, -1],
        A_ub=np.concatenate([A, np.linalg.norm(A, axis=1, keepdims=True)], axis=1),
        b_ub=b,
        bounds=[(None, None)] * 3 + [(0, None)],
        method="highs",
    )
    scale = max(sa.max(), sb.max())
    if res.status != 0 or res.x[3] <= 1e-9 * scale:
        return 0.0  # empty or of zero volume (touching faces)
    try:
        vertices = HalfspaceIntersection(hs, res.x[:3]).intersections
        return float(ConvexHull(vertices).volume)
    except QhullError:
        return 0.0  # numerically flat intersection


def box_iou_3d_oriented(center_a, size_a, R_a, center_b, size_b, R_b):
    """Exact IoU of oriented boxes (any rotations), batched over [...] by a loop.

    The intersection of two boxes is a convex polytope: the 12 face halfspaces are intersected
    with scipy.spatial.HalfspaceIntersection around an interior point found by a linear program
    (scipy.optimize.linprog; no interior point -> intersection volume 0) and its volume is that of
    the ConvexHull of the vertices. R_a / R_b may be None (identity). Returns a float for single
    boxes, else an array [...].
    """
    ca, sa = _vec3(center_a, "center_a"), _size(size_a, "size_a")
    cb, sb = _vec3(center_b, "center_b"), _size(size_b, "size_b")
    batch = np.broadcast_shapes(
        ca.shape[:-1],
        sa.shape[:-1],
        cb.shape[:-1],
        sb.shape[:-1],
        *(as_numpy(R, "R").shape[:-2] for R in (R_a, R_b) if R is not None),
    )
    Ra, Rb = _rotation(R_a, "R_a", batch), _rotation(R_b, "R_b", batch)
    ca, sa, cb, sb = (np.broadcast_to(x, batch + (3,)) for x in (ca, sa, cb, sb))
    Ra, Rb = np.broadcast_to(Ra, batch + (3, 3)), np.broadcast_to(Rb, batch + (3, 3))
    iou = np.zeros(batch)
    for idx in np.ndindex(*batch):
        vol_a, vol_b = np.prod(sa[idx]), np.prod(sb[idx])
        if vol_a == 0 or vol_b == 0:
            inter = 0.0
        else:
            inter = _oriented_intersection_volume(ca[idx], sa[idx], Ra[idx], cb[idx], sb[idx], Rb[idx])
        union = vol_a + vol_b - inter
        iou[idx] = inter / union if union > 0 else 0.0
    return _scalar_or_array(iou)


def acc_at_iou(ious, thresholds=(0.25, 0.5)) -> dict:
    """ScanRefer Acc@k: fraction of queries with IoU >= k, {"acc@0.25": ..., "acc@0.5": ...}.

    Fractions in [0, 1]; papers print percentages. A query without a prediction should be given
    IoU 0 by the caller.
    """
    ious = as_numpy(ious, "ious").reshape(-1)
    if ious.size == 0:
        raise ValueError("ious: empty")
    check_finite(ious, "ious")
    return {f"acc@{t:g}": float(np.mean(ious >= t)) for t in thresholds}


def _box_list(boxes, name: str) -> list:
    """A list of box tuples from a list of tuples or an [K, 6] array (center, size; axis-aligned)."""
    if isinstance(boxes, np.ndarray) or hasattr(boxes, "detach"):
        arr = as_numpy(boxes, name)
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise ValueError(
                f"{name}: expected a list of (center, size[, R]) or an array [K, 6], got {arr.shape}"
            )
        return [(a[:3], a[3:]) for a in arr]
    out = list(boxes)
    for k, box in enumerate(out):
        if len(box) not in (2, 3):
            raise ValueError(f"{name}[{k}]: expected (center, size) or (center, size, R)")
    return out


def _default_iou(box_a, box_b) -> float:
    if len(box_a) == 2 and len(box_b) == 2:
        return box_iou_3d_axis_aligned(box_a[0], box_a[1], box_b[0], box_b[1])
    Ra = box_a[2] if len(box_a) == 3 else None
    Rb = box_b[2] if len(box_b) == 3 else None
    return box_iou_3d_oriented(box_a[0], box_a[1], Ra, box_b[0], box_b[1], Rb)


def multi3drefer_f1(pred_boxes, gt_boxes, threshold: float = 0.5, iou_fn=None) -> float:
    """Multi3DRefer F1@threshold for one query (Video-3D-LLM `eval_multi3drefer.py`).

    pred_boxes, gt_boxes: lists of boxes (center, size[, R]) or [K, 6] arrays (axis-aligned).
    The IoU matrix is filled with iou_fn(pred, gt) (default: axis-aligned IoU, oriented when a
    box has R), Hungarian matching (linear_sum_assignment) maximises the total IoU, and
    TP = number of matched pairs with IoU >= threshold; F1 = 2 TP / (|pred| + |gt|). Both empty
    -> 1 (a correct "no target"), exactly one empty -> 0. Note that the matching maximises IoU,
    not TP, as in the reference. Average over queries (per zt / st / mt type) is the caller's.
    """
    preds, gts = _box_list(pred_boxes, "pred_boxes"), _box_list(gt_boxes, "gt_boxes")
    if not preds and not gts:
        return 1.0
    if not preds or not gts:
        return 0.0
    iou_fn = iou_fn or _default_iou
    iou = np.array([[float(iou_fn(p, g)) for g in gts] for p in preds])  # [P, G]
    rows, cols = linear_sum_assignment(iou, maximize=True)  # rectangular = the reference's padding
    tp = int(np.sum(iou[rows, cols] >= threshold))
    return 2 * tp / (len(preds) + len(gts))
