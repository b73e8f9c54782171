"""The explicit MPM's elastic-wave time-step limit, in one place.

An explicit solver is stable only while a pressure (P) wave crosses less than a fraction `cfl` of a
cell per substep: dt <= cfl * dx / c, with the P-wave speed

    c = sqrt((lam + 2 mu) / rho) = sqrt(E (1 - nu) / ((1 + nu) (1 - 2 nu) rho))     [m/s]

`MPMSimulator.check_time_step` raises on it; `stable_dt` picks a dt below it; `max_stable_E` turns it
around into a bound on the stiffness (for material fitting). Units: m, s, Pa, kg/m^3.
"""

from __future__ import annotations

import math

from endogsim.physics.config import PhysicsInputError


class TimeStepError(PhysicsInputError):
    """MPMConfig.dt is above a stability limit; the message names the limit and the largest allowed dt."""


def round_down(x: float, digits: int) -> float:
    """x > 0 rounded *down* to `digits` significant digits, as the float its decimal string parses to
    (so that printing it with f"{value:.{digits}g}" and reading it back never exceeds x)."""
    exp = math.floor(math.log10(x)) - digits + 1
    q = math.floor(x / 10.0**exp)
    while q > 1 and float(f"{q}e{exp}") > x:  # float round-off in x / 10^exp
        q -= 1
    while float(f"{q + 1}e{exp}") <= x:
        q += 1
    return float(f"{q}e{exp}")


def p_wave_speed(material) -> float:
    """P-wave speed c (m/s) of a material (anything with E, nu and density, e.g. a `Material`)."""
    E, nu, rho = float(material.E), float(material.nu), float(material.density)
    return math.sqrt(E * (1 - nu) / ((1 + nu) * (1 - 2 * nu)) / rho)


def max_stable_dt(materials, dx: float, cfl: float) -> float:
    """The elastic-wave limit cfl * dx / c (s) of the stiffest of `materials` (a list), dx in m."""
    return min(cfl * dx / p_wave_speed(m) for m in materials)


def stable_dt(materials, dx: float, cfl: float = 0.3, safety: float = 0.5) -> float:
    """safety x the elastic-wave limit over all materials, rounded down to two significant digits."""
    return round_down(safety * max_stable_dt(materials, dx, cfl), 2)


def max_stable_E(material, nu: float, dx: float, dt: float, cfl: float, margin: float = 1.0) -> float:
    """The largest E (Pa) the limit allows at Poisson's ratio nu and the material's density, times
    margin: margin * rho * (cfl dx / dt)^2 * (1 + nu)(1 - 2 nu) / (1 - nu). With an MPMConfig:
    max_stable_E(material, nu, config.dx, config.dt, config.cfl, margin)."""
    c_max = cfl * dx / dt
    return margin * float(material.density) * c_max**2 * (1 + nu) * (1 - 2 * nu) / (1 - nu)


def frame_dt(dt_max: float, frame_interval: float) -> float:
    """The largest dt <= dt_max that divides frame_interval into whole substeps (s)."""
    if not (dt_max > 0 and frame_interval > 0):
        raise PhysicsInputError(f"frame_dt: expected dt_max > 0 and frame_interval > 0, got {dt_max}, {frame_interval}")
    return frame_interval / math.ceil(frame_interval / dt_max - 1e-9)


def with_dt(config, dt: float):
    """An MPMConfig at substep dt with the same damping per second (the grid-velocity multiplier is
    per substep: damping ** (dt / config.dt))."""
    from dataclasses import replace

    return replace(config, dt=float(dt), damping=float(config.damping) ** (dt / config.dt))
