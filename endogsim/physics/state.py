"""The Warp arrays of one MPM substep: the particle state it reads / writes and the grid scratch.

Every substep writes a fresh State (never in place), so a `wp.Tape` over many substeps keeps
every value its adjoint needs; `requires_grad` arrays are the ones the tape differentiates.
"""

from __future__ import annotations

from dataclasses import dataclass

import warp as wp


@dataclass
class State:
    """Particle state at one substep. x, v [N] vec3; C (APIC affine velocity), F (elastic
    deformation gradient) [N] mat33; damage [N] in [0, 1] (stress is scaled by 1 - damage)."""

    x: wp.array
    v: wp.array
    C: wp.array
    F: wp.array
    damage: wp.array

    @staticmethod
    def zeros(n: int, device, requires_grad: bool) -> "State":
        return State(
            x=wp.zeros(n, dtype=wp.vec3, device=device, requires_grad=requires_grad),
            v=wp.zeros(n, dtype=wp.vec3, device=device, requires_grad=requires_grad),
            C=wp.zeros(n, dtype=wp.mat33, device=device, requires_grad=requires_grad),
            F=wp.zeros(n, dtype=wp.mat33, device=device, requires_grad=requires_grad),
            damage=wp.zeros(n, dtype=float, device=device),
        )

    def copy_from(self, other: "State") -> None:
        for name in ("x", "v", "C", "F", "damage"):
            wp.copy(getattr(self, name), getattr(other, name))

    def differentiable(self) -> list:
        return [self.x, self.v, self.C, self.F]


class Grid:
    """Scratch arrays of one substep: grid momentum, mass and velocity [n+1, n+1, n+1], and the
    per-group force accelerations and grasp velocities of that substep."""

    def __init__(self, n_nodes: int, n_forces: int, n_grasps: int, device, requires_grad: bool):
        shape = (n_nodes,) * 3
        self.mv = wp.zeros(shape, dtype=wp.vec3, device=device, requires_grad=requires_grad)
        self.m = wp.zeros(shape, dtype=float, device=device, requires_grad=requires_grad)
        self.v = wp.zeros(shape, dtype=wp.vec3, device=device, requires_grad=requires_grad)
        self.force_accel = wp.zeros(max(n_forces, 1), dtype=wp.vec3, device=device)
        self.grasp_velocity = wp.zeros(max(n_grasps, 1), dtype=wp.vec3, device=device)

    def differentiable(self) -> list:
        return [self.mv, self.m, self.v]
