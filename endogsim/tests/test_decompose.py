"""The static support (a plane fitted to what does not move), filling down to it, volumes from the
depth map and anchors where the support is."""

import numpy as np
import pytest
import torch

from common.cameras import depth_to_points, make_K
from common.datasets import read_endonerf
from endogsim.decompose import (DecompositionError, SupportPlane, fit_support_plane, isolated, static_support,
                                surface_tolerance)
from endogsim.filling import calibrate_volumes, depth_volumes, plane_anchors
from endogsim.gaussians import GaussianModel
from endogsim.physics import Material
from endogsim.scene import PhysicsScene
from endogsim.tests.scene_fixtures import small_clip


def _tilted_scene(rng):
    """A support plane tilted 10 degrees about y (static), a tissue patch 1 cm in front of it that
    moves, and static tissue Gaussians in front (the far side of an organ that is not pushed)."""
    n = np.array([np.sin(np.radians(10)), 0.0, np.cos(np.radians(10))])  # away from the camera
    d = 0.1
    xy = rng.uniform(-0.04, 0.04, (400, 2))
    support = np.c_[xy, (d - xy @ n[:2]) / n[2]]  # [400, 3] on the plane
    xy_t = rng.uniform(-0.01, 0.01, (200, 2))
    tissue = np.c_[xy_t, (d - 0.01 - xy_t @ n[:2]) / n[2]]  # 1 cm in front along z
    points = np.concatenate([support, tissue])
    motion = np.r_[rng.uniform(0, 5e-5, 400), rng.uniform(5e-4, 1e-3, 150), rng.uniform(0, 5e-5, 50)]
    return n, d, points, motion


def test_support_plane_is_fitted_to_what_does_not_move():
    n, d, points, motion = _tilted_scene(np.random.default_rng(0))
    plane, inliers = fit_support_plane(points, motion)
    assert np.degrees(np.arccos(plane.normal @ n)) < 0.5 and plane.offset == pytest.approx(d, abs=1e-4)
    assert inliers[:400].all() and not inliers[400:].any()
    on = static_support(points, plane)
    assert on[:400].all() and not on[400:].any()  # static tissue in front of the plane stays tissue
    assert plane.height(points[400:]).min() > 0.009  # about 1 cm in front of it


def test_support_plane_when_nothing_moves_beyond_jitter():
    """An untrained deformation field moves every Gaussian by about the same jitter: the support is
    still found (the static candidates are at least the quarter that moves least)."""
    n, d, points, _ = _tilted_scene(np.random.default_rng(2))
    jitter = np.random.default_rng(3).uniform(3e-8, 6e-8, len(points))
    plane, _ = fit_support_plane(points, jitter)
    assert np.degrees(np.arccos(plane.normal @ n)) < 0.5 and plane.offset == pytest.approx(d, abs=1e-4)


def test_support_plane_is_not_a_surface_with_things_behind_it():
    """Static tissue tops form a larger plane than the support seen around them; a support holds
    what is in front of it, so the plane with the support behind everything wins."""
    rng = np.random.default_rng(1)
    top = np.c_[rng.uniform(-0.02, 0.02, (600, 2)), np.full(600, 0.09)]
    support = np.c_[rng.uniform(-0.05, 0.05, (300, 2)), np.full(300, 0.105)]
    support = support[np.abs(support[:, :2]).max(1) > 0.022]  # seen only around the tissue
    plane, _ = fit_support_plane(np.concatenate([top, support]))  # nothing moves
    assert plane.offset == pytest.approx(0.105, abs=1e-4)
    with pytest.raises(DecompositionError, match="points"):
        fit_support_plane(np.zeros((2, 3)))


def test_surface_tolerance_is_the_supports_roughness_behind_the_plane():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1e-4, 20000)  # the support's rendered surface, 0.1 mm rough
    rim = rng.uniform(0, 2e-3, 2000)  # tissue just in front of it: never behind
    tol = surface_tolerance(np.r_[noise, rim, np.nan])
    assert tol == pytest.approx(2.58e-4, rel=0.05)  # the 99th percentile of |N(0, 0.1 mm)|
    assert surface_tolerance(np.array([0.001, 0.002])) == 0.0  # nothing behind the plane


def test_depth_volumes_of_a_box_on_its_support():
    """A 3 x 3 x 1.5 cm box on the plane z = 0.105 m, centred on the optical axis, seen from the
    camera: the columns from its observed surface down to the plane add up to its volume."""
    H, W, f = 160, 200, 200.0
    K = make_K(torch.tensor(f), torch.tensor(f), torch.tensor(W / 2), torch.tensor(H / 2)).double()
    plane = SupportPlane(np.array([0.0, 0.0, 1.0]), 0.105)
    uv = np.stack(np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5, indexing="xy"), -1)  # [H, W, 2]
    ray = (uv - [W / 2, H / 2]) / f  # x / z, y / z
    top = np.all(np.abs(ray * 0.09) <= 0.015, -1)  # rays that hit the top face (side faces face away)
    depth = np.where(top, 0.09, 0.105)
    objects = np.where(top, 0, -1)
    vol = depth_volumes(depth, K.numpy(), objects, plane, 1)[0]
    assert vol == pytest.approx(0.03 * 0.03 * 0.015, rel=0.02)
    # the top is parallel to the support: every pixel's patch is its footprint there, (z / f)^2
    assert vol == pytest.approx(top.sum() * (0.09 / f) ** 2 * 0.015, rel=1e-9)
    # a pixel without a neighbour of its object keeps that footprint
    lone = np.full((H, W), -1)
    lone[H // 2, W // 2] = 0
    assert depth_volumes(depth, K.numpy(), lone, plane, 1)[0] == pytest.approx((0.09 / f) ** 2 * 0.015, rel=1e-9)
    # a pixel's column is its footprint times its height above the plane, nothing for the support
    assert depth_volumes(np.full((H, W), 0.105), K.numpy(), np.zeros((H, W), int), plane, 1)[0] == 0
    scaled = calibrate_volumes(np.ones(4), np.array([0, 0, 1, 1]), [1.0, np.nan])
    assert scaled.tolist() == [0.5, 0.5, 1.0, 1.0]  # an object without a target keeps its volumes


def test_scene_from_tool_masks_finds_the_support_fills_to_it_and_holds_it_there():
    sample = read_endonerf(small_clip(), frames=[0], depth_scale=10000.0)
    image = sample.images[0].permute(1, 2, 0)  # [H, W, 3]
    model = GaussianModel.from_depth(
        image,
        sample.depth[0],
        sample.K[0],
        sample.w2c[0],
        stride=1,
        plane_resolution=(8, 8, 8, 4),
        multires=(1,),
        plane_features=4,
        mlp_width=8,
    )
    scene = PhysicsScene.from_gaussian_model(
        model, sample, n_tissues=2, materials=[Material(E=4e3, nu=0.4)] * 2
    )
    assert [(o.name, o.kind) for o in scene.objects] == [
        ("tissue_0", "tissue"),
        ("tissue_1", "tissue"),
        ("tool", "rigid"),
        ("support", "rigid"),
    ]
    plane = SupportPlane(
        np.array(scene.meta["support_plane"]["normal"]), scene.meta["support_plane"]["offset"]
    )
    assert plane.normal[2] > 0.999 and plane.offset == pytest.approx(0.105, abs=1e-3)  # the clip's support
    support, tissue = scene.gaussian_object == 3, scene.gaussian_object < 2
    assert np.percentile(np.abs(plane.height(scene.means[support])), 95) < 0.002  # a few at the blurred edge
    assert plane.height(scene.means[tissue]).min() > 0.002 and tissue.sum() > 400
    # the tissue's particles lie between its surface and the plane, their volumes are the depth map's
    x, oid = scene.particles.x, scene.particles.object_id
    assert plane.height(x).min() > -0.001 and plane.height(x).max() < 0.0155
    assert scene.particles.volume.sum() == pytest.approx(sum(scene.meta["tissue_volume_m3"]), rel=1e-9)
    # the grid nodes held are those at and behind the plane, over the tissue's columns
    for box in scene.anchors:
        assert box.lo[2] >= plane.offset - scene.spacing - 1e-9
    held = np.array([[b.lo[0], b.lo[1]] for b in scene.anchors])
    assert held[:, 0].min() <= x[:, 0].min() and held[:, 0].max() + scene.mpm.dx >= x[:, 0].max()
    assert scene.make_simulator() is not None and oid.max() == 1
    boxes = plane_anchors(x, scene.mpm.dx, scene.mpm.origin, plane, 0.001, 0.01)
    assert len(boxes) == len(np.unique(np.floor((x[:, :2] - scene.mpm.origin[:2]) / scene.mpm.dx), axis=0))
    pts = depth_to_points(sample.depth[0].double(), sample.K[0].double()).numpy().reshape(-1, 3)
    assert np.abs(plane.height(pts)).min() < 1e-3  # the depth map does see the support


def test_isolated_finds_the_points_apart_from_a_connected_surface():
    rng = np.random.default_rng(0)
    u, v = np.meshgrid(np.linspace(-0.01, 0.01, 12), np.linspace(-0.01, 0.01, 12))
    r2 = (u**2 + v**2).ravel() / 2e-4
    surface = np.stack([u.ravel(), v.ravel(), 0.1 - 0.01 * (1 - r2)], -1)  # a dome, 1.8 mm spacing
    lone = np.stack([rng.uniform(0.03, 0.05, 6), np.linspace(-0.03, 0.03, 6), np.full(6, 0.097)], -1)
    lone[1] = lone[0] + 0.0005  # a pair is still no cluster
    out = isolated(np.r_[surface, lone])
    assert not out[: len(surface)].any()  # the surface's edges and corners stay with it
    assert out[len(surface):].all()
    assert not isolated(surface[:1]).any()


def test_scene_from_a_model_takes_its_moving_gaussians_colours_from_the_rest_frame():
    sample = read_endonerf(small_clip(), frames=[0], depth_scale=10000.0)
    image = sample.images[0].permute(1, 2, 0)  # [H, W, 3]
    model = GaussianModel.from_depth(image, sample.depth[0], sample.K[0], sample.w2c[0], stride=1,
                                     plane_resolution=(8, 8, 8, 4), multires=(1,), plane_features=4, mlp_width=8)
    with torch.no_grad():
        model.sh.zero_()  # canonical colours that fit no frame: one grey for all
    kw = dict(n_tissues=2, materials=[Material(E=4e3, nu=0.4)] * 2)
    grey = PhysicsScene.from_gaussian_model(model, sample, rest_colors=False, **kw)
    fitted = PhysicsScene.from_gaussian_model(model, sample, **kw)
    assert grey.meta["colors"] == "the 4DGS's canonical colours" and fitted.meta["colors"] == "fitted to frame 0"
    moving = fitted.gaussian_particle >= 0
    assert np.array_equal(fitted.colors[~moving], grey.colors[~moving])  # the rigid ones keep theirs
    assert np.array_equal(fitted.means, grey.means) and np.array_equal(fitted.particles.x, grey.particles.x)
    keep = ~sample.masks["tool"][0]
    err = {name: float((s.render_static().rgb.clamp(0, 1) - image).abs()[keep & tissue_pixels(s)].mean())
           for name, s in (("grey", grey), ("fitted", fitted))}
    assert err["fitted"] < 0.3 * err["grey"], err


def tissue_pixels(scene) -> torch.Tensor:
    """[H, W]: pixels that the scene's moving Gaussians cover at rest."""
    hidden = scene.render_state(hide_rigid=True, relight=False).alpha  # [H, W]
    return hidden > 0.5
