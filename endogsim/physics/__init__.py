"""EndoGSim's physics layer: a differentiable MLS-MPM in NVIDIA Warp with surgical interactions."""

from endogsim.physics.config import (
    Grasp,
    Incision,
    Material,
    MPMConfig,
    Particles,
    PhysicsInputError,
    RegionForce,
    Scene,
    StaticBox,
    Tool,
    block_particles,
)
from endogsim.physics.simulator import MPMSimulator, SimulationError, State, TimeStepError

__all__ = [
    "Grasp", "Incision", "Material", "MPMConfig", "MPMSimulator", "Particles", "PhysicsInputError",
    "RegionForce", "Scene", "SimulationError", "State", "StaticBox", "TimeStepError", "Tool", "block_particles",
]
