"""The "endoscopy" look of the synthetic clip: its rendered surface is where its material is (depth
volumes, depth against the height field), the press is plain to see and scales as 1 / E, the
ground-truth scene renders the clip, determinism per seed, bad arguments."""

import json

import numpy as np
import pytest
import torch

from common.cameras import pixel_centers, project
from common.datasets import read_endonerf
from endogsim import synthetic_look as endo
from endogsim.clip import clip_observations, ground_truth_scene, setup_from_clip
from endogsim.decompose import SupportPlane
from endogsim.filling import depth_volumes
from endogsim.config import load_config
from endogsim.physics import Material
from endogsim.scene import PhysicsScene, SceneError
from endogsim.synthetic_scene import DEPTH_SCALE, build_setup, make_surgical_scene, simulate_positions
from endogsim.train import train_reconstruction


@pytest.fixture(scope="module")
def rest_clip(tmp_path_factory):
    """Two frames 4 ms apart at the default 128 x 160 (the tool is still out of view)."""
    return make_surgical_scene(tmp_path_factory.mktemp("endoscopy"), frames=2, duration=0.004)  # the default look


def _volumes(clip_dir):
    """(depth_volumes of frame 0's depth PNG over the true support plane and the left / right
    object map, the same with each pixel's patch taken parallel to the support, the recorded
    truth volumes)."""
    gt = json.loads((clip_dir / "ground_truth.json").read_text())
    s = read_endonerf(clip_dir, frames=[0], depth_scale=gt["depth_scale"])
    depth, K = s.depth[0].double().numpy(), s.K[0].double().numpy()  # [H, W], [3, 3]
    x = (pixel_centers(*depth.shape).double().numpy()[..., 0] - K[0, 2]) / K[0, 0] * depth  # [H, W] m
    plane = SupportPlane(np.array([0.0, 0.0, 1.0]), gt["support"]["surface_z"])
    side = np.where(x < 0, 0, 1)
    column = np.clip(gt["support"]["surface_z"] - depth, 0, None) * depth**2 / (K[0, 0] * K[1, 1])  # [H, W] m^3
    parallel = np.bincount(side.ravel(), weights=column.ravel(), minlength=2)
    return depth_volumes(depth, K, side, plane, 2), parallel, np.array([o["volume_m3"] for o in gt["objects"]])


def test_the_depth_map_encloses_the_materials_volume(rest_clip, tmp_path):
    gt = json.loads((rest_clip.out_dir / "ground_truth.json").read_text())
    assert gt["look"] == "endoscopy"
    for o in gt["objects"]:  # the particles carry the continuous surface's volume
        assert o["volume_m3"] == pytest.approx(o["surface_volume_m3"], rel=1e-4)
        assert o["surface_volume_m3"] == pytest.approx(endo.lobe_volume())
    vol, parallel, truth = _volumes(rest_clip.out_dir)
    assert np.all(np.abs(vol / truth - 1) < 0.01), vol / truth - 1  # measured -0.26% for both lobes
    # the reference, measured: a patch taken parallel to the support undercounts the oblique flanks (-9.5%)
    assert np.all((-0.12 < parallel / truth - 1) & (parallel / truth - 1 < -0.07)), parallel / truth - 1
    # on the blocks look the splats' skirt makes the rendered tissue larger than the material: +45%
    make_surgical_scene(tmp_path, frames=2, size=(64, 80), duration=0.004, look="blocks")
    vol, _, truth = _volumes(tmp_path)
    assert truth == pytest.approx([1.35e-5] * 2) and np.all(np.abs(vol / truth - 1.45) < 0.05), vol / truth - 1


def test_the_decomposed_particle_volume_of_each_lobe_is_the_truth(tmp_path):
    """Issue 22's target on the endoscopy look (64 x 80 here, to be quick): a 4DGS fitted to the
    clip at rest (150 coarse steps), decomposed: the support plane, the lobes apart, and each lobe's
    particle volume within 5% of the truth, the rim lower than the Gaussians' support tolerance
    included (it holds 5% of a lobe's volume)."""
    make_surgical_scene(tmp_path / "clip", frames=2, size=(64, 80), duration=0.004)
    cfg = load_config(overrides=["recon.steps=150", "recon.coarse_steps=150", "recon.model.multires=[1]",
                                 "recon.model.plane_resolution=[8, 8, 8, 4]", "recon.model.plane_features=4",
                                 "recon.model.mlp_width=8"])
    model = train_reconstruction(cfg.recon, tmp_path / "clip", tmp_path / "run", progress=False)
    sample = read_endonerf(tmp_path / "clip", depth_scale=DEPTH_SCALE)
    scene = PhysicsScene.from_gaussian_model(model, sample, n_tissues=2, materials=[Material(E=4e3, nu=0.4)] * 2)
    assert [o.name for o in scene.objects] == ["tissue_0", "tissue_1", "tool", "support"]
    assert scene.meta["support_plane"]["offset"] == pytest.approx(0.105, abs=3e-4)
    tissue = scene.gaussian_object < 2
    assert np.array_equal(scene.gaussian_object[tissue], (scene.means[tissue, 0] > 0).astype(int))  # left first
    vol = np.array([scene.particles.volume[scene.particles.object_id == j].sum() for j in (0, 1)])
    assert np.all(np.abs(vol / endo.lobe_volume() - 1) < 0.05), vol / endo.lobe_volume() - 1  # measured +0.5%, +1.1%


def test_the_rendered_depth_is_the_height_field_at_rest(rest_clip):
    H, W, K = rest_clip.height, rest_clip.width, rest_clip.K.double().numpy()
    support_z = json.loads((rest_clip.out_dir / "ground_truth.json").read_text())["support"]["surface_z"]
    ray = (pixel_centers(H, W).double().numpy() - K[:2, 2]) / K[0, 0]  # [H, W, 2] (x / z, y / z)
    ray = ray.reshape(-1, 2)
    # where each pixel's ray first meets the surface z = support_z - h(x, y): march, then bisect
    zs = np.linspace(support_z - endo.LOBE_HEIGHT - 1e-3, support_z, 81)  # [Z] 0.2 mm steps
    g = zs + endo.height_field((ray[:, None] * zs[None, :, None]).reshape(-1, 2)).reshape(len(ray), -1) - support_z
    first = np.argmax(g >= 0, axis=1)
    lo, hi = zs[first - 1], zs[first]
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        below = mid + endo.height_field(ray * mid[:, None]) - support_z < 0
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    true_z = (0.5 * (lo + hi)).reshape(H, W)
    interior = support_z - true_z > 1e-3  # on a lobe, more than 1 mm above the support
    assert interior.sum() > 3000
    err = np.abs(rest_clip.tissue_depth[0] - true_z)[interior]
    assert err.max() < 3e-4 and np.median(err) < 1e-4, (err.max(), np.median(err))  # measured 0.14 / 0.03 mm
    assert np.array_equal(rest_clip.depth[0], rest_clip.tissue_depth[0])  # the tool is out of view
    support = support_z - true_z < 1e-6  # rays that meet no lobe
    assert np.abs(rest_clip.depth[0][support] - support_z).max() < 2e-4


def test_the_press_is_plain_to_see_and_the_stiff_lobe_moves_less():
    setup = build_setup(0, 16, look="endoscopy")  # 128 x 160
    positions = simulate_positions(setup)  # [F, N, 3]
    n = setup.appearance.n_discs
    uv = project(torch.tensor(positions[:, :n]), setup.K.double()).numpy()  # [F, n, 2]
    moved = np.linalg.norm(uv - uv[0], axis=-1).max(0)  # [n] px, the largest over the clip
    lobe = setup.particles.object_id[:n]
    soft, stiff = moved[lobe == 0].max(), moved[lobe == 1].max()
    assert soft >= 6.0 and stiff >= 1.5 and stiff < 0.5 * soft, (soft, stiff)  # measured 9.8 / 3.0 px
    assert np.abs(positions[-1, :n] - positions[0, :n]).max() < 1.5e-3  # springing back after the release


def test_displacement_under_the_known_force_scales_as_one_over_E():
    shifts = []
    for scale in (1.0, 2.0):
        setup = build_setup(frames=8, size=(32, 40), E=(3e3 * scale, 12e3 * scale), dt=1e-4, look="endoscopy")
        pos = simulate_positions(setup)  # [8, N, 3]
        hold = pos[4:6, setup.contact].mean(1) - pos[0, setup.contact].mean(0)  # [2, 3] while the force acts
        shifts.append(np.linalg.norm(hold, axis=-1).mean())
    assert 0.4 < shifts[1] / shifts[0] < 0.65, shifts


def test_the_ground_truth_scene_binds_the_discs_and_renders_the_clip(rest_clip):
    scene = ground_truth_scene(rest_clip.out_dir)
    setup, gt = setup_from_clip(rest_clip.out_dir)
    n = setup.appearance.n_discs
    assert [o.name for o in scene.objects] == ["tissue_0", "tissue_1", "support"]
    assert np.array_equal(scene.gaussian_particle[:n], np.arange(n)) and np.all(scene.gaussian_particle[n:] == -1)
    assert len(scene.particles.x) == len(setup.particles.x) > n
    for o in (0, 1):
        assert scene.particles.volume[scene.particles.object_id == o].sum() == pytest.approx(
            gt["objects"][o]["volume_m3"])
    image = clip_observations(rest_clip.out_dir, [0]).images[0]  # [H, W, 3]
    mse = ((scene.render_state(backend="torch").rgb.clamp(0, 1) - image) ** 2).mean()
    assert 10 * torch.log10(1 / mse) > 45  # measured 58.9 dB (8-bit PNG)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(frames=3, size=(32, 40), duration=0.01, look="endoscopy")
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_surgical_scene(tmp_path / name, seed=seed, **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "images" / "000000.png").read_bytes() != (tmp_path / "c" / "images" / "000000.png").read_bytes()
    # the instrument: out of view at first, then in view (pressing from 2 ms), masked where it is grey
    sample = read_endonerf(tmp_path / "a", depth_scale=DEPTH_SCALE)
    mask, rgb = sample.masks["tool"], sample.images.permute(0, 2, 3, 1)  # [3, H, W], [3, H, W, 3]
    assert not mask[0].any() and mask[1].sum() > 20
    spread = rgb.amax(-1) - rgb.amin(-1)  # [3, H, W] 0 for grey
    assert spread[mask].median() < 0.1 < spread[~mask].median()


@pytest.mark.parametrize("kw, message", [
    (dict(look="endoscope"), "look must be one of ('blocks', 'endoscopy'), got 'endoscope'"),
    (dict(look=None), "look must be one of ('blocks', 'endoscopy'), got None"),
    (dict(look="endoscopy", interaction="indent"), "look 'endoscopy' supports interaction 'press' only"),
])
def test_bad_look_is_one_clear_line(tmp_path, kw, message):
    with pytest.raises(ValueError) as e:
        make_surgical_scene(tmp_path, frames=2, **kw)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_record_with_an_unknown_look_is_refused(tmp_path):
    (tmp_path / "ground_truth.json").write_text(json.dumps({"look": "cartoon"}))
    with pytest.raises(SceneError, match=r"ground_truth.json: look expected one of \('blocks', 'endoscopy'\)"):
        setup_from_clip(tmp_path)


def test_depth_png_is_the_rendered_depth(rest_clip):
    s = read_endonerf(rest_clip.out_dir, depth_scale=DEPTH_SCALE)
    assert s.images.shape == (2, 3, 128, 160) and s.masks["tool"].shape == (2, 128, 160)
    assert np.abs(s.depth.numpy() - rest_clip.depth).max() <= 0.5 / DEPTH_SCALE + 1e-6
    assert (s.depth > 0).all()  # the support fills the view
