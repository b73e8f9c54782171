"""The renderer and the mesh extraction against analytic SDFs, independent of learning."""

import numpy as np
import pytest
import torch
import trimesh

from common.cameras import look_at, make_K, pixel_rays
from common.metrics import point_cloud_metrics
from ivgt.analytic import box_sdf, ray_sphere, sphere_sdf
from ivgt.mesh import extract_coarse_to_fine, extract_dense
from ivgt.render import eikonal_loss, render_rays


def _camera(H=24, W=32):
    K = make_K(30.0, 30.0, W / 2, H / 2)
    w2c = look_at(torch.tensor([0.3, -1.6, 0.4]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    return K, w2c


@pytest.mark.parametrize("density,variance", [("neus", 0.7), ("volsdf", 0.5)])
def test_sphere_depth_and_normals_match_ray_casting(density, variance):
    H, W = 24, 32
    K, w2c = _camera(H, W)
    origins, dirs = (x.reshape(-1, 3) for x in pixel_rays(K, w2c, H, W))
    field = lambda p: (sphere_sdf(p), torch.full_like(p, 0.5))  # noqa: E731
    out = render_rays(field, sphere_sdf, origins, dirs, torch.full((H * W,), 0.2), torch.full((H * W,), 4.0),
                      density=density, variance=variance, n_coarse=64, n_fine=64, up_sample_steps=4)
    t_true, n_true = ray_sphere(origins, dirs)
    hit = torch.isfinite(t_true)
    assert hit.sum() > 100 and (~hit).sum() > 50
    # Rays that graze the silhouette are ambiguous for any volume renderer: test the clear hits.
    inner = hit & ((-(dirs * n_true).sum(-1)) > 0.3)
    z_axis = w2c[2, :3]
    depth, depth_true = out["distance"] * (dirs @ z_axis), t_true * (dirs @ z_axis)
    assert (depth[inner] - depth_true[inner]).abs().max() < 0.02
    clear_miss = torch.linalg.cross(origins, dirs, dim=-1).norm(dim=-1) > 0.5 + 0.05  # closest approach
    assert clear_miss.sum() > 50
    assert out["opacity"][inner].min() > 0.98 and out["opacity"][clear_miss].max() < 0.05
    cos = torch.nn.functional.cosine_similarity(out["normal"][inner], n_true[inner], dim=-1)
    assert torch.rad2deg(torch.acos(cos.clamp(-1, 1))).max() < 3.0


def test_eikonal_zero_for_exact_sdf_and_not_for_a_scaled_one():
    p = (torch.rand(2000, 3) * 2 - 1).requires_grad_(True)
    for fn, zero in ((sphere_sdf, True), (box_sdf, True), (lambda x: 2 * sphere_sdf(x), False)):
        g = torch.autograd.grad(fn(p).sum(), p)[0]
        loss = float(eikonal_loss(g))
        assert (loss < 1e-10) if zero else (loss > 0.5)


@pytest.mark.parametrize("sdf", [sphere_sdf, box_sdf])
def test_coarse_to_fine_matches_dense_and_the_analytic_surface(sdf):
    bounds = torch.tensor([[-0.8, -0.7, -0.75], [0.8, 0.75, 0.7]])
    R = 64
    v_d, f_d, s_d = extract_dense(sdf, bounds, R)
    v_c, f_c, s_c = extract_coarse_to_fine(sdf, bounds, R, levels=3)
    voxel = float(((bounds[1] - bounds[0]) / R).max())
    m = point_cloud_metrics(v_c, v_d)
    assert m["chamfer"] < 0.5 * voxel
    assert s_c["sdf_queries"] < 0.5 * s_d["sdf_queries"]  # the ratio falls with resolution (benchmark)
    # vertices lie on the analytic surface (marching cubes interpolation error only)
    assert np.abs(sdf(torch.as_tensor(v_c)).numpy()).max() < 0.5 * voxel
    mesh = trimesh.Trimesh(v_c, f_c)
    assert mesh.volume > 0  # outward winding


def test_mesh_bad_input():
    with pytest.raises(ValueError, match="bounds"):
        extract_dense(sphere_sdf, [[0, 0, 0], [0, 1, 1]], 16)
    with pytest.raises(ValueError, match="divisible"):
        extract_coarse_to_fine(sphere_sdf, [[-1, -1, -1], [1, 1, 1]], 20, levels=3)
