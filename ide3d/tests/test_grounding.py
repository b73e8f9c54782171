"""Grounding pieces against hand-worked cases: the 3D encoding, patch membership, InfoNCE, set rule."""

import math

import numpy as np
import torch

from ide3d.grounding import (
    infonce_loss,
    patch_membership,
    pool_object_features,
    predict_multi,
    predict_single,
    sincos_3d,
    token_world_points,
)


def test_sincos_3d_values():
    lo, hi = [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]
    pe = sincos_3d(torch.tensor([[0.0, 0.5, -0.2]]), dim=14, lo=lo, hi=hi, voxel=0.1)[
        0
    ]  # 4 features per axis + 2 pad
    v = [10.0, 15.0, 8.0]  # round((p - lo) / voxel)
    for axis in range(3):
        f = pe[axis * 4 : (axis + 1) * 4]
        assert math.isclose(f[0], math.sin(v[axis]), abs_tol=1e-6)  # i = 0: freq 1
        assert math.isclose(f[1], math.cos(v[axis]), abs_tol=1e-6)  # i = 1: freq 1
        assert math.isclose(f[2], math.sin(v[axis] / 10000**0.5), abs_tol=1e-6)  # i = 2: 10000^(2/4)
    assert torch.equal(pe[12:], torch.zeros(2))
    # Clamped outside [lo, hi]; voxels of 0.1 m: points 4 cm apart in one voxel share the encoding.
    assert torch.equal(
        sincos_3d(torch.tensor([5.0, 0, 0]), 12, lo, hi, 0.1),
        sincos_3d(torch.tensor([1.0, 0, 0]), 12, lo, hi, 0.1),
    )
    assert torch.equal(
        sincos_3d(torch.tensor([0.01, 0, 0]), 12, lo, hi, 0.1),
        sincos_3d(torch.tensor([0.04, 0, 0]), 12, lo, hi, 0.1),
    )


def test_patch_membership_half_rule():
    # One frame 4 x 4 pixels, patch 2: world x = column, y = row, z = 0.
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    points = torch.stack([cols, rows, torch.zeros_like(cols)], -1)[None]  # [1, 4, 4, 3]
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    # Box over columns 0..1 and rows 0..0 (2 of the 4 pixels of patch (0, 0)): exactly half.
    box = torch.tensor([[0.5, 0.0, 0.0, 1.0, 0.0, 1.0]])
    m = patch_membership(points, valid, box, patch=2)
    assert m.shape == (1, 1, 2, 2) and m[0, 0].tolist() == [[True, False], [False, False]]
    assert not patch_membership(points, valid, box, patch=2, min_fraction=0.6).any()
    valid[0, 0, 0] = False  # invalid depth does not count as inside
    assert not patch_membership(points, valid, box, patch=2).any()


def test_pooling_and_token_points():
    feats = torch.arange(2 * 2 * 2 * 3, dtype=torch.float32).reshape(2, 2, 2, 3)  # [F, g, g, C]
    member = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
    member[0, 0, 0, 1] = member[0, 1, 1, 0] = True
    out = pool_object_features(feats, member)
    assert torch.equal(out[0], (feats[0, 0, 1] + feats[1, 1, 0]) / 2) and torch.equal(out[1], torch.zeros(3))
    points = torch.ones(1, 4, 4, 3)
    points[0, :2, :2] = 3.0
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0] = False
    xyz, has = token_world_points(points, valid, patch=1, pooled=2)
    assert torch.allclose(xyz[0, 0, 0], torch.full((3,), 3.0)) and torch.allclose(xyz[0, 1, 1], torch.ones(3))
    assert has.all()


def test_infonce_hand_case():
    scores = torch.tensor([0.5, -0.2, 0.1, 0.3])  # three candidates and "no target" last
    t = 0.07
    logits = scores / t
    # One target: cross-entropy.
    expected = -torch.log_softmax(logits, 0)[0]
    assert torch.isclose(infonce_loss(scores, [0], t), expected)
    # Two targets: their summed probability in the numerator.
    p = torch.softmax(logits, 0)
    assert torch.isclose(infonce_loss(scores, [0, 2], t), -torch.log(p[0] + p[2]))
    # No target: the learned "no target" entry is the positive.
    assert torch.isclose(infonce_loss(scores, [], t), -torch.log(p[3]))
    assert infonce_loss(torch.tensor([5.0, 0.0, 0.0, 0.0]), [0], t) < 1e-6


def test_single_and_multi_prediction_rules():
    assert predict_single(torch.tensor([0.1, 0.4, 0.2, 0.9])) == 1  # "no target" never answers ScanRefer
    assert predict_multi(torch.tensor([0.1, 0.4, 0.2, 0.9])) == []  # ... but wins Multi3DRefer
    # softmax(s / 0.07) gives 0.66 and 0.34 to the top two: 0.4 is reached after one, 0.7 after two.
    scores = torch.tensor([0.30, 0.2527, -1.0, -1.0])
    assert predict_multi(scores, threshold=0.4) == [0]
    assert predict_multi(scores, threshold=0.7) == [0, 1]
    assert predict_multi(torch.tensor([0.3, 0.3, 0.3, -1.0]), threshold=0.9) == [0, 1, 2]
    assert np.isclose(torch.softmax(scores / 0.07, 0)[0].item(), 0.663, atol=0.01)
