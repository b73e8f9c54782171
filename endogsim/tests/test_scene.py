"""Decomposition, interior filling, rendering of simulated states and scene directories."""

import json

import numpy as np
import pytest
import torch

from common.datasets import read_endonerf
from endogsim.gaussians import GaussianModel
from endogsim.physics import Material
from endogsim.decompose import DecompositionError, assign_objects, split_kmeans
from endogsim.filling import FillingError, fill_along_rays
from endogsim.clip import depth_scene
from endogsim.scene import PhysicsScene, SceneError, SceneObject
from endogsim.tests.scene_fixtures import small_clip, small_scene


def test_assign_objects_majority_vote_and_depth_visibility():
    K = np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]])
    means = np.array([[-0.2, 0, 1], [0.2, 0, 1], [0.0, 0.3, 1], [-0.4, 0, 2]])  # the last is behind the surface
    labels = np.zeros((3, 10, 10), np.int64)
    labels[:2, :, 5:] = 1  # frames 0, 1: left half object 0, right half object 1
    labels[2] = 2  # frame 2 disagrees everywhere: outvoted
    labels[:, 8:, :] = -1  # rows 8-9 unlabelled: point 2 (v = 8) gets no vote
    ids, votes = assign_objects(means, labels, K, np.eye(4))
    assert ids[:2].tolist() == [0, 1]
    assert votes[0].tolist() == [2, 0, 1] and votes[2].sum() == 0
    assert votes[3].sum() == 3  # without depth the occluded point votes where it projects
    depth = np.ones((3, 10, 10))
    ids_d, votes_d = assign_objects(means, labels, K, np.eye(4), depth=depth)
    assert votes_d[3].sum() == 0  # z = 2 against an observed depth of 1: not visible
    voted = votes_d.sum(1) > 0
    nearest = np.argmin(np.where(voted, np.linalg.norm(means - means[3], axis=1), np.inf))
    assert ids_d[3] == ids_d[nearest]  # unvoted Gaussians take their nearest voted neighbour's object
    with pytest.raises(DecompositionError, match="labels"):
        assign_objects(means, labels[0], K, np.eye(4))


def test_decomposition_of_a_gaussian_model_with_a_segmenter_and_kmeans_split():
    clip = small_clip()
    sample = read_endonerf(clip, frames=[0], depth_scale=10000.0)  # one frame: votes are then the pixel
    image = sample.images[0].permute(1, 2, 0)  # [H, W, 3]
    model = GaussianModel.from_depth(image, sample.depth[0], sample.K[0], sample.w2c[0], stride=1,
                                     plane_resolution=(8, 8, 8, 4), multires=(1,), plane_features=4, mlp_width=8)
    H, W = image.shape[:2]
    tool_box = (slice(0, 8), slice(0, 12))  # a pretend instrument in the top-left corner

    def segmenter(img):  # bright = tissue (0), dark = support (1), the box = tool (2)
        lab = np.where(img.mean(-1) > 0.45, 0, 1)
        lab[tool_box] = 2
        return lab

    scene = PhysicsScene.from_gaussian_model(model, sample, t=0.0, segmenter=segmenter,
                                             label_names=("tissue", "support", "tool"),
                                             kinds=("tissue", "rigid", "rigid"), n_tissues=2,
                                             tissue_labels=("liver", "kidney"), thickness=0.008, spacing=0.0025)
    names = [o.name for o in scene.objects]
    assert names == ["tissue_0", "tissue_1", "support", "tool"]
    # every Gaussian was back-projected from one pixel and the field is the identity: its object is its pixel's
    v, u = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    in_box = np.zeros((H, W), bool)
    in_box[tool_box] = True
    assert np.array_equal(scene.gaussian_object == 3, in_box.reshape(-1))
    tissue = scene.gaussian_object < 2
    bright = image.numpy().mean(-1).reshape(-1) > 0.45
    assert np.array_equal(tissue, bright & ~in_box.reshape(-1))
    # k-means on position + colour separates the two blocks (x < 0 / x > 0) apart from seam pixels
    side = (scene.means[tissue, 0] > 0).astype(int)
    assert np.mean(scene.gaussian_object[tissue] == side) > 0.95
    # materials from the literature table, with their sources; rigid Gaussians are not particles
    assert scene.objects[0].material.E == pytest.approx(5220.0) and scene.objects[1].material.E == pytest.approx(14210.0)
    assert all(s.startswith("table:") for s in scene.objects[0].sources.values())
    assert np.all(scene.gaussian_particle[~tissue] == -1)
    assert np.array_equal(scene.particles.object_id[scene.gaussian_particle[tissue]], scene.gaussian_object[tissue])


def test_kmeans_split_bad_k():
    with pytest.raises(DecompositionError, match="k must be"):
        split_kmeans(np.zeros((3, 3)), np.zeros((3, 3)), 5)


def test_fill_along_rays_under_a_plane():
    h, T = 0.0025, 0.008
    g = np.arange(-0.01, 0.01, 0.002) + 0.001
    X, Y = np.meshgrid(g, g, indexing="ij")
    surface = np.stack([X.ravel(), Y.ravel(), np.full(X.size, 0.1)], 1)  # [100, 3] a 2 x 2 cm patch at z = 0.1
    obj = (surface[:, 0] > 0).astype(np.int64)
    x, oid, vol_s, vol_in = fill_along_rays(surface, obj, T, h)
    assert len(x) > len(surface)  # 64 voxel columns x ~3 layers below the surface layer
    assert np.all(x[:, 2] > 0.1) and np.all(x[:, 2] <= 0.1 + T + 1e-9)  # strictly below, down to the thickness
    # each filled particle carries the object of the surface point above it (same ray, to a voxel)
    rays_xy = surface[:, :2] / surface[:, 2:]
    above = np.argmin(np.linalg.norm((x[:, :2] / x[:, 2:])[:, None] - rays_xy[None], axis=-1), 1)
    border = np.abs(x[:, 0]) < h  # voxels straddling x = 0 mix rays of both objects
    assert np.mean(oid[~border] == obj[above[~border]]) == 1.0
    # volumes: the swept volume is area x thickness, to within one voxel layer (voxel quantisation)
    total = vol_s.sum() + vol_in.sum()
    assert 0.02 * 0.02 * (T - h) < total < 0.02 * 0.02 * (T + h)
    with pytest.raises(FillingError, match="spacing"):
        fill_along_rays(surface, obj, T, -1.0)


def test_synthetic_scene_particles_fill_below_the_visible_surface():
    scene = small_scene()
    deform = scene.gaussian_particle >= 0
    n_s = int(deform.sum())
    assert n_s > 0 and len(scene.particles.x) > 1.5 * n_s
    surf = scene.means[deform].astype(np.float64)  # [M, 3]
    inner = scene.particles.x[n_s:]  # [P - M, 3]
    above = np.argmin(np.linalg.norm((inner[:, :2] / inner[:, 2:])[:, None] - (surf[:, :2] / surf[:, 2:])[None], axis=-1), 1)
    below = inner[:, 2] - surf[above, 2]
    assert np.mean(below > 0) > 0.98 and below.min() > -scene.spacing
    # ground truth: the blocks sit side by side, object 0 at x < 0
    oid = scene.particles.object_id
    assert np.all(scene.particles.x[oid == 0, 0] < 0.004) and np.all(scene.particles.x[oid == 1, 0] > -0.004)
    # and reach down to the support (ground_truth.json) that anchors them
    support_z = scene.anchors[0].lo[2]
    assert scene.particles.x[:, 2].max() == pytest.approx(support_z, abs=scene.spacing)
    assert [o.sources for o in scene.objects[:2]] == [{"all": "ground truth"}] * 2


def test_render_state_at_rest_is_the_static_render_exactly():
    scene = small_scene()
    P = len(scene.particles.x)
    static = scene.render_static()
    moved = scene.render_state(scene.rest_positions(), np.tile(np.eye(3), (P, 1, 1)))
    assert torch.equal(static.rgb, moved.rgb) and torch.equal(static.depth, moved.depth)
    assert torch.equal(static.alpha, moved.alpha)
    with pytest.raises(SceneError, match="positions"):
        scene.render_state(np.zeros((P + 1, 3)))


def test_render_state_relights_a_surface_turned_from_the_light_at_the_camera():
    scene = small_scene()
    P = len(scene.particles.x)
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    F = np.tile([[1, 0, 0], [0, c, -s], [0, s, c]], (P, 1, 1))  # every normal turned 45 degrees about x
    lit = scene.render_state(scene.rest_positions(), F).rgb
    unlit = scene.render_state(scene.rest_positions(), F, relight=False).rgb
    changed = (lit - unlit).abs().amax(-1) > 1e-4  # [H, W]
    # most of the blocks' surface looks at the camera: turned, most of it darkens (edges tilted the
    # other way brighten)
    assert changed.float().mean() > 0.3 and ((lit - unlit).sum(-1)[changed] < 0).float().mean() > 0.75
    assert lit.mean() < unlit.mean()


def _one_gaussian_scene(sigma=0.002, z=0.1):
    objects = [SceneObject("tissue", "tissue", "liver", Material(E=5e3, nu=0.3))]
    K = np.array([[100.0, 0, 16], [0, 100, 16], [0, 0, 1]])
    return PhysicsScene.build([[0.0, 0.0, z]], [[1.0, 0, 0, 0]], [[sigma] * 3], [0.9], [[1.0, 0.5, 0.2]], [0],
                              objects, K, np.eye(4), 32, 32, thickness=0.0, spacing=0.003)


def _moments(alpha: torch.Tensor):
    a = alpha.double()
    ys, xs = torch.meshgrid(torch.arange(a.shape[0]) + 0.5, torch.arange(a.shape[1]) + 0.5, indexing="ij")
    w = a / a.sum()
    mx, my = (w * xs).sum(), (w * ys).sum()
    return float(mx), float(my), float((w * (xs - mx) ** 2).sum()), float((w * (ys - my) ** 2).sum())


def test_render_state_uniform_stretch_and_translation():
    scene = _one_gaussian_scene()
    assert len(scene.particles.x) == 1  # thickness 0: the Gaussian is the only particle
    f, sigma, z = 100.0, 0.002, 0.1
    var = lambda s: (f * s / z) ** 2 + 0.3  # noqa: E731  (px^2, with the 0.3 px^2 dilation)
    _, _, vx0, vy0 = _moments(scene.render_state().alpha)
    F = np.diag([2.0, 1.0, 1.0])[None]
    mx, my, vx, vy = _moments(scene.render_state(F=F).alpha)
    assert vx0 == pytest.approx(var(sigma), rel=0.05) and vy0 == pytest.approx(var(sigma), rel=0.05)
    assert vx == pytest.approx(var(2 * sigma), rel=0.05)  # the footprint stretches with F along x only
    assert vy == pytest.approx(vy0, rel=2e-3)  # (the 1/255 cut-off box changes shape a little)
    assert (mx, my) == pytest.approx((16.0, 16.0), abs=0.05)
    mx, my, _, _ = _moments(scene.render_state(positions=[[0.01, 0.0, 0.1]]).alpha)
    assert mx == pytest.approx(16.0 + f * 0.01 / z, abs=0.05)  # the Gaussian rides on its particle


def test_save_load_roundtrip_and_bad_directories(tmp_path):
    scene = small_scene()
    d = scene.save(tmp_path / "scene")
    back = PhysicsScene.load(d)
    for name in ("means", "quats", "scales", "opacities", "colors", "gaussian_object", "gaussian_particle"):
        assert np.array_equal(getattr(back, name), getattr(scene, name)), name
    assert np.array_equal(back.particles.x, scene.particles.x) and np.array_equal(back.particles.volume, scene.particles.volume)
    assert back.materials == scene.materials and back.mpm == scene.mpm and back.anchors == scene.anchors
    assert [o.name for o in back.objects] == [o.name for o in scene.objects]
    assert torch.equal(back.render_static().rgb, scene.render_static().rgb)

    with pytest.raises(SceneError, match="not found"):
        PhysicsScene.load(tmp_path / "nowhere")
    (d / "scene.json").write_text("{ not json")
    with pytest.raises(SceneError, match="scene.json: not valid JSON"):
        PhysicsScene.load(d)
    doc = json.loads((scene.save(tmp_path / "s2") / "scene.json").read_text())
    (tmp_path / "s2" / "scene.json").write_text(json.dumps({**doc, "format": "other"}))
    with pytest.raises(SceneError, match="expected format"):
        PhysicsScene.load(tmp_path / "s2")
    del doc["mpm"]
    (tmp_path / "s2" / "scene.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="missing field 'mpm'"):
        PhysicsScene.load(tmp_path / "s2")
    d3 = scene.save(tmp_path / "s3")
    (d3 / "particles.safetensors").write_bytes(b"garbage")
    with pytest.raises(SceneError, match="particles.safetensors: not a readable"):
        PhysicsScene.load(d3)
    from safetensors.numpy import load_file, save_file

    d4 = scene.save(tmp_path / "s4")
    g = load_file(str(d4 / "gaussians.safetensors"))
    g["colors"] = g["colors"][:, :2].copy()
    save_file(g, str(d4 / "gaussians.safetensors"))
    with pytest.raises(SceneError, match="colors expected"):
        PhysicsScene.load(d4)
    doc = json.loads((d4 / "scene.json").read_text())
    doc["objects"][0]["material"]["nu"] = 0.7
    scene.save(d4)
    (d4 / "scene.json").write_text(json.dumps(doc))
    with pytest.raises(SceneError, match="Material.nu"):
        PhysicsScene.load(d4)


def test_from_synthetic_bad_input(tmp_path):
    with pytest.raises(SceneError, match="ground_truth.json: not found"):
        depth_scene(tmp_path)
    with pytest.raises(SceneError, match="two endogsim.physics.Material"):
        depth_scene(small_clip(), materials=[Material()])


def test_render_state_is_differentiable_in_positions_and_F():
    scene = _one_gaussian_scene()
    pos = torch.tensor([[0.001, 0.0, 0.1]], requires_grad=True)
    F = torch.eye(3)[None].clone().requires_grad_(True)
    out = scene.render_state(pos, F)
    (out.alpha * torch.arange(32.0)[None, :]).sum().backward()  # weighted towards +x: wants the Gaussian to move right
    assert pos.grad[0, 0] > 0 and torch.isfinite(F.grad).all() and F.grad.abs().sum() > 0


def test_decomposition_from_tool_masks_and_make_simulator():
    sample = read_endonerf(small_clip(), frames=[0], depth_scale=10000.0)
    image = sample.images[0].permute(1, 2, 0)  # [H, W, 3]
    model = GaussianModel.from_depth(image, sample.depth[0], sample.K[0], sample.w2c[0], stride=2,
                                     plane_resolution=(8, 8, 8, 4), multires=(1,), plane_features=4, mlp_width=8)
    tool = torch.zeros_like(sample.masks["tool"])  # [1, H, W]
    tool[:, 20:, 30:] = True  # an instrument in the bottom-right corner
    sample.masks["tool"] = tool
    scene = PhysicsScene.from_gaussian_model(model, sample, materials=[Material(E=4e3, nu=0.4)], thickness=0.006,
                                             support=False)
    assert [o.kind for o in scene.objects] == ["tissue", "rigid"] and scene.objects[0].sources == {"all": "given"}
    uv = np.stack(np.meshgrid(np.arange(0, 40, 2), np.arange(0, 32, 2), indexing="xy"), -1).reshape(-1, 2)  # (u, v) per Gaussian
    under = (uv[:, 0] >= 30) & (uv[:, 1] >= 20)
    assert np.array_equal(scene.gaussian_object == 1, under)
    # per-object label maps given directly (e.g. a dataset's gt masks) give the same decomposition
    same = PhysicsScene.from_gaussian_model(model, sample, labels=tool.long(), materials=[Material(E=4e3, nu=0.4)],
                                            thickness=0.006)
    assert np.array_equal(same.gaussian_object, scene.gaussian_object) and same.meta["decomposition"] == "label maps"
    with pytest.raises(SceneError, match="labels: expected integer label maps"):
        PhysicsScene.from_gaussian_model(model, sample, labels=np.zeros((1, 5, 5), np.int64))
    sim = scene.make_simulator()
    sim.step(5)
    assert np.abs(sim.positions() - scene.particles.x).max() < 1e-3  # at rest, nothing pushes it


def test_build_moves_a_world_frame_scene_into_the_reference_camera_frame():
    from common.cameras import axis_angle_to_matrix
    from endogsim.render import render

    R = axis_angle_to_matrix(torch.tensor([0.2, -0.5, 0.1]))  # [3, 3]
    w2c = torch.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, torch.tensor([0.01, -0.02, 0.03])
    cam = torch.tensor([[0.0, 0.0, 0.1], [0.004, 0.002, 0.105]])  # [2, 3] where the Gaussians sit in the camera
    means = (cam - w2c[:3, 3]) @ R  # [2, 3] world: R^T (p - t)
    quats = torch.tensor([[0.9, 0.1, 0.3, -0.2], [1.0, 0.0, 0.0, 0.0]])
    scales = torch.tensor([[0.003, 0.001, 0.002], [0.002, 0.002, 0.002]])
    K = torch.tensor([[100.0, 0, 16], [0, 100, 16], [0, 0, 1]])
    objects = [SceneObject("tissue", "tissue", "liver", Material(E=5e3, nu=0.3))]
    scene = PhysicsScene.build(means, quats, scales, [0.8, 0.8], [[1.0, 0.5, 0.2], [0.2, 0.5, 1.0]], [0, 0], objects,
                               K, w2c, 32, 32, thickness=0.0, spacing=0.003)
    assert np.allclose(scene.w2c, np.eye(4)) and np.allclose(scene.means, cam.numpy(), atol=1e-6)
    want = render(means, quats, scales, torch.tensor([0.8, 0.8]), torch.tensor([[1.0, 0.5, 0.2], [0.2, 0.5, 1.0]]),
                  w2c, K, 32, 32)
    got = scene.render_static()
    assert torch.allclose(got.rgb, want.rgb, atol=1e-5) and torch.allclose(got.depth, want.depth, atol=1e-5)


def test_surface_motion_error_is_zero_for_the_truth_and_grows_with_a_wrong_material():
    from dataclasses import replace

    from endogsim.clip import (clip_observations, ground_truth_scene, known_forces, surface_motion_error,
                               true_surface_tracks, truth_materials)
    from endogsim.refine import simulate_scene

    clip = small_clip()
    tracks = true_surface_tracks(clip)  # [F, G, 3]
    scene, truth = ground_truth_scene(clip), truth_materials(clip)
    times, forces = clip_observations(clip).times.numpy(), known_forces(clip)
    assert tracks.shape[0] == len(times) and np.abs(tracks[-1] - tracks[0]).max() > 1e-4  # the surface moves
    _, same = simulate_scene(scene, truth, times, forces)
    assert surface_motion_error(scene, same, tracks) == pytest.approx(0.0, abs=1e-9)
    _, soft = simulate_scene(scene, [replace(m, E=m.E / 2) for m in truth], times, forces)
    _, rest = simulate_scene(scene, truth, times, ())  # no force: the surface stays where it was
    moved = np.linalg.norm(tracks[-1] - tracks[0], axis=-1).mean()
    assert surface_motion_error(scene, rest, tracks, slice(-1, None)) == pytest.approx(moved, rel=0.05)
    assert surface_motion_error(scene, soft, tracks, slice(-1, None)) > 1e-5
