"""Camera pose metrics: relative pose accuracy / AUC (VGGT protocol) and trajectory errors (evo).

Poses are world-to-camera 4x4 matrices `w2c` (OpenCV, DESIGN.md); [N, 3, 4] is accepted too.
Everything is computed in numpy float64. Non-finite poses raise ValueError instead of being
mapped to a large error as VGGT does (`default_err`): a diverged model should be seen, not scored.

Two protocols live here:
* Pairwise (VGGT `evaluation/test_co3d.py`, PoseDiffusion, DUSt3R, G2VLM `metric.py`): all
  N(N-1)/2 pairs i < j, relative pose T_ij = T_i inv(T_j) for prediction and ground truth, the
  geodesic angle between the relative rotations and the angle between the relative translation
  directions; RRA@tau / RTA@tau and AUC@30 (mAA) on those.
* Trajectory (MonST3R `dust3r/utils/vo_eval.py` on `evo`; IVGT Table 3): the predicted camera
  centres are Sim(3)-aligned to the ground truth with Umeyama, then ATE and RPE.
"""

from __future__ import annotations

import numpy as np

from ._utils import as_numpy, check_finite, check_same_shape


def _rotations(R, name: str) -> np.ndarray:
    R = as_numpy(R, name)
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape [..., 3, 3], got {R.shape}")
    check_finite(R, name)
    return R


def _w2c(T, name: str) -> np.ndarray:
    """[N, 4, 4] float64 from [N, 4, 4] or [N, 3, 4]."""
    T = as_numpy(T, name)
    if T.ndim != 3 or T.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"{name}: expected shape [N, 4, 4] or [N, 3, 4], got {T.shape}")
    check_finite(T, name)
    if T.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (T.shape[0], 1, 4))
        T = np.concatenate([T, bottom], axis=1)
    return T


def _invert_rigid(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of [..., 4, 4] rigid transforms (R^T, -R^T t): exact, unlike np.linalg.inv."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def _rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle of [..., 3, 3] matrices in degrees.

    atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2) equals arccos((tr R - 1) / 2) for a rotation, but
    keeps full precision near 0 and 180 degrees where arccos is flat.
    """
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    vee = np.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1
    )
    sin = np.linalg.norm(vee, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def rotation_error_deg(R_pred, R_gt) -> np.ndarray:
    """Geodesic angle (degrees, in [0, 180]) between rotations [..., 3, 3]: angle of R_pred^T R_gt.

    Same quantity as VGGT's quaternion form arccos(1 - 2 (1 - (q_pred . q_gt)^2)). Returns an
    array of shape [...].
    """
    R_pred = _rotations(R_pred, "R_pred")
    R_gt = _rotations(R_gt, "R_gt")
    check_same_shape(R_pred, R_gt, "R_pred", "R_gt")
    return _rotation_angle_deg(np.swapaxes(R_pred, -1, -2) @ R_gt)


def translation_direction_error_deg(t_pred, t_gt) -> np.ndarray:
    """Angle (degrees) between translation directions [..., 3], sign-invariant: in [0, 90].

    e = arccos(clip(t_pred . t_gt / (|t_pred| |t_gt|))) then min(e, 180 - e), as the VGGT /
    PoseDiffusion code does (their arccos(sqrt(1 - (t.t_gt)^2)) form is already sign-invariant):
    the scale and sign of a relative translation are not observable from two images. A
    zero-length vector scores 90 degrees (VGGT normalises with an eps, giving a zero dot product).
    """
    t_pred = as_numpy(t_pred, "t_pred")
    t_gt = as_numpy(t_gt, "t_gt")
    check_same_shape(t_pred, t_gt, "t_pred", "t_gt")
    if t_pred.ndim < 1 or t_pred.shape[-1] != 3:
        raise ValueError(f"t_pred: expected shape [..., 3], got {t_pred.shape}")
    check_finite(t_pred, "t_pred")
    check_finite(t_gt, "t_gt")
    n_pred = np.linalg.norm(t_pred, axis=-1)
    n_gt = np.linalg.norm(t_gt, axis=-1)
    denom = n_pred * n_gt
    cos = np.where(denom > 1e-15, np.sum(t_pred * t_gt, axis=-1) / np.maximum(denom, 1e-300), 0.0)
    e = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return np.minimum(e, 180.0 - e)


def relative_pose_errors(w2c_pred, w2c_gt) -> tuple:
    """Pairwise relative rotation and translation-direction errors (degrees), VGGT protocol.

    w2c_pred, w2c_gt: [N, 4, 4] (or [N, 3, 4]), N >= 2. For all pairs i < j (in np.triu_indices
    order) the relative pose is T_ij = T_i inv(T_j) for both; returns (rot_err [P], trans_err [P])
    with P = N (N - 1) / 2, from `rotation_error_deg` and `translation_direction_error_deg`.
    """
    pred = _w2c(w2c_pred, "w2c_pred")
    gt = _w2c(w2c_gt, "w2c_gt")
    check_same_shape(pred, gt, "w2c_pred", "w2c_gt")
    if pred.shape[0] < 2:
        raise ValueError(f"w2c_pred: need at least 2 cameras for relative poses, got {pred.shape[0]}")
    i, j = np.triu_indices(pred.shape[0], k=1)
    rel_pred = pred[i] @ _invert_rigid(pred[j])  # [P, 4, 4]
    rel_gt = gt[i] @ _invert_rigid(gt[j])
    rot_err = rotation_error_deg(rel_pred[:, :3, :3], rel_gt[:, :3, :3])
    trans_err = translation_direction_error_deg(rel_pred[:, :3, 3], rel_gt[:, :3, 3])
    return rot_err, trans_err


def _errors_1d(e, name: str) -> np.ndarray:
    e = as_numpy(e, name)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {e.shape}")
    if np.any(np.isnan(e)):
        raise ValueError(f"{name}: contains NaN")
    return e


def rra(rot_err, threshold: float) -> float:
    """Relative Rotation Accuracy: fraction of pairs with rot_err < threshold (degrees).

    A fraction in [0, 1]; papers (and `pose_metrics`) report it as a percentage.
    """
    return float(np.mean(_errors_1d(rot_err, "rot_err") < threshold))


def rta(trans_err, threshold: float) -> float:
    """Relative Translation Accuracy: fraction of pairs with trans_err < threshold (degrees).

    A fraction in [0, 1]; papers (and `pose_metrics`) report it as a percentage.
    """
    return float(np.mean(_errors_1d(trans_err, "trans_err") < threshold))


def pose_auc(rot_err, trans_err, max_threshold: int = 30) -> float:
    """AUC@max_threshold (mAA) of the pairwise pose accuracy curve, as a fraction in [0, 1].

    VGGT `calculate_auc_np`: e = max(rot_err, trans_err) per pair; a histogram with 1-degree bins
    on [0, T] (np.histogram, bins 0, 1, ..., T); AUC = mean over k = 1..T of the cumulative
    normalised histogram, i.e. acc(k) = fraction of pairs with e < k, except that np.histogram
    closes its last bin so acc(T) counts e <= T. We reproduce that exactly. (The torch variant,
    `calculate_auc` with torch.histc and T + 1 bins, gives slightly different numbers.)
    """
    rot_err = _errors_1d(rot_err, "rot_err")
    trans_err = _errors_1d(trans_err, "trans_err")
    check_same_shape(rot_err, trans_err, "rot_err", "trans_err")
    if int(max_threshold) != max_threshold or max_threshold < 1:
        raise ValueError(f"max_threshold: expected a positive integer (degrees), got {max_threshold}")
    e = np.maximum(rot_err, trans_err)
    histogram, _ = np.histogram(e, bins=np.arange(int(max_threshold) + 1))
    return float(np.mean(np.cumsum(histogram / e.size)))


def umeyama(src, dst, with_scale: bool = True) -> tuple:
    """Least-squares similarity (Umeyama 1991): (s, R, t) minimising sum |dst - (s R src + t)|^2.

    src, dst: [N, 3] corresponding points. R is a proper rotation (det +1) even when the best
    orthogonal fit is a reflection (the sign of the last singular vector is flipped). With
    with_scale=False, s = 1 (SE(3) alignment). If all src points coincide, R = I and, with scale,
    s = 0 (the least-squares optimum; R is then arbitrary).
    """
    src = as_numpy(src, "src")
    dst = as_numpy(dst, "dst")
    check_same_shape(src, dst, "src", "dst")
    if src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 2:
        raise ValueError(f"src: expected shape [N, 3] with N >= 2, got {src.shape}")
    check_finite(src, "src")
    check_finite(dst, "dst")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = np.mean(np.sum(src_c**2, axis=1))
    if var_src < 1e-20:
        # All src points coincide (e.g. a predicted pure rotation): R is arbitrary, so take I;
        # with scale the least-squares optimum is s = 0 (everything maps to the dst centroid).
        s = 0.0 if with_scale else 1.0
        return s, np.eye(3), mu_dst - s * mu_src
    cov = dst_c.T @ src_c / src.shape[0]  # [3, 3]
    U, D, Vt = np.linalg.svd(cov)
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_src) if with_scale else 1.0
    t = mu_dst - s * R @ mu_src
    return s, R, t


def _centers(w2c: np.ndarray) -> np.ndarray:
    """Camera centres in world coordinates, C = -R^T t, [N, 3]."""
    return _invert_rigid(w2c)[:, :3, 3]


def absolute_trajectory_error(pred_centers, gt_centers, with_scale: bool = True) -> float:
    """ATE: RMSE (metres) of camera centres after aligning pred to gt with `umeyama`.

    sqrt(mean_i |s R c_pred_i + t - c_gt_i|^2) with Sim(3) alignment (with_scale=True, evo's
    `align=True, correct_scale=True`, MonST3R) or SE(3) (with_scale=False). Centres [N, 3].
    """
    pred = as_numpy(pred_centers, "pred_centers")
    gt = as_numpy(gt_centers, "gt_centers")
    s, R, t = umeyama(pred, gt, with_scale=with_scale)
    aligned = s * pred @ R.T + t  # [N, 3]
    return float(np.sqrt(np.mean(np.sum((aligned - gt) ** 2, axis=1))))


def relative_pose_error(w2c_pred, w2c_gt) -> tuple:
    """RPE between consecutive frames, evo / MonST3R convention: (rpe_trans metres, rpe_rot deg).

    The predicted camera-to-world poses are first Sim(3)-aligned to the ground truth (Umeyama on
    the camera centres, as evo's `align(correct_scale=True)`: centres become s R c + t, orientations
    R R_c2w). For each i, with relative motions Q = inv(G_i) G_{i+1} (gt) and P = inv(P_i) P_{i+1}
    (aligned prediction), E = inv(Q) P; rpe_trans = RMSE of |translation(E)|, rpe_rot = RMSE of
    the rotation angle of E in degrees (delta = 1 frame, all consecutive pairs).
    """
    pred = _w2c(w2c_pred, "w2c_pred")
    gt = _w2c(w2c_gt, "w2c_gt")
    check_same_shape(pred, gt, "w2c_pred", "w2c_gt")
    if pred.shape[0] < 2:
        raise ValueError(f"w2c_pred: need at least 2 frames for RPE, got {pred.shape[0]}")
    c2w_pred, c2w_gt = _invert_rigid(pred), _invert_rigid(gt)  # [N, 4, 4]
    s, R, t = umeyama(c2w_pred[:, :3, 3], c2w_gt[:, :3, 3], with_scale=True)
    aligned = c2w_pred.copy()
    aligned[:, :3, :3] = R @ c2w_pred[:, :3, :3]
    aligned[:, :3, 3] = s * c2w_pred[:, :3, 3] @ R.T + t
    # The aligned poses carry a scale in their translation only, so the rigid inverse stays exact.
    rel_gt = _invert_rigid(c2w_gt[:-1]) @ c2w_gt[1:]  # [N-1, 4, 4]
    rel_pred = _invert_rigid(aligned[:-1]) @ aligned[1:]
    err = _invert_rigid(rel_gt) @ rel_pred
    rpe_trans = float(np.sqrt(np.mean(np.sum(err[:, :3, 3] ** 2, axis=1))))
    rpe_rot = float(np.sqrt(np.mean(_rotation_angle_deg(err[:, :3, :3]) ** 2)))
    return rpe_trans, rpe_rot


def pose_metrics(w2c_pred, w2c_gt) -> dict:
    """All pose metrics for one sequence, as papers report them.

    rra_15, rta_15, rra_30, rta_30, auc_30: percent (0-100), pairwise VGGT protocol;
    ate (m), rpe_trans (m), rpe_rot (deg): trajectory protocol after Sim(3) alignment.
    CO3D-style tables average these per sequence, then per category: that is the caller's.
    """
    rot_err, trans_err = relative_pose_errors(w2c_pred, w2c_gt)
    pred, gt = _w2c(w2c_pred, "w2c_pred"), _w2c(w2c_gt, "w2c_gt")
    rpe_trans, rpe_rot = relative_pose_error(pred, gt)
    return {
        "rra_15": 100 * rra(rot_err, 15),
        "rta_15": 100 * rta(trans_err, 15),
        "rra_30": 100 * rra(rot_err, 30),
        "rta_30": 100 * rta(trans_err, 30),
        "auc_30": 100 * pose_auc(rot_err, trans_err, 30),
        "ate": absolute_trajectory_error(_centers(pred), _centers(gt), with_scale=True),
        "rpe_trans": rpe_trans,
        "rpe_rot": rpe_rot,
    }
