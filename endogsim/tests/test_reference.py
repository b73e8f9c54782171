"""The Warp kernels against the pure-PyTorch reference, step by step, for every constitutive model
and every scene element (walls, static box, tool, force, grasp, incision)."""

import numpy as np
import pytest
import torch

from endogsim.physics import (
    Grasp, Incision, Material, MPMConfig, MPMSimulator, RegionForce, Interactions, StaticBox, Tool, block_particles,
)
from endogsim.physics import reference

MODELS = ["fixed_corotated", "neo_hookean", "stvk_hencky", "viscoplastic_stvk"]


def _case(model: str, wall: str = "slip") -> MPMSimulator:
    cfg = MPMConfig(n_grid=12, domain_size=1.0, dt=5e-4, gravity=(0.0, 0.0, -9.8), damping=0.999, wall=wall)
    p = block_particles((0.3, 0.3, 0.18), (0.62, 0.54, 0.46), 1 / 25)  # 8 x 6 x 7 = 336 particles
    rng = np.random.default_rng(0)
    p.v = rng.normal(0, 0.2, p.x.shape)
    scene = Interactions(
        static_boxes=[StaticBox((0.0, 0.0, 0.0), (1.0, 1.0, 0.2))],
        tool=Tool((0.05, 0.05, 0.05), (0.0, 0.1), ((0.46, 0.42, 0.47), (0.46, 0.42, 0.40))),
        forces=[RegionForce((0.3, 0.3, 0.18), (0.4, 0.54, 0.3), (0.0, 2.0, 0.0))],
        grasps=[Grasp((0.55, 0.3, 0.3), (0.62, 0.54, 0.42), (0.0, 0.1), ((0, 0, 0), (0.05, 0.0, 0.02)))],
        incisions=[Incision((0.46, 0.42, 0.3), (1.0, 0.0, 0.0), 0.03, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), time=0.002)],
    )
    mats = [Material(model=model, E=3e3, nu=0.35, density=1000.0, yield_stress=30.0, plastic_viscosity=0.5)]
    return MPMSimulator(cfg, p, mats, scene)


@pytest.mark.parametrize("model", MODELS)
def test_warp_matches_reference_step_by_step(model):
    sim = _case(model, wall="sticky" if model == "neo_hookean" else "slip")
    values = {k: torch.tensor([getattr(m, k) for m in sim.materials], dtype=torch.float64)
              for k in ("E", "nu", "density", "yield_stress", "plastic_viscosity")}
    mat = reference.particle_materials(sim, values)
    assert len(sim.particles.x) >= 300
    plastic_steps = 0
    for s in range(12):
        before = reference.state_from_warp(sim.state)
        expected = reference.substep(sim, before, mat, s)
        got = reference.state_from_warp(sim.step())
        for name, tol in [("x", 1e-6), ("v", 2e-4), ("C", 5e-3), ("F", 5e-5), ("damage", 0)]:
            err = (got[name] - expected[name]).abs().max().item()
            scale = max(expected[name].abs().max().item(), 1.0)
            assert err <= tol * scale, f"substep {s}: {name} differs by {err:.3g}"
        if model == "viscoplastic_stvk":
            plastic_steps += int(not torch.allclose(expected["F"], (torch.eye(3) + sim.config.dt * expected["C"]) @ before["F"]))
    assert sim.state.damage.numpy().max() == 1.0  # the incision happened inside the compared window
    if model == "viscoplastic_stvk":
        assert plastic_steps > 0  # the return mapping was exercised
