"""The mesh evaluation protocol: ray-cast depth of a mesh, and the observed-surface culling."""

import numpy as np
import torch
import trimesh

from common.cameras import look_at, make_K, pixel_rays
from common.metrics import point_cloud_metrics
from ivgt.analytic import ray_sphere
from ivgt.evaluate import INPUT_VIEWS, observed_surface
from ivgt.raycast import mesh_depth


def _cameras(n, H=24, W=32):
    K = make_K(30.0, 30.0, W / 2, H / 2).expand(n, 3, 3)
    eyes = [torch.tensor([0.3 * i - 0.4, -1.6, 0.4]) for i in range(n)]
    w2c = torch.stack([look_at(e, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0])) for e in eyes])
    return K, w2c


def test_mesh_depth_matches_ray_casting_a_sphere():
    H, W = 24, 32
    K, w2c = _cameras(2, H, W)
    sphere = trimesh.creation.icosphere(subdivisions=6, radius=0.5)
    depth = mesh_depth(sphere.vertices, sphere.faces, K, w2c, H, W)  # [2, H, W]
    origins, dirs = pixel_rays(K, w2c, H, W)  # [2, H, W, 3]
    t, _ = ray_sphere(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    z = (t * (dirs.reshape(-1, 3) * w2c[:, 2, :3].repeat_interleave(H * W, 0)).sum(-1)).reshape(2, H, W)
    hit = torch.isfinite(z)
    assert hit.sum() > 100 and (~hit).sum() > 100
    assert ((depth > 0) == hit).float().mean() > 0.98  # silhouette pixels may differ (tessellation)
    both = hit & (depth > 0)
    assert (depth[both] - z[both]).abs().max() < 0.01  # a 6-times subdivided icosphere is within ~1 mm


def test_observed_surface_drops_hidden_geometry_and_keeps_floaters():
    n = len(INPUT_VIEWS)
    H, W = 24, 32
    K, w2c = _cameras(n, H, W)
    slab = trimesh.creation.box(extents=(3.0, 0.1, 3.0))  # a slab at y = 0 facing the cameras (at y < 0)
    step = trimesh.creation.box(extents=(0.3, 0.8, 0.3), transform=trimesh.transformations.translation_matrix([0.6, -0.4, -0.3]))
    wall = trimesh.util.concatenate([slab, step])  # the step makes the bounds deep enough to hold the floater
    hidden = trimesh.creation.box(extents=(0.4, 0.4, 0.4), transform=trimesh.transformations.translation_matrix([0, 0.6, 0]))
    floater = trimesh.creation.box(extents=(0.2, 0.2, 0.2), transform=trimesh.transformations.translation_matrix([-0.3, -0.6, 0.2]))
    batch = {"K": K, "w2c": w2c, "depth": mesh_depth(wall.vertices, wall.faces, K, w2c, H, W)}
    from common.cameras import depth_to_points

    gt_points = depth_to_points(batch["depth"], K, w2c)[batch["depth"] > 0]  # [N, 3] the seen wall
    exact = observed_surface(wall.vertices, wall.faces, batch, gt_points)
    assert point_cloud_metrics(exact, gt_points.numpy())["chamfer"] < 1e-4
    with_hidden = trimesh.util.concatenate([wall, hidden])
    assert np.allclose(observed_surface(with_hidden.vertices, with_hidden.faces, batch, gt_points), exact, atol=1e-5)
    with_floater = trimesh.util.concatenate([wall, floater])
    pts = observed_surface(with_floater.vertices, with_floater.faces, batch, gt_points)
    assert point_cloud_metrics(pts, gt_points.numpy())["accuracy"] > 0.01  # the floater is scored
