"""Bad input and unstable runs give one clear error; particles never index outside the grid."""

import warnings

import numpy as np
import pytest
import torch

from endogsim.physics import (
    ClampWarning, Incision, Material, MPMConfig, MPMSimulator, Particles, PhysicsInputError, SimulationError,
    TimeStepError, Tool, Interactions, block_particles,
)


def _block():
    return block_particles((0.4, 0.4, 0.4), (0.6, 0.6, 0.6), 1 / 32)


def test_time_step_above_elastic_wave_limit_raises_before_running():
    # c = sqrt(E (1 - nu) / ((1 + nu)(1 - 2 nu)) / rho) = 11.6 m/s at E = 1e5, dt_max = 0.3 * dx / c = 1.6 ms
    cfg = MPMConfig(n_grid=16, dt=5e-3)
    with pytest.raises(TimeStepError,
                       match=r"elastic-wave limit.*E = 1e\+05 Pa.*dt must be <= .* = 0\.00[0-9]+ s"):
        MPMSimulator(cfg, _block(), [Material(E=1e5, nu=0.3, density=1000.0)])
    c = np.sqrt(1e5 * 0.7 / (1.3 * 0.4) / 1000.0)
    just_below = MPMConfig(n_grid=16, dt=0.99 * 0.3 * (1 / 16) / c)
    MPMSimulator(just_below, _block(), [Material(E=1e5)])  # fine


def test_time_step_above_cfl_limit_raises():
    p = _block()
    p.v[:] = (20.0, 0.0, 0.0)
    with pytest.raises(TimeStepError, match="CFL limit for the initial particle velocity"):
        MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), p, [Material(E=1e3)])
    tool = Tool((0.05, 0.05, 0.05), (0.0, 0.01), ((0.5, 0.5, 0.8), (0.5, 0.5, 0.6)))  # 20 m/s
    with pytest.raises(TimeStepError, match="Tool path"):
        MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), _block(), [Material(E=1e3)], Interactions(tool=tool))


def test_rollout_checks_the_time_step_for_the_parameters_it_is_given():
    sim = MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), _block(), [Material(E=1e3)])
    with pytest.raises(TimeStepError, match="object 0"):
        sim.rollout(4, 2, E=torch.tensor([1e7]))


def _leaving_block():
    """A block heading out through the +x face of an 8^3 grid at 3 m/s."""
    cfg = MPMConfig(n_grid=8, dt=2e-3, wall="none", check_every=0)
    p = block_particles((0.7, 0.4, 0.4), (0.8, 0.5, 0.5), 1 / 16)
    p.v[:] = (3.0, 0.0, 0.0)
    return MPMSimulator(cfg, p, [Material(E=1e2, density=1000.0)])


def test_particles_leaving_the_grid_are_clamped_and_counted(warp_debug):
    # debug mode: Warp bounds-checks every array access, so an out-of-grid index would fail here
    sim = _leaving_block()
    with pytest.warns(ClampWarning, match=r"step\(\): by substep 40: \d+ particle positions were clamped.*"
                                          r"Enlarge the domain \(MPMConfig.n_grid"):
        sim.step(40)
    x = sim.positions()
    assert sim.n_clamped > 0
    assert x[:, 0].max() <= 1.0 - sim.config.dx + 1e-6
    assert np.isfinite(x).all()


def test_clamping_warns_once_per_run():
    sim = _leaving_block()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # so a repeated warning would be seen, not deduplicated
        for _ in range(8):
            sim.step(5)  # clamping in most calls, many particles per substep
        first_run = [w for w in caught if issubclass(w.category, ClampWarning)]
        assert len(first_run) == 1 and sim.n_clamped > 1
        sim.reset()  # a new run warns again
        sim.step(40)
        sim.rollout(40, 20, E=torch.tensor([1e2]))  # a rollout is a run of its own
    clamp = [w for w in caught if issubclass(w.category, ClampWarning)]
    assert len(clamp) == 3, [str(w.message) for w in clamp]
    assert "rollout() of 40 substeps" in str(clamp[2].message)


def test_no_clamp_warning_when_nothing_is_clamped():
    sim = MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), _block(), [Material(E=1e3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim.step(30)
        sim.rollout(10, 10, E=torch.tensor([1e3]))
    assert sim.n_clamped == 0
    assert not [w for w in caught if issubclass(w.category, ClampWarning)]


def test_exploding_velocity_stops_the_run_naming_substep_and_particle():
    cfg = MPMConfig(n_grid=16, dt=1e-3, gravity=(0, 0, -9.8), wall="none", max_speed=0.05)
    sim = MPMSimulator(cfg, _block(), [Material(E=1e3)])
    # free fall: |v| = 9.8 t exceeds 0.05 m/s after 0.05 / 9.8 = 5.1 ms, i.e. at substep 6
    with pytest.raises(SimulationError, match=r"substep 6: particle \d+ has x = .*v = "):
        sim.step(20)


def test_nan_stops_the_run_naming_the_particle():
    sim = MPMSimulator(MPMConfig(n_grid=16, dt=1e-3), _block(), [Material(E=1e3)])
    v = sim.state.v.numpy()
    v[7] = np.nan  # a corrupted state
    sim.state.v.assign(v)
    with pytest.raises(SimulationError, match="substep 1: particle"):
        sim.step(1)


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: MPMConfig(n_grid=2), "MPMConfig.n_grid"),
        (lambda: MPMConfig(dt=-1.0), "MPMConfig.dt"),
        (lambda: MPMConfig(wall="bouncy"), "MPMConfig.wall"),
        (lambda: MPMConfig(device="tpu"), "MPMConfig.device"),
        (lambda: Material(model="jelly"), "Material.model"),
        (lambda: Material(nu=0.5), "Material.nu"),
        (lambda: Material(E=0.0), "Material.E"),
        (lambda: Particles(np.zeros((4, 2)), np.ones(4), np.zeros(4, int)), "Particles.x"),
        (lambda: Particles(np.zeros((4, 3)), np.ones(3), np.zeros(4, int)), "Particles.volume"),
        (lambda: Incision((0, 0, 0), (0, 0, 0), 0.1, (0, 0, 0), (1, 1, 1)), "Incision.normal"),
        (lambda: Tool((0.1, 0.1, 0.1), (0.0, 0.0), ((0, 0, 0), (1, 1, 1))), "Tool.times"),
        (lambda: MPMSimulator(MPMConfig(), _block(), [Material()] * 0), "materials"),
        (lambda: MPMSimulator(MPMConfig(), Particles(np.full((2, 3), 0.99), np.ones(2), np.zeros(2, int)),
                              [Material()]), "Particles.x"),
        (lambda: MPMSimulator(MPMConfig(), _block(), [Material()]).rollout(10, 3), "rollout"),
    ],
)
def test_bad_input_names_the_field(make, field):
    with pytest.raises(PhysicsInputError, match=field.replace(".", r"\.")):
        make()
