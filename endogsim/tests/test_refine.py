"""Material refinement through the MPM and the renderer: a tiny inverse problem moves E towards the
truth, the flow pieces (Lucas-Kanade, splatted simulated flow, flow loss), the time-step bound and
the input checks."""

import math

import numpy as np
import pytest
import torch

from endogsim.physics import (Material, MPMConfig, MPMSimulator, RegionForce, Interactions, StaticBox, TimeStepError,
                              block_particles)
from endogsim.binding import BindingError, Camera, GaussianBinding, StaticGaussians, bind_isotropic, render_particles
from endogsim.flow import flow_loss, lucas_kanade
from endogsim.refine import (Observations, RefineConfig, RefineInputError, refine_materials, simulate_frames,
                             stable_E_max)

H, W = 24, 32
DT, EVERY, FRAMES = 1e-3, 10, 4


def _tiny_problem(E_true=(2e3,)):
    """A 2 x 2 x 1 cm block (or two side by side) anchored at its base, pushed sideways (+y) by a
    known force on its top layer, seen from above at 24 x 32 px."""
    spacing = 0.005
    parts = []
    for o in range(len(E_true)):
        x0 = -0.02 + 0.022 * o
        parts.append(block_particles((x0, -0.01, 0.09), (x0 + 0.02, 0.01, 0.1), spacing, object_id=o))
    x = np.concatenate([p.x for p in parts])
    rng = np.random.default_rng(0)
    from endogsim.physics import Particles

    particles = Particles(x=x, volume=np.concatenate([p.volume for p in parts]),
                          object_id=np.concatenate([p.object_id for p in parts]))
    cfg = MPMConfig(n_grid=10, domain_size=0.1, origin=(-0.05, -0.05, 0.05), dt=DT, damping=0.99, check_every=0)
    scene = Interactions(static_boxes=[StaticBox((-1, -1, 0.0985), (1, 1, 1))],
                  forces=[RegionForce((-1, -1, 0.0), (1, 1, 0.0926), (0.0, 0.06 * len(E_true), 0.0), 0.0, 1.0)])
    materials = [Material(model="neo_hookean", E=e, nu=0.3) for e in E_true]
    colors = rng.uniform(0.2, 1.0, (len(x), 3))
    gaussians = bind_isotropic(particles, colors, 0.6 * spacing)
    K = torch.tensor([[32.0, 0, W / 2], [0, 32.0, H / 2], [0, 0, 1]])
    camera = Camera(K, torch.eye(4), W, H)
    times = torch.arange(FRAMES) * EVERY * DT
    images, _ = simulate_frames(particles, gaussians, materials, cfg, scene, camera, times.numpy())
    obs = Observations(images, torch.zeros(FRAMES, H, W, dtype=torch.bool), times)
    return particles, gaussians, materials, cfg, scene, camera, obs


def test_refinement_moves_E_towards_the_truth_from_a_3x_stiffer_start():
    particles, gaussians, truth, cfg, scene, camera, obs = _tiny_problem()
    start = [Material(model="neo_hookean", E=3 * truth[0].E, nu=0.3)]
    rc = RefineConfig(iterations=4, lr_log_E=0.1, fit_nu=False, w_flow=0.01)
    res = refine_materials(particles, gaussians, start, cfg, scene, camera, obs, rc)
    err0 = abs(math.log10(start[0].E / truth[0].E))
    err = abs(math.log10(res.E[0] / truth[0].E))
    assert err < 0.6 * err0, (res.E, [h["E"] for h in res.history])
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.8 * losses[0]
    assert res.nu == [0.3] and len(res.history) == 5
    assert all(h["grad_log_E"][0] != 0 for h in res.history[:-1])


def test_unfitted_object_keeps_its_value():
    particles, gaussians, truth, cfg, scene, camera, obs = _tiny_problem((2e3, 4e3))
    start = [Material(model="neo_hookean", E=6e3, nu=0.3), Material(model="neo_hookean", E=8e3, nu=0.3)]
    res = refine_materials(particles, gaussians, start, cfg, scene, camera, obs,
                           RefineConfig(iterations=1, objects=(1,), fit_nu=True, w_flow=0.0))
    assert res.E[0] == pytest.approx(6e3) and res.nu[0] == pytest.approx(0.3)
    # object 1 started above the explicit solver's time-step limit: it was brought below it, then fitted
    assert res.history[0]["E"][1] <= stable_E_max(start[1], 0.3, cfg) * 1.0001 < 8e3
    assert res.history[-1]["E"][1] != pytest.approx(res.history[0]["E"][1])


def test_lucas_kanade_recovers_a_subpixel_shift():
    rng = np.random.default_rng(1)
    tex = torch.tensor(rng.uniform(0, 1, (1, 1, 16, 20)), dtype=torch.float64)
    big = torch.nn.functional.interpolate(tex, size=(48, 60), mode="bicubic", align_corners=False)  # smooth texture
    shift = (0.7, -0.4)  # px (x, y): frame 1 = frame 0 moved by the shift
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(60.0), indexing="ij")
    grid = torch.stack([2 * (xs - shift[0]) / 59 - 1, 2 * (ys - shift[1]) / 47 - 1], -1)[None].double()
    moved = torch.nn.functional.grid_sample(big, grid, align_corners=True, padding_mode="border")
    frames = torch.cat([big, moved])[:, 0, :, :, None].expand(-1, -1, -1, 3).float()  # [2, 48, 60, 3]
    flow, valid = lucas_kanade(frames)
    inner = valid[0, 8:-8, 8:-8]
    f = flow[0, 8:-8, 8:-8][inner]  # [P, 2]
    assert inner.float().mean() > 0.5
    assert torch.allclose(f.median(0).values, torch.tensor(shift), atol=0.05)
    # a masked pixel invalidates the windows around it
    mask = torch.zeros(2, 48, 60, dtype=torch.bool)
    mask[0, 20:24, 30:34] = True
    _, valid_m = lucas_kanade(frames, mask)
    assert not valid_m[0, 22, 32] and not valid_m[0, 22, 36]


def test_flow_loss_is_zero_for_identical_flows_and_differentiable():
    flow = torch.randn(3, 8, 9, 2, dtype=torch.float64)
    valid = torch.rand(3, 8, 9) > 0.3
    assert flow_loss(flow, flow.clone(), valid).item() == 0.0
    sim = (flow + 0.1 * torch.randn_like(flow)).requires_grad_(True)
    torch.autograd.gradcheck(lambda s: flow_loss(s, flow, valid), (sim,))
    loss = flow_loss(sim, flow, valid)
    loss.backward()
    assert loss.item() > 0 and sim.grad.abs().sum() > 0
    assert sim.grad[~valid].abs().max() == 0  # invalid pixels do not pull
    with pytest.raises(ValueError, match="shape"):
        flow_loss(flow[:2], flow, None)


def test_rendered_flow_is_the_projected_displacement():
    from endogsim.physics import Particles

    p = Particles(x=np.array([[0.0, 0.0, 0.1]]), volume=np.array([1e-6]), object_id=np.array([0]))
    g = bind_isotropic(p, [[1.0, 1.0, 1.0]], 0.004, opacity=0.99)
    K = torch.tensor([[32.0, 0, W / 2], [0, 32.0, H / 2], [0, 0, 1]])
    cam = Camera(K, torch.eye(4), W, H)
    x0 = torch.tensor([[0.0, 0.0, 0.1]])
    x1 = torch.tensor([[0.003, -0.002, 0.1]])  # 0.96 px right, 0.64 px up
    rgb, flow = render_particles(x0, g, cam, next_positions=x1)
    c = flow[H // 2, W // 2] / rgb[H // 2, W // 2, 0]  # un-premultiply by the rendered alpha (white Gaussian)
    assert torch.allclose(c, torch.tensor([0.96, -0.64]), atol=1e-4)
    # a static background of Gaussians adds colour but no flow
    bg = StaticGaussians.isotropic(np.array([[0.0, 0.0, 0.2]]), [[0.0, 0.0, 1.0]], 0.05)
    rgb2, flow2 = render_particles(x0, g, cam, bg, next_positions=x1)
    assert torch.allclose(flow2, flow, atol=1e-6) and rgb2[0, 0, 2] > 0


def test_E_bound_matches_the_simulator_time_step_check():
    particles, _, _, cfg, scene, _, _ = _tiny_problem()
    E_max = stable_E_max(Material(E=1.0, nu=0.3), 0.3, cfg, margin=1.0)
    MPMSimulator(cfg, particles, [Material(E=0.99 * E_max, nu=0.3)], scene)
    with pytest.raises(TimeStepError):
        MPMSimulator(cfg, particles, [Material(E=1.01 * E_max, nu=0.3)], scene)


def test_bad_input_gets_a_clear_error():
    particles, gaussians, truth, cfg, scene, camera, obs = _tiny_problem()
    go = lambda **kw: refine_materials(**{**dict(particles=particles, gaussians=gaussians, materials=truth,  # noqa: E731
                                                 mpm_config=cfg, scene=scene, camera=camera, observations=obs,
                                                 config=RefineConfig(iterations=0)), **kw})
    with pytest.raises(RefineInputError, match="tool_masks"):
        go(observations=Observations(obs.images, obs.tool_masks[:, :-1], obs.times))
    with pytest.raises(RefineInputError, match="tool_masks"):
        go(observations=Observations(obs.images, obs.tool_masks[:2], obs.times))
    with pytest.raises(RefineInputError, match="camera"):
        go(observations=Observations(obs.images[:, :-2], obs.tool_masks[:, :-2], obs.times))
    with pytest.raises(RefineInputError, match="unknown object id 3"):
        go(config=RefineConfig(iterations=0, objects=(3,)))
    with pytest.raises(RefineInputError, match="object_id"):
        go(materials=[])
    with pytest.raises(RefineInputError, match="times"):
        go(observations=Observations(obs.images, obs.tool_masks, obs.times + 0.0003))
    with pytest.raises(BindingError, match="GaussianBinding.particle"):
        go(gaussians=GaussianBinding(gaussians.particle + 1000, gaussians.offsets, gaussians.colors, gaussians.scales,
                                     gaussians.quats, gaussians.opacities))
    with pytest.raises(RefineInputError, match="flows"):
        go(config=RefineConfig(iterations=0, flow="given"))
    with pytest.raises(RefineInputError, match="RefineConfig.flow"):
        RefineConfig(flow="raft")


def test_relit_frames_equal_the_unlit_at_rest_and_darken_where_the_sheared_top_turns_away():
    from endogsim.lighting import RestLight

    particles, gaussians, materials, cfg, scene, camera, obs = _tiny_problem()
    light = RestLight.of(gaussians, particles.x)
    lit, pos = simulate_frames(particles, gaussians, materials, cfg, scene, camera, obs.times.numpy(), light=light)
    assert torch.allclose(lit[0], obs.images[0], atol=1e-6)  # at rest the light changes nothing
    assert np.allclose(pos, simulate_frames(particles, gaussians, materials, cfg, scene, camera,
                                            obs.times.numpy())[1])
    moved = (lit[-1] - obs.images[-1]).abs().amax(-1) > 1e-4  # [H, W] pixels the light changed
    assert moved.any() and (lit[-1] - obs.images[-1])[moved].mean() < 0  # sheared: turned from the light
