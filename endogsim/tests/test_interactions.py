"""Surgical interactions: retraction (grasp), incision (damage), force on a region, the tool."""

import numpy as np

from endogsim.physics import (
    Grasp, Incision, Material, MPMConfig, MPMSimulator, RegionForce, Interactions, StaticBox, Tool, block_particles,
)

DX = 1 / 20
LO, HI = np.array([0.3, 0.425, 0.425]), np.array([0.7, 0.575, 0.575])


def _pulled_apart(cut: bool):
    """A bar grasped at both ends and retracted 5 cm each way, with or without a cut across its middle."""
    p = block_particles(LO, HI, DX / 2)
    path = ((0.0, 0.25, 1.0), ((0, 0, 0), (-0.05, 0, 0), (-0.05, 0, 0)))
    grasps = [
        Grasp(LO - 0.01, (LO[0] + DX, HI[1] + 0.01, HI[2] + 0.01), path[0], path[1]),
        Grasp((HI[0] - DX, LO[1] - 0.01, LO[2] - 0.01), HI + 0.01, path[0], -np.asarray(path[1])),
    ]
    incisions = [Incision((0.5, 0.5, 0.5), (1, 0, 0), DX, (0, 0, 0), (1, 1, 1), time=0.0)] if cut else []
    cfg = MPMConfig(n_grid=20, dt=2e-3, damping=0.99, wall="none", check_every=25)
    sim = MPMSimulator(cfg, p, [Material(E=2e3, nu=0.3)], Interactions(grasps=grasps, incisions=incisions))
    sim.step(200)
    x = sim.positions()
    band = np.abs(p.x[:, 0] - 0.5) < DX
    left, right = (p.x[:, 0] < 0.5) & ~band, (p.x[:, 0] > 0.5) & ~band
    gap0 = p.x[right, 0].min() - p.x[left, 0].max()
    gap = x[right, 0].min() - x[left, 0].max()
    return gap - gap0, sim


def test_incised_bar_separates_and_uncut_one_does_not():
    opened_cut, sim = _pulled_apart(cut=True)
    opened_uncut, _ = _pulled_apart(cut=False)
    assert (sim.state.damage.numpy() == 1.0).sum() > 0
    assert opened_cut > 0.08  # the whole 10 cm retraction opens the cut
    # the intact bar stretches along its length instead: the 12.5 cm around the middle of the
    # 40 cm bar takes about 12.5 / 40 of the 10 cm
    assert opened_uncut < 0.045
    assert opened_cut > 2.5 * opened_uncut


def test_grasped_region_follows_its_path():
    _, sim = _pulled_apart(cut=False)
    p = sim.particles
    held = p.x[:, 0] < LO[0] + DX
    np.testing.assert_allclose(sim.positions()[held, 0] - p.x[held, 0], -0.05, atol=1e-4)


def test_region_force_moves_the_region_with_the_impulse_given():
    cfg = MPMConfig(n_grid=16, dt=1e-3, wall="none")
    p = block_particles((0.4, 0.4, 0.4), (0.6, 0.6, 0.6), 1 / 32)
    impulse = np.array([0.0, 0.4, 0.0])  # N s on the whole 8 kg block
    scene = Interactions(forces=[RegionForce.impulse((0.3, 0.3, 0.3), (0.7, 0.7, 0.7), impulse, time=0.0, dt=cfg.dt)])
    sim = MPMSimulator(cfg, p, [Material(E=5e3)], scene)
    sim.step(30)
    momentum = (sim.masses()[:, None] * sim.velocities()).sum(0)
    np.testing.assert_allclose(momentum, impulse, atol=1e-4)


def test_tool_indents_tissue_on_a_static_support():
    cfg = MPMConfig(n_grid=16, dt=1e-3, wall="slip")
    p = block_particles((0.3, 0.3, 0.25), (0.7, 0.7, 0.45), 1 / 32)
    tool = Tool((0.05, 0.05, 0.05), (0.0, 0.2, 0.6), ((0.5, 0.5, 0.52), (0.5, 0.5, 0.42), (0.5, 0.5, 0.42)))
    scene = Interactions(static_boxes=[StaticBox((0, 0, 0), (1, 1, 0.24))], tool=tool)
    sim = MPMSimulator(cfg, p, [Material(E=5e3, nu=0.3)], scene)
    sim.step(300)
    x = sim.positions()
    under = (np.abs(p.x[:, 0] - 0.5) < 0.04) & (np.abs(p.x[:, 1] - 0.5) < 0.04) & (p.x[:, 2] > 0.42)
    far = (np.abs(p.x[:, 0] - 0.5) > 0.15) & (p.x[:, 2] > 0.42)
    assert (p.x[under, 2] - x[under, 2]).mean() > 0.025  # pushed down by the tool (its face moved 8 cm)
    assert np.abs(x[far, 2] - p.x[far, 2]).mean() < 0.02  # far from the tool the surface barely moves
    bottom = p.x[:, 2] < 0.27  # the lowest layer
    assert np.abs(x[bottom] - p.x[bottom]).max() < 0.02  # the static support holds the bottom (within a cell)
