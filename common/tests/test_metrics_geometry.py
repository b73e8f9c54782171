import math

import numpy as np
import pytest
import torch
import trimesh

from common.metrics import mesh_metrics, normal_angle_metrics, point_cloud_metrics


def test_point_cloud_hand_computed():
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    pred = np.array([[0.0, 0, 0.01], [1.0, 0, 0.2], [5.0, 0, 0]])
    m = point_cloud_metrics(pred, gt, threshold=0.05)
    # pred -> gt distances: 0.01, 0.2, 4 ; gt -> pred: 0.01, 0.2
    assert m["accuracy"] == pytest.approx((0.01 + 0.2 + 4.0) / 3)
    assert m["completeness"] == pytest.approx((0.01 + 0.2) / 2)
    assert m["chamfer"] == pytest.approx(((0.01 + 0.2 + 4.0) / 3 + 0.105) / 2)
    assert m["accuracy_median"] == pytest.approx(0.2)
    assert m["completeness_median"] == pytest.approx(0.105)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 2)
    assert m["fscore"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert "normal_consistency" not in m


def test_threshold_is_strict_and_fscore_zero():
    gt = np.array([[0.0, 0, 0]])
    pred = np.array([[0.5, 0, 0]])
    m = point_cloud_metrics(pred, gt, threshold=0.5)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["fscore"] == 0.0


def test_normal_consistency():
    gt = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    pred = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    gt_n = np.array([[0.0, 0, 1], [0.0, 0, 1]])
    # pred normal 0 is flipped (|cos| = 1), pred normal 1 is tilted by 60 degrees (cos = 0.5);
    # un-normalised on purpose
    pred_n = np.array([[0.0, 0, -2], [math.sin(math.pi / 3), 0, 0.5]])
    m = point_cloud_metrics(torch.tensor(pred), gt, pred_normals=pred_n, gt_normals=gt_n)
    assert m["normal_consistency"] == pytest.approx((1 + 0.5) / 2)


def test_mesh_with_itself_and_concentric_spheres():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    same = mesh_metrics(sphere, sphere, n_samples=20_000, seed=0)
    # Two independent samplings of the same surface: the NN distance is set by the sample
    # spacing, about 0.5 * sqrt(area / n) = 0.5 * sqrt(4 pi / 20000) = 0.0125.
    assert same["chamfer"] < 0.015
    assert same["fscore"] == pytest.approx(1.0)
    assert same["normal_consistency"] > 0.99
    bigger = trimesh.creation.icosphere(subdivisions=4, radius=1.1)
    m = mesh_metrics(sphere, bigger, n_samples=20_000, threshold=0.05, seed=0)
    assert m["accuracy"] == pytest.approx(0.1, abs=0.005)
    assert m["completeness"] == pytest.approx(0.1, abs=0.005)
    assert m["chamfer"] == pytest.approx(0.1, abs=0.005)
    assert m["fscore"] == 0.0
    # deterministic for a seed
    assert mesh_metrics(sphere, bigger, n_samples=2_000, seed=3) == mesh_metrics(
        sphere, bigger, n_samples=2_000, seed=3
    )


def test_normal_angles_channels_first_and_vectors():
    gt = np.zeros((3, 1, 4))  # [3, H=1, W=4]
    gt[2] = 1.0  # all gt normals +z
    angles = np.radians([0.0, 20.0, 45.0, 90.0])
    pred = np.stack([np.sin(angles), np.zeros(4), np.cos(angles)])[:, None, :] * 3.0  # not unit
    m = normal_angle_metrics(pred, gt)
    assert m["mean"] == pytest.approx((0 + 20 + 45 + 90) / 4)
    assert m["median"] == pytest.approx((20 + 45) / 2)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 400 + 2025 + 8100) / 4))
    assert m["within_11_25"] == pytest.approx(25.0)
    assert m["within_22_5"] == pytest.approx(50.0)
    assert m["within_30"] == pytest.approx(50.0)
    vec = normal_angle_metrics(np.moveaxis(pred, 0, -1).reshape(-1, 3), np.moveaxis(gt, 0, -1).reshape(-1, 3))
    assert vec == pytest.approx(m)


def test_normal_angles_ignore_zero_gt_and_mask():
    gt = np.array([[0.0, 0, 1], [0, 0, 0], [0, 0, 1]])
    pred = np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]])
    m = normal_angle_metrics(pred, gt)  # the zero gt is ignored
    assert m["mean"] == pytest.approx(45.0)
    m = normal_angle_metrics(pred, gt, mask=np.array([True, True, False]))
    assert m["mean"] == pytest.approx(0.0)
    zero_pred = normal_angle_metrics(np.zeros((1, 3)), np.array([[0.0, 0, 1]]))
    assert zero_pred["mean"] == pytest.approx(90.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred"):
        point_cloud_metrics(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="gt: empty"):
        point_cloud_metrics(np.zeros((4, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="together"):
        point_cloud_metrics(np.zeros((1, 3)), np.zeros((1, 3)), pred_normals=np.ones((1, 3)))
    with pytest.raises(ValueError, match="no valid normal"):
        normal_angle_metrics(np.ones((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mesh"):
        mesh_metrics("not a mesh", trimesh.creation.box(), n_samples=10)


def _cube_surface(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.uniform(-1, 1, (n, 3))
    axis = rng.integers(0, 3, n)
    g[np.arange(n), axis] = np.sign(g[np.arange(n), axis])
    return g


def _rotation(deg_xyz):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", deg_xyz, degrees=True).as_matrix()


def test_estimate_normals_of_a_plane():
    from common.metrics import estimate_normals

    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(-1, 1, (500, 2)), np.zeros(500)]
    n = estimate_normals(pts)
    assert np.allclose(np.abs(n[:, 2]), 1.0, atol=1e-6)


def test_icp_recovers_a_rigid_transform():
    from common.metrics import icp

    g = _cube_surface()
    R = _rotation([0, 0, 4])
    src = g @ R.T + [0.02, -0.01, 0.03]
    T = icp(src, g, threshold=0.2)
    assert np.allclose(src @ T[:3, :3].T + T[:3, 3], g, atol=1e-3)


def test_multiview_protocol_undoes_a_similarity_and_refines_with_icp():
    from common.metrics import multiview_reconstruction_metrics

    g = _cube_surface()
    R, s, t = _rotation([10, -5, 20]), 1.7, np.array([0.3, -0.2, 0.5])
    pred = (g - t) @ R / s  # s R pred + t = g
    exact = multiview_reconstruction_metrics(pred, g)
    assert (
        exact["acc"] < 1e-9 and exact["comp"] < 1e-9 and exact["nc"] > 0.999 and np.isclose(exact["scale"], s)
    )
    # Correspondences of a shifted surface: Umeyama alone leaves an offset that ICP removes.
    rng = np.random.default_rng(2)
    noisy = pred + rng.normal(0, 0.004, pred.shape)
    m = multiview_reconstruction_metrics(noisy, g)
    assert m["acc"] < 0.02 and m["comp"] < 0.02 and m["nc"] > 0.95


def test_occupancy_iou_hand_case():
    from common.metrics import occupancy_iou

    a = np.array([[0.05, 0.05, 0.05], [0.15, 0.05, 0.05]])  # voxels (0,0,0), (1,0,0)
    b = np.array([[0.06, 0.02, 0.01], [0.05, 0.25, 0.05]])  # voxels (0,0,0), (0,2,0)
    assert occupancy_iou(a, b, voxel=0.1) == 1 / 3 and occupancy_iou(a, a) == 1.0


def test_multiview_metrics_against_all_of_the_ground_truth():
    from common.metrics import multiview_reconstruction_metrics

    rng = np.random.default_rng(1)
    gt = np.c_[rng.uniform(-1, 1, (2000, 2)), np.zeros(2000)]
    half = gt[:, 0] < 0  # a prediction that covers only half of the surface, exactly
    partial = multiview_reconstruction_metrics(gt[half], gt[half])
    against_all = multiview_reconstruction_metrics(gt[half], gt[half], gt_all=gt)
    assert partial["comp"] < 1e-9 and against_all["comp"] > 0.2  # the missing half counts
    assert against_all["acc"] < 1e-9
