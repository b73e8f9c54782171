"""The project's trajectory errors agree with `evo` (a peer nobody here wrote) on the same poses."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from common.metrics import absolute_trajectory_error, relative_pose_error

evo_core = pytest.importorskip("evo.core", reason="evo is a dependency of the benchmark (pyproject.toml)")


def _trajectory(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=(n, 3))).as_matrix()
    c2w[:, :3, 3] = np.cumsum(rng.normal(size=(n, 3)), 0)
    return c2w


def test_ate_and_rpe_match_evo():
    from evo.core import metrics, sync  # noqa: F401  (sync: evo's own import order)
    from evo.core.trajectory import PosePath3D

    gt = _trajectory(0)
    noise = _trajectory(1)
    pred = gt.copy()
    pred[:, :3, 3] = 0.7 * gt[:, :3, 3] + 0.05 * noise[:, :3, 3] + np.array([1.0, -2.0, 0.5])
    pred[:, :3, :3] = noise[:, :3, :3] @ gt[:, :3, :3]  # orientations perturbed too

    ref, est = PosePath3D(poses_se3=list(gt)), PosePath3D(poses_se3=list(pred))
    est.align(ref, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    ours = absolute_trajectory_error(pred[:, :3, 3], gt[:, :3, 3], with_scale=True)
    assert ours == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-6)

    rpe_t, rpe_r = relative_pose_error(np.linalg.inv(pred), np.linalg.inv(gt))
    for relation, value in (
        (metrics.PoseRelation.translation_part, rpe_t),
        (metrics.PoseRelation.rotation_angle_deg, rpe_r),
    ):
        rpe = metrics.RPE(relation, delta=1, delta_unit=metrics.Unit.frames, all_pairs=False)
        rpe.process_data((ref, est))
        assert value == pytest.approx(rpe.get_statistic(metrics.StatisticsType.rmse), rel=1e-5)


def test_multiview_reconstruction_protocol_matches_open3d():
    """Pi3 / CUT3R `mv_recon/eval.py` run with Open3D (ICP point-to-point at 0.1, `estimate_normals`
    with its KNN-30 default, nearest neighbours) against `common.metrics` on the same aligned points."""
    o3d = pytest.importorskip("open3d", reason="open3d is the reconstruction peer (pyproject.toml)")
    from scipy.spatial import cKDTree

    from common.metrics import multiview_reconstruction_metrics, umeyama

    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1, 1, (2, 3000))
    gt = np.c_[u, v, 0.3 * np.sin(2 * u) + 0.2 * v**2]  # a curved sheet
    R = Rotation.from_rotvec([0.1, -0.2, 0.15]).as_matrix()
    pred = (0.8 * gt @ R.T + [0.3, -0.1, 0.2]) + rng.normal(scale=0.01, size=gt.shape)
    ours = multiview_reconstruction_metrics(pred, gt, icp_threshold=0.1)

    s, Ru, t = umeyama(pred, gt, with_scale=True)
    src, dst = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    src.points = o3d.utility.Vector3dVector(s * pred @ Ru.T + t)
    dst.points = o3d.utility.Vector3dVector(gt)
    reg = o3d.pipelines.registration.registration_icp(
        src, dst, 0.1, np.eye(4), o3d.pipelines.registration.TransformationEstimationPointToPoint()
    )
    src.transform(reg.transformation)
    src.estimate_normals()
    dst.estimate_normals()
    p, g = np.asarray(src.points), np.asarray(dst.points)
    n_p, n_g = np.asarray(src.normals), np.asarray(dst.normals)
    d_acc, i_acc = cKDTree(g).query(p)
    d_comp, i_comp = cKDTree(p).query(g)
    nc = (np.abs(np.sum(n_g[i_acc] * n_p, 1)).mean() + np.abs(np.sum(n_p[i_comp] * n_g, 1)).mean()) / 2
    assert ours["acc"] == pytest.approx(d_acc.mean(), rel=1e-3)
    assert ours["comp"] == pytest.approx(d_comp.mean(), rel=1e-3)
    assert ours["nc"] == pytest.approx(nc, abs=1e-3)
