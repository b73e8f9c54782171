"""The elastic-wave time-step helpers (physics/timestep.py): they agree with the simulator's check,
and the dt a TimeStepError advises is one the simulator accepts."""

import math
import re

import numpy as np
import pytest

from endogsim.physics import (
    Material, MPMConfig, MPMSimulator, TimeStepError, block_particles, max_stable_dt, max_stable_E,
    p_wave_speed, stable_dt,
)
from endogsim.physics.timestep import round_down


def _block():
    return block_particles((0.4, 0.4, 0.4), (0.6, 0.6, 0.6), 1 / 32)


def _advised_dt(err: TimeStepError) -> float:
    """The largest allowed dt the message names (its last number, in s)."""
    return float(re.search(r"dt must be <= .* = ([0-9.e+-]+) s$", str(err)).group(1))


def test_p_wave_speed_and_limit():
    m = Material(E=1e5, nu=0.3, density=1000.0)
    c = math.sqrt(1e5 * 0.7 / (1.3 * 0.4) / 1000.0)  # 11.60 m/s
    assert p_wave_speed(m) == pytest.approx(c, rel=1e-12)
    soft = Material(E=1e3)
    # the stiffest material sets the limit
    assert max_stable_dt([soft, m], 1 / 16, 0.3) == pytest.approx(0.3 / 16 / c, rel=1e-12)


@pytest.mark.parametrize("E", [1e5, 3.3e4, 7.7e6])
def test_advised_elastic_wave_dt_is_accepted(E):
    """At E = 1e5 the message used to print the limit rounded up (0.00162 s), a dt it then refused."""
    materials = [Material(E=E, nu=0.3)]
    limit = max_stable_dt(materials, 1 / 16, 0.3)
    with pytest.raises(TimeStepError, match="elastic-wave limit") as err:
        MPMSimulator(MPMConfig(n_grid=16, dt=math.nextafter(limit, math.inf)), _block(), materials)
    advised = _advised_dt(err.value)
    assert 0.99 * limit < advised <= limit
    MPMSimulator(MPMConfig(n_grid=16, dt=advised), _block(), materials)  # accepted


def test_advised_cfl_dt_is_accepted():
    p = _block()
    p.v[:] = (7.0, 0.0, 0.0)  # limit 0.3 * (1/16) / 7 = 2.6786e-3 s, which .3g would round up
    limit = 0.3 * (1 / 16) / 7.0
    with pytest.raises(TimeStepError, match="CFL limit") as err:
        MPMSimulator(MPMConfig(n_grid=16, dt=math.nextafter(limit, math.inf)), p, [Material(E=1e3)])
    advised = _advised_dt(err.value)
    assert 0.99 * limit < advised <= limit
    MPMSimulator(MPMConfig(n_grid=16, dt=advised), p, [Material(E=1e3)])


def test_round_down_never_exceeds_its_argument():
    assert round_down(0.0016157, 3) == 0.00161
    assert round_down(0.00162, 3) == 0.00162  # an exact 3-digit value stays
    assert round_down(999.99, 3) == 999.0 and round_down(1000.0, 2) == 1000.0
    rng = np.random.default_rng(0)
    for x in 10.0 ** rng.uniform(-8, 8, 500):
        for digits in (2, 3):
            r = round_down(float(x), digits)
            assert r <= x and float(f"{r:.{digits}g}") == r and r > x * (1 - 10 ** (1 - digits))


def test_stable_dt_is_the_scene_rule():
    """safety x the limit rounded down to two significant digits (the scene builders' rule)."""

    def old_rule(materials, dx, cfl=0.3, safety=0.5):
        c = max(math.sqrt(m.E * (1 - m.nu) / ((1 + m.nu) * (1 - 2 * m.nu)) / m.density) for m in materials)
        dt = safety * cfl * dx / c
        mag = 10 ** math.floor(math.log10(dt))
        return math.floor(dt / mag * 10) / 10 * mag

    cases = [([Material(E=1e4), Material(E=5e4, nu=0.25)], 0.01), ([Material(E=3e3, density=1050.0)], 1 / 48),
             ([Material(E=2e5, nu=0.45)], 0.004)]
    for materials, dx in cases:
        for safety in (0.5, 0.9):
            dt = stable_dt(materials, dx, safety=safety)
            assert dt == pytest.approx(old_rule(materials, dx, safety=safety), rel=1e-12)
            assert dt <= safety * max_stable_dt(materials, dx, 0.3)


def test_max_stable_E_is_the_limit_turned_around():
    cfg = MPMConfig(n_grid=16, dt=1e-3)
    base = Material(E=1.0, nu=0.3, density=1100.0)
    E_max = max_stable_E(base, 0.3, cfg.dx, cfg.dt, cfg.cfl)
    at_max = Material(E=E_max, nu=0.3, density=1100.0)
    assert max_stable_dt([at_max], cfg.dx, cfg.cfl) == pytest.approx(cfg.dt)
    assert max_stable_E(base, 0.3, cfg.dx, cfg.dt, cfg.cfl, margin=0.95) == pytest.approx(0.95 * E_max)
    MPMSimulator(cfg, _block(), [Material(E=0.999 * E_max, nu=0.3, density=1100.0)])
    with pytest.raises(TimeStepError):
        MPMSimulator(cfg, _block(), [Material(E=1.001 * E_max, nu=0.3, density=1100.0)])
