"""3D reconstruction metrics: point clouds, meshes and surface normals.

Point cloud / mesh protocol (MonoSDF `scannet_eval/evaluate.py`, IVGT tables; Spann3R / CUT3R for
normal consistency). With P = predicted points, G = ground-truth points and d(x, S) the
Euclidean distance from x to its nearest neighbour in S:

    accuracy     = mean_{p in P} d(p, G)          (also the median)
    completeness = mean_{g in G} d(g, P)          (also the median)
    chamfer      = (accuracy + completeness) / 2  (the "Chamfer" column of MonoSDF / IVGT tables;
                   some works instead sum the two means, or use squared distances, e.g.
                   pytorch3d's chamfer_distance: check before comparing numbers across papers)
    precision    = mean_p 1[d(p, G) < threshold],  recall = mean_g 1[d(g, P) < threshold]
    fscore       = 2 * precision * recall / (precision + recall)   (0 when both are 0)

The benchmark-specific preprocessing (TSDF re-fusion, voxel down-sampling, crops, ICP) is the
caller's; these functions take the final point sets.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._utils import as_mask, as_numpy, check_finite, check_same_shape


def _points(x, name: str) -> np.ndarray:
    x = as_numpy(x, name)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected shape [N, 3], got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty point set")
    check_finite(x, name)
    return x


def _unit(n: np.ndarray, name: str) -> np.ndarray:
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    if np.any(length < 1e-12):
        raise ValueError(f"{name}: contains zero-length normals")
    return n / length


def nearest_neighbor_distances(query, reference) -> tuple:
    """For each point of `query` [N, 3]: (distance to its nearest point in `reference` [M, 3], index)."""
    query = _points(query, "query")
    reference = _points(reference, "reference")
    dist, idx = cKDTree(reference).query(query, k=1)
    return dist, idx


def point_cloud_metrics(pred, gt, threshold: float = 0.05, pred_normals=None, gt_normals=None) -> dict:
    """Accuracy / completeness / Chamfer / precision / recall / F-score between point sets.

    pred [N, 3], gt [M, 3] in the same frame and unit (metres; threshold 0.05 = 5 cm, MonoSDF's
    ScanNet value). Definitions in the module docstring; precision and recall use a strict
    `< threshold` and are fractions in [0, 1].

    With pred_normals [N, 3] and gt_normals [M, 3] also returns normal_consistency =
    (mean_p |n_p . n_NN_G(p)| + mean_g |n_g . n_NN_P(g)|) / 2 (Spann3R / CUT3R; the absolute value
    makes it independent of normal orientation). Normals are normalised first.

    Returns a dict of floats: accuracy, completeness, chamfer, accuracy_median,
    completeness_median, precision, recall, fscore[, normal_consistency].
    """
    pred = _points(pred, "pred")
    gt = _points(gt, "gt")
    if not threshold > 0:
        raise ValueError(f"threshold: must be > 0, got {threshold}")
    d_pred, nn_in_gt = cKDTree(gt).query(pred, k=1)  # [N], for accuracy / precision
    d_gt, nn_in_pred = cKDTree(pred).query(gt, k=1)  # [M], for completeness / recall
    accuracy, completeness = float(d_pred.mean()), float(d_gt.mean())
    precision = float(np.mean(d_pred < threshold))
    recall = float(np.mean(d_gt < threshold))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    out = {
        "accuracy": accuracy,
        "completeness": completeness,
        "chamfer": (accuracy + completeness) / 2,
        "accuracy_median": float(np.median(d_pred)),
        "completeness_median": float(np.median(d_gt)),
        "precision": precision,
        "recall": recall,
        "fscore": float(fscore),
    }
    if (pred_normals is None) != (gt_normals is None):
        raise ValueError("pred_normals and gt_normals must be given together")
    if pred_normals is not None:
        n_pred = as_numpy(pred_normals, "pred_normals")
        n_gt = as_numpy(gt_normals, "gt_normals")
        check_same_shape(n_pred, pred, "pred_normals", "pred")
        check_same_shape(n_gt, gt, "gt_normals", "gt")
        n_pred, n_gt = _unit(n_pred, "pred_normals"), _unit(n_gt, "gt_normals")
        nc_pred = np.abs(np.sum(n_pred * n_gt[nn_in_gt], axis=1)).mean()
        nc_gt = np.abs(np.sum(n_gt * n_pred[nn_in_pred], axis=1)).mean()
        out["normal_consistency"] = float((nc_pred + nc_gt) / 2)
    return out


def sample_mesh_surface(mesh, n_samples: int, seed: int = 0) -> tuple:
    """Area-uniform surface samples of a trimesh mesh: (points [n, 3], face normals [n, 3])."""
    import trimesh  # local import: only the mesh functions need it

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"mesh: expected a trimesh.Trimesh with faces, got {type(mesh).__name__}")
    points, face_index = trimesh.sample.sample_surface(mesh, int(n_samples), seed=seed)
    return np.asarray(points, dtype=np.float64), np.asarray(mesh.face_normals[face_index], dtype=np.float64)


def mesh_metrics(
    pred_mesh, gt_mesh, n_samples: int = 100_000, threshold: float = 0.05, seed: int = 0
) -> dict:
    """`point_cloud_metrics` between area-uniform surface samples of two trimesh meshes.

    Each mesh gets `n_samples` points (trimesh.sample.sample_surface with its own seeded
    generator, so two copies of one mesh do not get identical samples) and its face normals, so
    normal_consistency is always returned. Deterministic for a given seed.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
    seed_pred, seed_gt = np.random.SeedSequence(seed).spawn(2)
    p, n_p = sample_mesh_surface(pred_mesh, n_samples, seed=np.random.default_rng(seed_pred))
    g, n_g = sample_mesh_surface(gt_mesh, n_samples, seed=np.random.default_rng(seed_gt))
    return point_cloud_metrics(p, g, threshold=threshold, pred_normals=n_p, gt_normals=n_g)


def normal_angle_metrics(pred, gt, mask=None, channel_axis=None) -> dict:
    """Angular error between surface normals (DSINE / Omnidata protocol), degrees and percent.

    pred, gt: [..., 3, H, W] (channels first, the repo's image layout) or [..., 3] (vectors).
    channel_axis picks the layout; None means -3 when ndim >= 3 and shape[-3] == 3, else -1.
    mask: the shape without the channel axis. Both are normalised first; pixels whose gt has
    zero length or is not finite are ignored (no normal there); a zero-length prediction scores 90
    degrees. Normals must be in the same frame (camera frame, OpenCV) and sign convention.

    theta = arccos(clip(n_pred . n_gt, -1, 1)) per valid pixel; returns mean, median, rmse
    (sqrt(mean theta^2)) in degrees and within_5 / within_7_5 / within_11_25 / within_22_5 /
    within_30 = percent of valid pixels with theta < 5 / 7.5 / 11.25 / 22.5 / 30 degrees (DSINE's
    table adds the 5 and 7.5 columns to Omnidata's three).
    """
    pred = as_numpy(pred, "pred")
    gt = as_numpy(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    if channel_axis is None:
        if pred.ndim >= 3 and pred.shape[-3] == 3:
            channel_axis = -3
        elif pred.ndim >= 1 and pred.shape[-1] == 3:
            channel_axis = -1
        else:
            raise ValueError(f"pred: expected [..., 3, H, W] or [..., 3], got shape {pred.shape}")
    if pred.shape[channel_axis] != 3:
        raise ValueError(f"pred: axis {channel_axis} must have size 3, got shape {pred.shape}")
    pred = np.moveaxis(pred, channel_axis, -1)  # [..., 3]
    gt = np.moveaxis(gt, channel_axis, -1)
    gt_len = np.linalg.norm(gt, axis=-1)
    valid = np.isfinite(gt_len) & (gt_len > 1e-6)
    if mask is not None:
        valid &= as_mask(mask, "mask", valid.shape)
    if not valid.any():
        raise ValueError("gt: no valid normal (all zero-length, non-finite or masked out)")
    p, g = pred[valid], gt[valid] / gt_len[valid][:, None]  # [K, 3]
    if not np.all(np.isfinite(p)):
        raise ValueError("pred: contains NaN or inf at valid pixels")
    p_len = np.linalg.norm(p, axis=-1, keepdims=True)
    p = np.where(p_len > 1e-12, p / np.maximum(p_len, 1e-12), 0.0)  # zero pred -> dot 0 -> 90 deg
    theta = np.degrees(np.arccos(np.clip(np.sum(p * g, axis=-1), -1.0, 1.0)))  # [K]
    return {
        "mean": float(theta.mean()),
        "median": float(np.median(theta)),
        "rmse": float(np.sqrt(np.mean(theta**2))),
        "within_5": float(100 * np.mean(theta < 5.0)),
        "within_7_5": float(100 * np.mean(theta < 7.5)),
        "within_11_25": float(100 * np.mean(theta < 11.25)),
        "within_22_5": float(100 * np.mean(theta < 22.5)),
        "within_30": float(100 * np.mean(theta < 30.0)),
    }


def estimate_normals(points, k: int = 30) -> np.ndarray:
    """Unit normals [N, 3] of a point cloud [N, 3] by PCA over each point's k nearest neighbours
    (Open3D's `estimate_normals` default, KNN 30): the eigenvector of the smallest eigenvalue of the
    neighbourhood covariance. The sign is arbitrary (orientation-free metrics use |n . n|)."""
    points = _points(points, "points")
    k = int(min(k, len(points)))
    if k < 3:
        raise ValueError(f"points: need at least 3 points for normals, got {len(points)}")
    _, idx = cKDTree(points).query(points, k=k)  # [N, k]
    nb = points[idx] - points[idx].mean(1, keepdims=True)  # [N, k, 3]
    cov = np.einsum("nki,nkj->nij", nb, nb)  # [N, 3, 3]
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    return vecs[:, :, 0]


def icp(src, dst, threshold: float, max_iterations: int = 30, init=None) -> np.ndarray:
    """Point-to-point ICP (Besl & McKay; Open3D's `registration_icp` with its defaults: 30 iterations,
    correspondences = nearest neighbours within `threshold`, rigid, no scale). Returns the 4x4
    transform that maps src [N, 3] onto dst [M, 3]; stops early when the inlier RMSE stops improving."""
    src, dst = _points(src, "src"), _points(dst, "dst")
    if not threshold > 0:
        raise ValueError(f"threshold: must be > 0, got {threshold}")
    T = np.eye(4) if init is None else np.array(init, dtype=np.float64)
    tree = cKDTree(dst)
    prev = np.inf
    for _ in range(int(max_iterations)):
        moved = src @ T[:3, :3].T + T[:3, 3]
        dist, idx = tree.query(moved, k=1, distance_upper_bound=threshold)
        inlier = np.isfinite(dist)
        if inlier.sum() < 3:
            break
        rmse = float(np.sqrt(np.mean(dist[inlier] ** 2)))
        if prev - rmse < 1e-6 * max(prev, 1e-12) and np.isfinite(prev):
            break
        prev = rmse
        from .pose import umeyama  # local: pose imports nothing from here

        _, R, t = umeyama(moved[inlier], dst[idx[inlier]], with_scale=False)
        step = np.eye(4)
        step[:3, :3], step[:3, 3] = R, t
        T = step @ T
    return T


def align_sim3_icp(pred, gt, icp_threshold: float = 0.1) -> tuple:
    """The alignment of the multi-view protocol: Umeyama Sim(3) of pred [N, 3] onto its corresponding gt
    [N, 3], then point-to-point ICP at `icp_threshold`. -> (aligned pred [N, 3], scale)."""
    from .pose import umeyama

    pred, gt = _points(pred, "pred"), _points(gt, "gt")
    check_same_shape(pred, gt, "pred", "gt")
    s, R, t = umeyama(pred, gt, with_scale=True)
    aligned = s * pred @ R.T + t
    T = icp(aligned, gt, icp_threshold)
    return aligned @ T[:3, :3].T + T[:3, 3], float(s)


def multiview_reconstruction_metrics(
    pred, gt, icp_threshold: float = 0.1, normal_k: int = 30, gt_all=None, return_aligned: bool = False
):
    """The multi-view point-map protocol of CUT3R / Pi3 / G2VLM (`mv_recon/eval.py`).

    pred, gt: corresponding points [N, 3] (pixel i of the predicted point maps against pixel i of
    the ground truth, on the ground truth's valid pixels). Steps: Umeyama Sim(3) (with scale) of
    pred onto gt on all correspondences; point-to-point ICP at `icp_threshold` (0.1 m; 100 for DTU
    in mm); then accuracy = NN distance pred -> gt, completeness = gt -> pred (means and medians),
    normal consistency from PCA normals (k = 30) on both clouds, NC = (|n_p . n_gt(NN)| mean over
    pred + the same over gt) / 2, and its median. Returns a dict of floats.

    gt_all [M, 3]: when the prediction covers only some of the ground truth's pixels (a sparse
    reconstruction), the alignment still uses the correspondences, but every metric is taken
    against all of the ground truth, so that missing parts count against completeness.

    return_aligned: also return the aligned prediction [N, 3], for further metrics on the same
    alignment without running Umeyama and ICP again: -> (metrics, aligned).
    """
    aligned, s = align_sim3_icp(pred, gt, icp_threshold)
    gt = _points(gt, "gt") if gt_all is None else _points(gt_all, "gt_all")
    d_pred, nn_gt = cKDTree(gt).query(aligned, k=1)
    d_gt, nn_pred = cKDTree(aligned).query(gt, k=1)
    n_pred, n_gt = estimate_normals(aligned, normal_k), estimate_normals(gt, normal_k)
    nc1 = np.abs(np.sum(n_pred * n_gt[nn_gt], 1))
    nc2 = np.abs(np.sum(n_gt * n_pred[nn_pred], 1))
    out = {
        "acc": float(d_pred.mean()),
        "acc_median": float(np.median(d_pred)),
        "comp": float(d_gt.mean()),
        "comp_median": float(np.median(d_gt)),
        "nc": float((nc1.mean() + nc2.mean()) / 2),
        "nc_median": float((np.median(nc1) + np.median(nc2)) / 2),
        "scale": float(s),
    }
    return (out, aligned) if return_aligned else out


def occupancy_iou(pred, gt, voxel: float = 0.1) -> float:
    """IoU of the sets of voxels (edge `voxel`, from the origin) occupied by pred [N, 3] and gt [M, 3]."""
    pred, gt = _points(pred, "pred"), _points(gt, "gt")
    if not voxel > 0:
        raise ValueError(f"voxel: must be > 0, got {voxel}")
    a = {tuple(v) for v in np.floor(pred / voxel).astype(np.int64)}
    b = {tuple(v) for v in np.floor(gt / voxel).astype(np.int64)}
    return len(a & b) / len(a | b)
