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
