"""The synthetic surgical clip: EndoNeRF layout read back by common's reader, the known-force press seen in
the particles and the rendered depth, 1/E scaling, stiffness ordering, the indent mode, determinism and input checks."""

import json

import numpy as np
import pytest
import torch

from common.datasets import read_endonerf
from endogsim.synthetic_scene import (DEPTH_SCALE, TOOL_COLOR, TOOL_HALF, TOP_Z, build_setup, make_surgical_scene,
                                      simulate_positions)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic_clip")
    return make_surgical_scene(out, seed=0, frames=16, size=(64, 80), look="blocks")


def _deepest(clip) -> int:
    return int(np.argmax(clip.tool_centers[:, 2]))  # the frame with the tool furthest into the tissue


def test_reader_reads_the_clip_back(clip):
    s = read_endonerf(clip.out_dir, depth_scale=DEPTH_SCALE)
    assert s.images.shape == (16, 3, 64, 80)
    assert s.depth.shape == s.masks["tool"].shape == (16, 64, 80)
    torch.testing.assert_close(s.K, clip.K.expand(16, 3, 3))
    torch.testing.assert_close(s.w2c, torch.eye(4).expand(16, 4, 4))
    # depth read back in metres within half a quantisation step of what was rendered
    err = np.abs(s.depth.numpy() - clip.depth)
    assert err.max() <= 0.5 / DEPTH_SCALE + 1e-6
    assert (s.depth > 0).float().mean() > 0.9  # the support fills the view
    gt = json.loads((clip.out_dir / "ground_truth.json").read_text())
    assert [o["E"] for o in gt["objects"]] == [3e3, 12e3] and gt["depth_scale"] == DEPTH_SCALE and gt["seed"] == 0
    assert len(gt["frame_times"]) == 16
    assert gt["interaction"]["kind"] == "press" and gt["interaction"]["num_contact_particles"] > 20


def test_tool_mask_marks_the_rendered_tool(clip):
    s = read_endonerf(clip.out_dir, depth_scale=DEPTH_SCALE)
    mask = s.masks["tool"]  # [F, H, W]
    # the tool is in view where its box's innermost edge (in y, on its far face) projects inside the image
    f, H = clip.K[0, 0].item(), clip.height
    in_view = [abs(c[1]) - clip.tool_half_extent[1] < (H / 2) * (c[2] + clip.tool_half_extent[2]) / f
               for c in clip.tool_centers]
    assert not in_view[0] and not in_view[-1] and sum(in_view) >= 10
    for i, seen in enumerate(in_view):
        assert bool(mask[i].any()) == seen, i
    # masked pixels have the tool's grey, the others (almost) never do
    grey = (s.images.permute(0, 2, 3, 1) - torch.tensor(TOOL_COLOR)).abs().amax(-1) < 0.08  # [F, H, W]
    assert grey[mask].float().mean() > 0.9
    assert grey[~mask].float().mean() < 0.02


def test_the_press_moves_the_contact_region_along_the_force_and_it_springs_back(clip):
    k = _deepest(clip)  # the tool rides on the pushed tissue, so its deepest frame is under the force
    c = clip.setup.contact  # [N] the particles that take the force
    x0, xk = clip.positions[0], clip.positions[k]
    assert c.sum() > 20
    d = (xk[c] - x0[c]).mean(0)  # [3] m
    assert d[1] > 0.0015 and d[2] > 0.0003  # sideways (+y) by > 1.5 mm and into the tissue (+z)
    far = (np.abs(x0[:, 0]) > TOOL_HALF[0] + 0.01) & (x0[:, 2] < TOP_Z + 0.003)
    assert np.linalg.norm(xk[far] - x0[far], axis=1).mean() < 0.3 * np.linalg.norm(d)
    # rendered tissue depth at the tool's footprint increases
    s = read_endonerf(clip.out_dir, depth_scale=DEPTH_SCALE)
    foot = s.masks["tool"][k].numpy()
    assert (clip.tissue_depth[k][foot] - clip.tissue_depth[0][foot]).mean() > 0.0002
    # after the release the tissue springs back near rest
    assert np.abs(clip.positions[-1][c] - x0[c]).mean() < 0.0002


def test_displacement_under_the_known_force_scales_as_one_over_E():
    # what makes E identifiable from images: twice the stiffness, half the displacement
    shifts = []
    for scale in (1.0, 2.0):
        setup = build_setup(frames=8, size=(16, 20), E=(3e3 * scale, 12e3 * scale), dt=1e-4, look="blocks")
        pos = simulate_positions(setup)  # [8, N, 3]
        hold = pos[4:7, setup.contact].mean(1) - pos[0, setup.contact].mean(0)  # [3, 3] while the force acts
        shifts.append(np.linalg.norm(hold, axis=-1).mean())
    assert 0.4 < shifts[1] / shifts[0] < 0.65, shifts


def test_indent_mode_keeps_the_displacement_driven_tool(tmp_path):
    clip = make_surgical_scene(tmp_path, frames=16, size=(32, 40), interaction="indent", look="blocks")
    k = _deepest(clip)
    x0, xk = clip.positions[0], clip.positions[k]
    half = clip.tool_half_extent
    under = (np.abs(x0[:, 0]) < half[0]) & (np.abs(x0[:, 1]) < half[1]) & (x0[:, 2] < TOP_Z + 0.003)
    assert under.sum() > 20
    assert (xk[under, 2] - x0[under, 2]).mean() > 0.0015  # pushed away from the camera by > 1.5 mm
    assert np.abs(clip.positions[-1][under, 2] - x0[under, 2]).mean() < 0.0005  # back near rest
    gt = json.loads((clip.out_dir / "ground_truth.json").read_text())
    assert gt["interaction"]["kind"] == "indent"


def test_stiffer_block_deforms_less(clip):
    k = _deepest(clip)
    disp = np.linalg.norm(clip.positions[k] - clip.positions[0], axis=1)  # [N]
    soft = disp[clip.object_id == 0].mean()
    stiff = disp[clip.object_id == 1].mean()
    assert clip.materials[1].E > clip.materials[0].E
    assert soft > 1e-4 and stiff < 0.8 * soft


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(frames=3, size=(24, 30), duration=0.1, look="blocks")
    make_surgical_scene(tmp_path / "a", seed=3, **kw)
    make_surgical_scene(tmp_path / "b", seed=3, **kw)
    make_surgical_scene(tmp_path / "c", seed=4, **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a" / "images" / "000000.png").read_bytes() != (tmp_path / "c" / "images" / "000000.png").read_bytes()


@pytest.mark.parametrize("kw, field", [
    (dict(frames=1), "frames"), (dict(frames=2.5), "frames"),
    (dict(size=(0, 80)), "size"), (dict(size=(64, -1)), "size"), (dict(size=(64,)), "size"),
    (dict(interaction="poke"), "interaction"),
])
def test_bad_input_raises_a_clear_error(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        make_surgical_scene(tmp_path, **kw)
    assert not any(tmp_path.iterdir())  # nothing written
