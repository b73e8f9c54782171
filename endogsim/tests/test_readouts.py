"""What the simulator computes, read back: the Cauchy stress of the particles against the
constitutive formulas, and the contact forces on the floor, a static box and the tool against the
weight of a block resting on them."""

import numpy as np
import pytest
import warp as wp

from endogsim.physics import Material, MPMConfig, MPMSimulator, Interactions, StaticBox, Tool, block_particles

E, NU = 1e4, 0.3
MU, LAM = E / (2 * (1 + NU)), E * NU / ((1 + NU) * (1 - 2 * NU))
MODELS = ["fixed_corotated", "neo_hookean", "stvk_hencky", "viscoplastic_stvk"]


def _sim(model: str) -> MPMSimulator:
    p = block_particles((0.4, 0.4, 0.4), (0.6, 0.6, 0.6), 1 / 16)  # 27 particles
    return MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), p, [Material(model=model, E=E, nu=NU)])


def _set_F(sim: MPMSimulator, F: np.ndarray, damage: float = 0.0) -> None:
    Fs = np.tile(F.astype(np.float32), (sim.n, 1, 1))  # [N, 3, 3]
    sim.state.F.assign(wp.array(Fs, dtype=wp.mat33, device=sim.device))
    sim.state.damage.fill_(damage)


def _principal_cauchy(model: str, stretch: np.ndarray) -> np.ndarray:
    """Cauchy stress [3] of F = diag(stretch) from the textbook formulas."""
    J = stretch.prod()
    if model == "neo_hookean":  # tau = mu (F F^T - I) + lam ln J I
        tau = MU * (stretch**2 - 1) + LAM * np.log(J)
    elif model == "fixed_corotated":  # tau = 2 mu (F - R) F^T + lam J (J - 1) I, R = I
        tau = 2 * MU * (stretch - 1) * stretch + LAM * J * (J - 1)
    else:  # Hencky StVK: tau = 2 mu ln(stretch) + lam tr(ln stretch)
        tau = 2 * MU * np.log(stretch) + LAM * np.log(stretch).sum()
    return tau / J


@pytest.mark.parametrize("model", MODELS)
def test_undeformed_particles_have_zero_stress(model):
    sigma = _sim(model).stress()
    assert sigma.shape == (27, 3, 3)
    assert np.abs(sigma).max() < 1e-6 * E


@pytest.mark.parametrize("model", MODELS)
def test_stress_of_a_stretched_block_matches_the_formulas(model):
    sim = _sim(model)
    # uniaxial strain eps along x: linear elasticity gives sigma_xx = (lam + 2 mu) eps, sigma_yy = lam eps
    eps = 1e-3
    _set_F(sim, np.diag([1 + eps, 1.0, 1.0]))
    sigma = sim.stress()
    linear = np.diag([(LAM + 2 * MU) * eps, LAM * eps, LAM * eps])
    np.testing.assert_allclose(sigma, np.broadcast_to(linear, sigma.shape), rtol=0, atol=5e-3 * LAM * eps * 3)
    # large triaxial stretch, rotated: sigma(Q S) = Q sigma(S) Q^T with the model's own formula
    stretch = np.array([1.3, 0.85, 1.1])
    a = 0.7
    Q = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    _set_F(sim, Q @ np.diag(stretch))
    expected = Q @ np.diag(_principal_cauchy(model, stretch)) @ Q.T
    np.testing.assert_allclose(sim.stress()[0], expected, rtol=0, atol=2e-3 * np.abs(expected).max())
    # a damaged particle carries (1 - damage) of it
    _set_F(sim, Q @ np.diag(stretch), damage=0.75)
    np.testing.assert_allclose(sim.stress()[0], 0.25 * expected, rtol=0, atol=2e-3 * np.abs(expected).max())


def _resting_block(support: str) -> MPMSimulator:
    """A 20 x 20 x 12.5 cm block (E = 50 kPa) released on the nodes z <= 1 dx of a 16^3 grid, held by
    the floor wall, a static box or a resting tool, under gravity."""
    dx = 1 / 16
    p = block_particles((0.4, 0.4, 2 * dx), (0.6, 0.6, 0.25), 1 / 32)
    scene, wall = Interactions(), "none"
    if support == "floor":
        wall = "slip"  # wall_cells = 2: the nodes z = 0, dx
    elif support == "static box":
        scene = Interactions(static_boxes=[StaticBox((0.2, 0.2, 0.0), (0.8, 0.8, 1.5 * dx))])
    else:
        scene = Interactions(tool=Tool((0.3, 0.3, 0.75 * dx), (0.0, 100.0), ((0.5, 0.5, 0.75 * dx),) * 2))
    cfg = MPMConfig(n_grid=16, dt=1e-3, gravity=(0, 0, -9.8), damping=0.99, wall=wall, check_every=50)
    return MPMSimulator(cfg, p, [Material(E=5e4, nu=0.3)], scene)


@pytest.mark.parametrize("support, channel", [("floor", "walls"), ("static box", "walls"), ("tool", "tool")])
def test_a_resting_block_pushes_its_weight_on_its_support(support, channel):
    sim = _resting_block(support)
    assert all(np.all(f == 0) for f in sim.contact_forces().values())  # nothing recorded before a step
    weight = sim.masses().sum() * 9.8
    sim.step(500)  # settle (0.5 s)
    sim.step(200)  # averaged over this call
    forces = sim.contact_forces()
    assert np.abs(sim.velocities()).max() < 1e-2
    np.testing.assert_allclose(forces[channel], (0, 0, -weight), atol=0.05 * weight)  # grid damping takes ~1%
    other = "tool" if channel == "walls" else "walls"
    assert np.abs(forces[other]).max() == 0.0
