"""Cross-view reprojection, the global loss, the verifier and its loss."""

import numpy as np
import pytest
import torch

from common.datasets import SceneDataset
from ide3d.consistency import cross_view_loss, global_loss, neighbour_frames, reproject_depth
from ide3d.verifier import Verifier, geometric_loss, gradient_loss


@pytest.fixture(scope="module")
def scene(data_root):
    return SceneDataset(data_root, "train", load=("depth",))[0]


def test_reprojected_ground_truth_matches_the_other_view(scene):
    """Ground-truth depth of view u carried into view t equals view t's ground truth on the overlap."""
    for t, u in ((0, 1), (2, 1), (1, 3)):
        depth, overlap = reproject_depth(
            scene.depth[u],
            scene.K[u],
            scene.w2c[u],
            scene.depth[t],
            scene.K[t],
            scene.w2c[t],
            gt_src=scene.depth[u],
        )
        assert overlap.float().mean() > 0.2, (t, u)
        rel = ((depth - scene.depth[t]).abs() / scene.depth[t].clamp_min(1e-6))[overlap]
        assert rel.median() < 1e-3 and (rel < 0.02).float().mean() > 0.85, (t, u)
        assert not overlap[scene.depth[t] == 0].any()  # no ground truth, no overlap


def test_cross_view_loss_is_zero_for_consistent_depth_and_grows_otherwise(scene):
    neighbours = neighbour_frames(scene.num_views, 2, np.random.default_rng(0))
    consistent = cross_view_loss(scene.depth, scene.depth, scene.K, scene.w2c, neighbours)
    scaled = scene.depth.clone()
    scaled[1] *= 1.3  # one view's depth inconsistent with the others
    assert consistent < 0.02 * scene.depth[scene.depth > 0].mean()
    assert cross_view_loss(scaled, scene.depth, scene.K, scene.w2c, neighbours) > 5 * consistent + 1e-3


def test_neighbours_stay_within_range():
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = neighbour_frames(6, 2, rng)
        assert all(t != s and abs(t - s) <= 2 and 0 <= s < 6 for t, s in enumerate(n))


def test_global_loss_zero_for_identical_features_and_pooled_teacher():
    student = torch.randn(3, 2, 2, 8)
    assert global_loss(student, student).abs() < 1e-6
    assert torch.isclose(global_loss(student, -student), torch.tensor(2.0))
    teacher = student.repeat_interleave(2, 1).repeat_interleave(2, 2)  # [3, 4, 4, 8]: average-pools back
    assert global_loss(student, teacher).abs() < 1e-6
    assert global_loss(student, 3.0 * student).abs() < 1e-6  # scale-free (1 - cos)


def test_verifier_shapes_and_loss_terms():
    verifier = Verifier(
        vision_hidden=16, dim=16, features=8, channels=(4, 4, 8, 8), layers=(1, 2, 3, 4), head_hidden=4
    )
    hidden = tuple(torch.randn(2, 16, 16) for _ in range(5))  # embeddings + 4 layers, 4 x 4 patches
    depth, conf = verifier(hidden, grid=4, out_size=32)
    assert depth.shape == conf.shape == (2, 32, 32) and (depth > 0).all() and (conf > 1).all()
    gt = torch.rand(2, 32, 32) * 3 + 0.5
    gt[0, :4] = 0  # invalid pixels are left out
    loss = geometric_loss(depth, conf, gt)
    loss.backward()
    assert torch.isfinite(loss) and verifier.projector[0].weight.grad.abs().sum() > 0
    assert (
        gradient_loss(gt, gt) == 0 and gradient_loss(gt + 1.0, gt) < 1e-6
    )  # a constant offset has no gradient
    # A perfect prediction with confidence 1 leaves only the gradient term (0) and -alpha log 1 = 0.
    assert geometric_loss(gt, torch.ones_like(gt), gt).abs() < 1e-6
