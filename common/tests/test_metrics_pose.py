import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.metrics import (
    absolute_trajectory_error,
    pose_auc,
    pose_metrics,
    relative_pose_error,
    relative_pose_errors,
    rotation_error_deg,
    rra,
    rta,
    translation_direction_error_deg,
    umeyama,
)


def rz(deg):
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


def pose(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def random_w2c(n, seed):
    rng = np.random.default_rng(seed)
    Rs = Rotation.random(n, random_state=seed).as_matrix()
    return np.stack([pose(R, rng.normal(size=3)) for R in Rs])


def test_rotation_error_geodesic():
    assert rotation_error_deg(rz(30), np.eye(3)) == pytest.approx(30.0)
    assert rotation_error_deg(rz(180), np.eye(3)) == pytest.approx(180.0)
    # tiny angles keep precision (arccos of the trace would return ~1e-6 +- 1e-6 here)
    assert rotation_error_deg(rz(1e-6), np.eye(3)) == pytest.approx(1e-6, rel=1e-6)
    R = Rotation.random(5, random_state=0).as_matrix()
    D = Rotation.from_rotvec(np.radians(25) * np.array([[0.6, 0.0, 0.8]] * 5)).as_matrix()
    np.testing.assert_allclose(rotation_error_deg(R, D @ R), 25.0)  # batched [5, 3, 3]


def test_translation_direction_error_sign_invariant():
    e = translation_direction_error_deg(
        np.array([[1.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]]),
        np.array([[2.0, 2, 0], [-3, 0, 0], [-1, 1, 0], [1, 0, 0]]),
    )
    # 45 deg; opposite direction -> 0; 135 -> min(135, 45); zero-length -> 90 (VGGT eps behaviour)
    np.testing.assert_allclose(e, [45.0, 0.0, 45.0, 90.0], atol=1e-9)


def test_relative_pose_errors_pairs_and_perturbation():
    gt = random_w2c(3, seed=1)
    pred = gt.copy()
    pred[2] = pose(rz(10), np.zeros(3)) @ gt[2]  # rotate camera 2 about its own centre
    rot, trans = relative_pose_errors(pred, torch.from_numpy(gt))
    # pairs (0, 1), (0, 2), (1, 2): T_i inv(T_2') = T_i inv(T_2) D^T changes only the rotation
    np.testing.assert_allclose(rot, [0.0, 10.0, 10.0], atol=1e-6)
    np.testing.assert_allclose(trans, [0.0, 0.0, 0.0], atol=1e-5)


def test_relative_pose_errors_invariant_to_similarity_and_3x4():
    gt = random_w2c(6, seed=2)
    S = pose(Rotation.random(random_state=3).as_matrix(), [1.0, -2.0, 0.5])
    S[:3, :3] *= 3.0  # world similarity x' = 3 Q x + u
    c2w = np.linalg.inv(gt)
    c2w_pred = S @ c2w
    c2w_pred[:, :3, :3] /= 3.0  # keep rotations orthonormal: only centres scale
    pred = np.linalg.inv(c2w_pred)
    rot, trans = relative_pose_errors(pred[:, :3, :], gt)
    assert rot.shape == (15,) and trans.shape == (15,)
    np.testing.assert_allclose(rot, 0.0, atol=1e-5)
    np.testing.assert_allclose(trans, 0.0, atol=1e-5)
    m = pose_metrics(pred, gt)
    for key in ("rra_15", "rta_15", "rra_30", "rta_30", "auc_30"):
        assert m[key] == pytest.approx(100.0)
    assert m["ate"] == pytest.approx(0.0, abs=1e-9)
    assert m["rpe_trans"] == pytest.approx(0.0, abs=1e-9)
    assert m["rpe_rot"] == pytest.approx(0.0, abs=1e-5)


def test_rra_rta_fractions():
    errs = np.array([1.0, 5.0, 14.9, 15.0, 40.0])
    assert rra(errs, 15) == pytest.approx(3 / 5)  # strict: 15.0 is not < 15
    assert rta(errs, 30) == pytest.approx(4 / 5)


def test_pose_auc_handcrafted():
    rot = np.array([0.5, 0.0, 10.0, 30.0, 1.0])
    trans = np.array([0.0, 1.5, 2.0, 0.0, 45.0])
    # e_max = (0.5, 1.5, 10, 30, 45). acc(k) = fraction < k: k=1 -> 1/5; k=2..10 -> 2/5 (9 values);
    # k=11..29 -> 3/5 (19 values); k=30 -> 4/5 (np.histogram's last bin [29, 30] is closed).
    expected = (1 * 1 / 5 + 9 * 2 / 5 + 19 * 3 / 5 + 1 * 4 / 5) / 30
    assert pose_auc(rot, trans, 30) == pytest.approx(expected)
    assert pose_auc(np.zeros(4), np.zeros(4), 30) == pytest.approx(1.0)
    # max_threshold 3: e_max (0.5, 1.5, 10, 30, 45) -> acc(1..3) = 1/5, 2/5, 2/5
    assert pose_auc(rot, trans, 3) == pytest.approx((1 / 5 + 2 / 5 + 2 / 5) / 3)


def test_umeyama_recovers_similarity_and_rejects_reflection():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(20, 3))
    R = Rotation.random(random_state=5).as_matrix()
    dst = 2.5 * src @ R.T + np.array([1.0, 2.0, 3.0])
    s, R_est, t = umeyama(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R_est, R, atol=1e-10)
    np.testing.assert_allclose(t, [1.0, 2.0, 3.0], atol=1e-10)
    s, R_est, t = umeyama(src, src * np.array([1.0, 1.0, -1.0]))  # a mirror image
    assert np.linalg.det(R_est) == pytest.approx(1.0)
    s1, _, _ = umeyama(src, dst, with_scale=False)
    assert s1 == 1.0


def test_ate_hand_cases():
    gt = np.array([[-1.0, 0, 0], [1.0, 0, 0], [0.0, 1.0, 0]])
    pred = 2 * gt
    assert absolute_trajectory_error(pred, gt) == pytest.approx(0.0, abs=1e-12)
    # rigid only: R = I and centroids matched, residual_i = gt_i - centroid; centred gt is
    # (-1, -1/3), (1, -1/3), (0, 2/3) -> squared norms 10/9, 10/9, 4/9 -> RMSE = sqrt(8/9)
    assert absolute_trajectory_error(pred, gt, with_scale=False) == pytest.approx(math.sqrt(8 / 9))
    gt2 = np.array([[-1.0, 0, 0], [1.0, 0, 0]])
    assert absolute_trajectory_error(2 * gt2, gt2, with_scale=False) == pytest.approx(1.0)
    # a similarity-transformed trajectory has ATE 0
    rng = np.random.default_rng(6)
    traj = np.cumsum(rng.normal(size=(30, 3)), axis=0)
    R = Rotation.random(random_state=7).as_matrix()
    assert absolute_trajectory_error(0.3 * traj @ R.T + 5.0, traj) == pytest.approx(0.0, abs=1e-9)


def test_rpe_hand_case():
    # c2w: identity rotations, centres at x = 0, 1, 2, 3; prediction rotates frame 2 by 10 deg
    c2w_gt = np.stack([pose(np.eye(3), [float(i), 0, 0]) for i in range(4)])
    c2w_pred = c2w_gt.copy()
    c2w_pred[2, :3, :3] = rz(10)
    rpe_trans, rpe_rot = relative_pose_error(np.linalg.inv(c2w_pred), np.linalg.inv(c2w_gt))
    # E_01 = I; E_12 = [Rz(10), 0]; E_23 = [Rz(-10), Rz(-10) e_x - e_x], |.| = 2 sin(5 deg)
    assert rpe_rot == pytest.approx(math.sqrt((0 + 100 + 100) / 3))
    assert rpe_trans == pytest.approx(math.sqrt((2 * math.sin(math.radians(5))) ** 2 / 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="w2c_pred"):
        relative_pose_errors(np.eye(4)[None], np.eye(4)[None])
    with pytest.raises(ValueError, match="w2c_pred"):
        pose_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)))
    bad = random_w2c(3, 0)
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pose_metrics(bad, random_w2c(3, 0))
    with pytest.raises(ValueError, match="max_threshold"):
        pose_auc(np.zeros(2), np.zeros(2), 2.5)
