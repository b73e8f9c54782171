import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from common.metrics import (
    acc_at_iou,
    box_corners,
    box_iou_3d_axis_aligned,
    box_iou_3d_oriented,
    end_point_error,
    epe_stats,
    multi3drefer_f1,
    pck,
)


def rz(deg):
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


def test_box_corners():
    c = box_corners([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert c.shape == (8, 3)
    np.testing.assert_allclose(c[0], [0.0, 0.0, 0.0])  # (-, -, -)
    np.testing.assert_allclose(c[7], [2.0, 4.0, 6.0])  # (+, +, +)
    np.testing.assert_allclose(c[1], [0.0, 0.0, 6.0])  # (-, -, +)
    r = box_corners(np.zeros(3), [2.0, 0.0, 0.0], rz(90))  # the x extent turns to y
    np.testing.assert_allclose(np.abs(r[:, :2]).max(axis=0), [0.0, 1.0], atol=1e-12)


def test_axis_aligned_iou_hand_and_batched():
    # overlap 1 x 2 x 2 = 4, union 8 + 8 - 4 = 12
    assert box_iou_3d_axis_aligned([0, 0, 0], [2, 2, 2], [1, 0, 0], [2, 2, 2]) == pytest.approx(1 / 3)
    iou = box_iou_3d_axis_aligned(
        np.zeros((3, 3)), np.ones((3, 3)), np.array([[0.0, 0, 0], [0.5, 0, 0], [5, 0, 0]]), np.ones(3)
    )
    # half-overlap of unit cubes: 0.5 / 1.5
    np.testing.assert_allclose(iou, [1.0, 1 / 3, 0.0])


def test_oriented_equals_axis_aligned_for_identity():
    rng = np.random.default_rng(0)
    ca, cb = rng.uniform(-1, 1, (20, 3)), rng.uniform(-1, 1, (20, 3))
    sa, sb = rng.uniform(0.5, 2, (20, 3)), rng.uniform(0.5, 2, (20, 3))
    expected = box_iou_3d_axis_aligned(ca, sa, cb, sb)
    assert (expected > 0).sum() > 10 and (expected == 0).sum() > 0  # both regimes exercised
    got = box_iou_3d_oriented(ca, sa, np.broadcast_to(np.eye(3), (20, 3, 3)), cb, sb, None)
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_oriented_hand_cases():
    rot = Rotation.from_euler("xyz", [45, 30, 10], degrees=True).as_matrix()
    assert box_iou_3d_oriented([0, 0, 0], [1, 1, 1], rot, [0, 0, 0], [1, 1, 1], rot) == pytest.approx(1.0)
    assert box_iou_3d_oriented([0, 0, 0], [1, 1, 1], rz(45), [0, 0, 0], [1, 1, 1], rz(45)) == pytest.approx(
        1.0
    )
    # unit cube vs itself turned 45 deg about z: a regular octagon prism of area 2 (sqrt 2 - 1)
    # -> IoU = 2 (sqrt2 - 1) / (2 - 2 (sqrt2 - 1)) = 1 / sqrt 2
    assert box_iou_3d_oriented([0, 0, 0], [1, 1, 1], None, [0, 0, 0], [1, 1, 1], rz(45)) == pytest.approx(
        1 / math.sqrt(2)
    )
    assert box_iou_3d_oriented([0, 0, 0], [1, 1, 1], rz(30), [3, 0, 0], [1, 1, 1], rz(10)) == 0.0  # disjoint
    assert (
        box_iou_3d_oriented([0, 0, 0], [1, 1, 1], None, [1, 0, 0], [1, 1, 1], None) == 0.0
    )  # touching faces
    assert box_iou_3d_oriented([0, 0, 0], [1, 1, 0], None, [0, 0, 0], [1, 1, 1], None) == 0.0  # flat box


def test_oriented_vs_monte_carlo():
    ca, sa, Ra = (
        np.array([0.0, 0.0, 0.0]),
        np.array([2.0, 1.0, 1.5]),
        Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix(),
    )
    cb, sb, Rb = (
        np.array([0.4, 0.3, -0.2]),
        np.array([1.5, 1.5, 1.0]),
        Rotation.from_euler("xyz", [-10, 15, 5], degrees=True).as_matrix(),
    )
    rng = np.random.default_rng(1)
    n = 400_000
    pts = ca + (rng.uniform(-0.5, 0.5, (n, 3)) * sa) @ Ra.T  # uniform in box a
    local_b = (pts - cb) @ Rb  # coordinates in box b's frame
    inside = np.all(np.abs(local_b) <= sb / 2, axis=1)
    inter = inside.mean() * np.prod(sa)
    mc_iou = inter / (np.prod(sa) + np.prod(sb) - inter)
    got = box_iou_3d_oriented(ca, sa, torch.from_numpy(Ra), cb, sb, Rb)
    assert 0.2 < got < 0.8
    assert got == pytest.approx(mc_iou, abs=0.005)  # MC std ~ 0.001


def test_acc_at_iou():
    acc = acc_at_iou([0.1, 0.3, 0.5, 0.7])
    assert acc == {"acc@0.25": pytest.approx(0.75), "acc@0.5": pytest.approx(0.5)}  # >= threshold


def test_multi3drefer_f1():
    box = (np.zeros(3), np.ones(3))
    far = (np.array([5.0, 0, 0]), np.ones(3))
    assert multi3drefer_f1([], [], 0.5) == 1.0
    assert multi3drefer_f1([box], [], 0.5) == 0.0
    assert multi3drefer_f1([], [box], 0.5) == 0.0
    # 2 predictions, 1 gt: one exact match -> TP 1, F1 = 2 * 1 / (2 + 1)
    assert multi3drefer_f1([box, far], [box], 0.5) == pytest.approx(2 / 3)
    assert multi3drefer_f1(np.array([[0, 0, 0, 1, 1, 1.0]]), np.array([[0.5, 0, 0, 1, 1, 1.0]]), 0.25) == 1.0
    assert multi3drefer_f1(np.array([[0, 0, 0, 1, 1, 1.0]]), np.array([[0.5, 0, 0, 1, 1, 1.0]]), 0.5) == 0.0
    # Hungarian, not greedy: IoU [[0.6, 0.9], [0.0, 0.55]]; greedy takes 0.9 then 0.0 (TP 1),
    # the max-IoU assignment is the diagonal 0.6 + 0.55 (TP 2 at 0.5) -> F1 = 1
    table = {("p0", "g0"): 0.6, ("p0", "g1"): 0.9, ("p1", "g0"): 0.0, ("p1", "g1"): 0.55}
    f1 = multi3drefer_f1(
        [("p0", 0), ("p1", 0)], [("g0", 0), ("g1", 0)], 0.5, iou_fn=lambda p, g: table[(p[0], g[0])]
    )
    assert f1 == 1.0


def test_correspondence_metrics():
    pred = np.array([[0.0, 0.0], [3.0, 4.0]])
    gt = np.zeros((2, 2))
    np.testing.assert_allclose(end_point_error(pred, gt), [0.0, 5.0])
    assert epe_stats(pred, gt) == {"mean": 2.5, "median": 2.5}
    assert pck(pred, gt, thresholds=(1, 5, 6)) == {"pck@1": 0.5, "pck@5": 0.5, "pck@6": 1.0}  # strict <
    assert epe_stats(pred, gt, valid=np.array([False, True]))["mean"] == 5.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="size_a"):
        box_iou_3d_axis_aligned([0, 0, 0], [-1, 1, 1], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="center_a"):
        box_iou_3d_oriented([0, 0], [1, 1, 1], None, [0, 0, 0], [1, 1, 1], None)
    with pytest.raises(ValueError, match="R_b"):
        box_iou_3d_oriented([0, 0, 0], [1, 1, 1], None, [0, 0, 0], [1, 1, 1], np.eye(2))
    with pytest.raises(ValueError, match="pred_boxes"):
        multi3drefer_f1(np.zeros((2, 5)), [], 0.5)
    with pytest.raises(ValueError, match="pred"):
        end_point_error(np.zeros((2, 3)), np.zeros((2, 3)))
