"""Physics checks of the Warp MPM: momentum in free flight, Young's modulus from uniaxial
compression, a dropped block coming to rest on the floor."""

import numpy as np
import pytest

from endogsim.physics import Material, MPMConfig, MPMSimulator, RegionForce, Interactions, block_particles


@pytest.mark.parametrize("model", ["fixed_corotated", "stvk_hencky"])
def test_momentum_conserved_in_free_flight(model):
    cfg = MPMConfig(n_grid=16, dt=1e-3, wall="none")
    p = block_particles((0.4, 0.4, 0.4), (0.6, 0.6, 0.6), 1 / 32)
    c = p.x.mean(0)
    p.v = np.array([0.3, -0.2, 0.1]) + np.cross([0.0, 0.0, 2.0], p.x - c)  # translation + spin
    sim = MPMSimulator(cfg, p, [Material(model=model, E=5e3, nu=0.3)])
    m = sim.masses()[:, None]
    p0 = (m * p.v).sum(0)
    sim.step(150)
    x, v = sim.positions(), sim.velocities()
    assert np.linalg.norm((m * v).sum(0) - p0) < 1e-5 * np.linalg.norm(p0)
    assert np.abs(x - p.x).max() > 0.05  # it did move and spin
    assert sim.n_clamped == 0


def test_uniaxial_compression_recovers_youngs_modulus():
    """Equal and opposite forces on the end layers of a free block (uniaxial stress, lateral sides
    free); at rest the axial strain of the middle half is sigma / E."""
    n = 20
    dx = 1.0 / n
    E, strain_target = 1e4, 0.01
    lo = np.array([0.5 - 3 * dx, 0.5 - 3 * dx, 0.5 - 5 * dx])
    hi = np.array([0.5 + 3 * dx, 0.5 + 3 * dx, 0.5 + 5 * dx])
    p = block_particles(lo, hi, dx / 2)
    area = (hi[0] - lo[0]) * (hi[1] - lo[1])
    force = E * strain_target * area
    layer = dx / 2
    scene = Interactions(forces=[
        RegionForce(lo - 1e-3, (hi[0] + 1e-3, hi[1] + 1e-3, lo[2] + layer), (0, 0, force)),
        RegionForce((lo[0] - 1e-3, lo[1] - 1e-3, hi[2] - layer), hi + 1e-3, (0, 0, -force)),
    ])
    cfg = MPMConfig(n_grid=n, dt=2e-3, damping=0.98, wall="none", check_every=50)
    sim = MPMSimulator(cfg, p, [Material(model="fixed_corotated", E=E, nu=0.3)], scene)
    z0 = p.x[:, 2]
    levels = np.unique(np.round(z0, 9))
    low = np.abs(z0 - levels[len(levels) // 4]) < 1e-6
    high = np.abs(z0 - levels[-1 - len(levels) // 4]) < 1e-6
    gauge = z0[high].mean() - z0[low].mean()
    sim.step(700)
    x = sim.positions()
    strain = 1 - (x[high, 2].mean() - x[low, 2].mean()) / gauge
    E_measured = force / area / strain
    assert abs(E_measured / E - 1) < 0.10, E_measured
    assert np.abs(sim.velocities()).max() < 1e-3  # at rest


def test_dropped_block_comes_to_rest():
    cfg = MPMConfig(n_grid=16, dt=1e-3, gravity=(0, 0, -9.8), damping=0.995, wall="sticky", check_every=10)
    p = block_particles((0.4, 0.4, 0.35), (0.6, 0.6, 0.55), 1 / 32)
    sim = MPMSimulator(cfg, p, [Material(E=5e4, nu=0.3)])
    m = sim.masses()
    peak = 0.0
    for _ in range(80):  # 1.6 s: falls 0.23 m in ~0.2 s, bounces, settles
        sim.step(20)
        peak = max(peak, 0.5 * (m * (sim.velocities() ** 2).sum(1)).sum())
    x, v = sim.positions(), sim.velocities()
    kinetic = 0.5 * (m * (v**2).sum(1)).sum()
    assert peak > 0
    assert kinetic < 1e-4 * peak  # it stopped moving
    floor = cfg.wall_cells * cfg.dx
    assert x[:, 2].min() > floor - cfg.dx  # resting on the floor, not through it
    height = x[:, 2].max() - x[:, 2].min()
    assert 0.14 < height < 0.21  # 0.2 m tall; sagged, widened at the sticky floor, not collapsed
    assert np.isfinite(x).all()
