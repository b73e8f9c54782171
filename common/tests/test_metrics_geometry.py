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
