"""EndoGSim's physics layer: a differentiable MLS-MPM in NVIDIA Warp with surgical interactions."""

from endogsim.physics.config import (
    Grasp,
    Incision,
    Material,
    MPMConfig,
    Particles,
    PhysicsInputError,
    RegionForce,
    Interactions,
    SimulationError,
    StaticBox,
    Tool,
    block_particles,
)
from endogsim.physics.simulator import ClampWarning, MPMSimulator
from endogsim.physics.state import State
from endogsim.physics.timestep import (TimeStepError, frame_dt, max_stable_dt, max_stable_E, p_wave_speed, stable_dt,
                                       with_dt)

__all__ = [
    "ClampWarning", "Grasp", "Incision", "Material", "MPMConfig", "MPMSimulator", "Particles",
    "PhysicsInputError", "RegionForce", "Interactions", "SimulationError", "State", "StaticBox", "TimeStepError",
    "Tool", "block_particles", "frame_dt", "max_stable_dt", "max_stable_E", "p_wave_speed", "stable_dt",
    "with_dt",
]
