"""The MPM simulator: one object with `step()` for forward runs and `rollout()` for differentiable
ones (rollout.py: a `torch.autograd.Function` over a Warp tape, with optional checkpointed segments),
and read-outs of what a forward run computes: positions, velocities, Cauchy stress, contact forces.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import torch
import warp as wp

from endogsim.physics import kernels
from endogsim.physics import rollout as _rollout
from endogsim.physics.config import (
    MODELS,
    WALLS,
    Material,
    MPMConfig,
    Particles,
    PhysicsInputError,
    Interactions,
    SimulationError,
    path_point,
    path_velocity,
)
from endogsim.physics.rollout import PARAMS
from endogsim.physics.state import Grid, State
from endogsim.physics.timestep import TimeStepError, max_stable_dt, p_wave_speed, round_down


class ClampWarning(UserWarning):
    """Particles reached the grid's edge and had their positions clamped (once per run; the count
    keeps growing in `MPMSimulator.n_clamped`)."""


def _in_box(x: np.ndarray, lo, hi) -> np.ndarray:
    return np.all((x >= np.asarray(lo)) & (x <= np.asarray(hi)), axis=1)


def _path_speed(times: np.ndarray, points: np.ndarray) -> float:
    """Top speed (m/s) of a piecewise-linear path, times [K], points [K, 3]."""
    return float((np.linalg.norm(np.diff(points, axis=0), axis=1) / np.diff(times)).max())


class MPMSimulator:
    """MLS-MPM on Warp's `cpu` or `cuda` device (MPMConfig.device).

    materials[o] is the material of object o; particles.object_id picks each particle's object.
    `step()` advances `self.state` (forward only); `rollout()` runs from the initial state and is
    differentiable with respect to the per-object material parameters. After step(): `stress()`
    (Cauchy, per particle) and `contact_forces()` (on the walls and the tool).
    """

    def __init__(self, config: MPMConfig, particles: Particles, materials: list, scene: Interactions | None = None):
        if not isinstance(config, MPMConfig):
            raise PhysicsInputError(f"config: expected an MPMConfig, got {type(config).__name__}")
        if not isinstance(materials, (list, tuple)) or not materials \
                or not all(isinstance(m, Material) for m in materials):
            raise PhysicsInputError("materials: expected a non-empty list of Material")
        scene = Interactions() if scene is None else scene
        if not isinstance(scene, Interactions):
            raise PhysicsInputError(f"scene: expected a Interactions or None, got {type(scene).__name__}")
        if particles.object_id.max() >= len(materials):
            raise PhysicsInputError(
                f"Particles.object_id: expected ids < {len(materials)} (the number of materials), "
                f"got {int(particles.object_id.max())}"
            )
        wp.init()
        self.config, self.particles, self.materials, self.scene = config, particles, list(materials), scene
        self.device = wp.get_device(config.device)
        self.n = len(particles.x)
        cfg = config
        self.dx = cfg.dx
        self.origin = np.asarray(cfg.origin)
        lo = self.origin + self.dx
        hi = self.origin + (cfg.n_grid - 1) * self.dx
        outside = ~_in_box(particles.x, lo, hi)
        if outside.any():
            p = int(np.argmax(outside))
            raise PhysicsInputError(
                f"Particles.x: expected every particle inside [{lo.tolist()}, {hi.tolist()}] (the grid less "
                f"one cell), particle {p} is at {particles.x[p].tolist()} ({int(outside.sum())} outside)"
            )
        self.x_min, self.x_max = wp.vec3(*lo), wp.vec3(*hi)
        self.max_speed = cfg.max_speed if cfg.max_speed is not None else self.dx / cfg.dt

        dev = self.device
        self.object_id = wp.array(particles.object_id.astype(np.int32), dtype=int, device=dev)
        self.volume = wp.array(particles.volume.astype(np.float32), dtype=float, device=dev)
        model = np.array([MODELS[materials[o].model] for o in particles.object_id], dtype=np.int32)
        self.model = wp.array(model, dtype=int, device=dev)
        # per-object material table [n_objects] each, the leaves of the gradient
        self.params = {
            name: wp.array(np.array([getattr(m, name) for m in materials], np.float32), dtype=float,
                           device=dev, requires_grad=True)
            for name in PARAMS
        }
        self.mat = {
            name: wp.zeros(self.n, dtype=float, device=dev, requires_grad=True)
            for name in ("mu", "lam", "mass", "yield_stress", "viscosity")
        }

        # scene tables: group ids per particle, static node mask
        x0 = particles.x
        mass0 = particles.volume * np.array([m.density for m in materials])[particles.object_id]
        force_group = np.full(self.n, -1, np.int32)
        self._force_mass = []
        for g, f in enumerate(scene.forces):
            inside = _in_box(x0, f.lo, f.hi) & (force_group < 0)
            if not inside.any():
                raise PhysicsInputError(
                    f"Interactions.forces[{g}]: expected particles inside [{f.lo}, {f.hi}], found none")
            force_group[inside] = g
            self._force_mass.append(mass0[inside].sum())
        grasp_group = np.full(self.n, -1, np.int32)
        for g, gr in enumerate(scene.grasps):
            inside = _in_box(x0, gr.lo, gr.hi) & (grasp_group < 0)
            if not inside.any():
                raise PhysicsInputError(
                    f"Interactions.grasps[{g}]: expected particles inside [{gr.lo}, {gr.hi}], found none")
            grasp_group[inside] = g
        self.force_group = wp.array(force_group, dtype=int, device=dev)
        self.grasp_group = wp.array(grasp_group, dtype=int, device=dev)
        nodes = cfg.n_grid + 1
        ijk = np.stack(np.meshgrid(*[np.arange(nodes)] * 3, indexing="ij"), -1)
        node_pos = self.origin + self.dx * ijk  # [n+1, n+1, n+1, 3]
        mask = np.zeros((nodes,) * 3, np.int32)
        for b in scene.static_boxes:
            mask |= np.all((node_pos >= b.lo) & (node_pos <= b.hi), axis=-1)
        self.static_mask = wp.array(mask, dtype=int, device=dev)
        self._cut_substeps = {}
        for i, c in enumerate(scene.incisions):
            s = int(math.floor(c.time / cfg.dt + 1e-6))
            if s in self._cut_substeps:
                raise PhysicsInputError(
                    f"Interactions.incisions[{i}]: expected at most one incision per substep, two fall in "
                    f"substep {s}")
            self._cut_substeps[s] = c
        self.min_mass = float(1e-9 * mass0.mean())

        self.check_time_step()
        # clamping events of step() since reset(), of the last rollout, of backward re-simulation
        self.clamped = wp.zeros(1, dtype=int, device=dev)
        self._rollout_clamped = wp.zeros(1, dtype=int, device=dev)
        self._replay_clamped = wp.zeros(1, dtype=int, device=dev)
        self._clamp_warned = False  # step() warns once per run (reset() starts a run)
        # momentum the walls + static boxes [0] and the tool [1] removed in the last step() call
        self._removed = wp.zeros(2, dtype=wp.vec3, device=dev)
        self._removed_over = 0.0  # s, the time the last step() call covered
        self._first_bad = wp.zeros(1, dtype=int, device=dev)
        self._ping = [State.zeros(self.n, dev, False), State.zeros(self.n, dev, False)]
        self._grid = Grid(nodes, len(scene.forces), len(scene.grasps), dev, False)
        self._segment = None  # (length, states, grids) reused by differentiable rollouts
        self._update_materials()
        self.reset()

    # ------------------------------------------------------------------ setup and checks
    def initial_state(self, out: State) -> None:
        p = self.particles
        F0 = np.tile(np.eye(3, dtype=np.float32), (self.n, 1, 1))
        out.x.assign(wp.array(p.x.astype(np.float32), dtype=wp.vec3, device=self.device))
        out.v.assign(wp.array(p.v.astype(np.float32), dtype=wp.vec3, device=self.device))
        out.C.zero_()
        out.F.assign(wp.array(F0, dtype=wp.mat33, device=self.device))
        out.damage.zero_()

    def reset(self) -> None:
        """Back to the initial particles at substep 0 (a new run for the clamping warning)."""
        self.substep = 0
        self.clamped.zero_()
        self._clamp_warned = False
        self._removed.zero_()
        self._removed_over = 0.0
        self.initial_state(self._ping[0])
        self.state = self._ping[0]

    def check_time_step(self, values: dict | None = None) -> None:
        """Raise TimeStepError if dt exceeds the elastic-wave limit cfl * dx / c (c the P-wave speed
        of any object, see timestep.py) or the CFL limit cfl * dx / |v| for the initial particle,
        tool and grasp speeds. `values`: per-object parameter arrays overriding the materials'."""
        cfg = self.config
        for o, m in enumerate(self.materials):
            if values is not None:
                m = replace(m, **{k: float(values[k][o]) for k in ("E", "nu", "density")})
            c, dt_max = p_wave_speed(m), max_stable_dt([m], self.dx, cfg.cfl)
            if cfg.dt > dt_max:
                # the advised dt is rounded down, so that it passes this check
                raise TimeStepError(
                    f"MPMConfig.dt = {cfg.dt:.3g} s exceeds the elastic-wave limit for object {o} "
                    f"(E = {m.E:.4g} Pa, nu = {m.nu:.3g}, density = {m.density:.4g} kg/m^3): P-wave speed "
                    f"c = {c:.4g} m/s, dx = {self.dx:.4g} m, so dt must be <= cfl * dx / c = {cfg.cfl} * "
                    f"{self.dx:.4g} / {c:.4g} = {round_down(dt_max, 3):.3g} s"
                )
        speeds = {"initial particle velocity": float(np.linalg.norm(self.particles.v, axis=1).max())}
        if self.scene.tool is not None:
            t = self.scene.tool
            speeds["Tool path"] = _path_speed(t.times, t.centers)
        for g, gr in enumerate(self.scene.grasps):
            speeds[f"Grasp {g} path"] = _path_speed(gr.times, gr.offsets)
        for what, speed in speeds.items():
            if speed > 0 and cfg.dt > cfg.cfl * self.dx / speed:
                raise TimeStepError(
                    f"MPMConfig.dt = {cfg.dt:.3g} s exceeds the CFL limit for the {what} ({speed:.4g} m/s): "
                    f"dt must be <= cfl * dx / speed = {cfg.cfl} * {self.dx:.4g} / {speed:.4g} = "
                    f"{round_down(cfg.cfl * self.dx / speed, 3):.3g} s"
                )

    def _update_materials(self) -> None:
        p, m = self.params, self.mat
        wp.launch(
            kernels.particle_materials,
            dim=self.n,
            inputs=[self.object_id, self.volume, p["E"], p["nu"], p["density"], p["yield_stress"],
                    p["plastic_viscosity"]],
            outputs=[m["mu"], m["lam"], m["mass"], m["yield_stress"], m["viscosity"]],
            device=self.device,
        )

    def _check(self, state: State, substep: int) -> None:
        """Stop the run at the first particle with a NaN / inf or a speed above max_speed."""
        self._first_bad.fill_(self.n)
        wp.launch(kernels.find_bad_particle, dim=self.n,
                  inputs=[state.x, state.v, self.max_speed, self._first_bad], device=self.device)
        p = int(self._first_bad.numpy()[0])
        if p < self.n:
            x, v = state.x.numpy()[p], state.v.numpy()[p]
            raise SimulationError(
                f"substep {substep}: particle {p} has x = {x.tolist()}, v = {v.tolist()} "
                f"(|v| = {np.linalg.norm(v):.4g} m/s; NaN/inf or above max_speed = "
                f"{self.max_speed:.4g} m/s). Lower MPMConfig.dt or the stiffness, or check the scene."
            )

    def _warn_clamped(self, count: int, run: str) -> None:
        warnings.warn(
            f"{run}: {count} particle positions were clamped to the grid's edge (particles reached the "
            f"domain boundary, where the motion is not physical). Enlarge the domain (MPMConfig.n_grid / "
            f"domain_size) or move MPMConfig.origin so that the particles stay at least one cell inside.",
            ClampWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ one substep
    def _fill_grid_inputs(self, grid: Grid, substep: int) -> None:
        t = substep * self.config.dt
        if self.scene.forces:
            acc = np.zeros((len(self.scene.forces), 3), np.float32)
            for g, f in enumerate(self.scene.forces):
                if f.start <= t < f.end:
                    acc[g] = np.asarray(f.force) / self._force_mass[g]
            grid.force_accel.assign(wp.array(acc, dtype=wp.vec3, device=self.device))
        if self.scene.grasps:
            vel = np.array([path_velocity(g.times, g.offsets, t) for g in self.scene.grasps], np.float32)
            grid.grasp_velocity.assign(wp.array(vel, dtype=wp.vec3, device=self.device))

    def _launch_substep(self, src: State, dst: State, grid: Grid, substep: int, clamped: wp.array,
                        record: bool = False) -> None:
        """src -> dst; `record` adds the momentum the walls and the tool remove to self._removed."""
        cfg, dev, n = self.config, self.device, self.config.n_grid
        dt, inv_dx, origin = cfg.dt, 1.0 / self.dx, wp.vec3(*cfg.origin)
        t = substep * dt
        m = self.mat
        grid.mv.zero_()
        grid.m.zero_()
        wp.launch(
            kernels.p2g,
            dim=self.n,
            inputs=[src.x, src.v, src.C, src.F, src.damage, self.model, m["mu"], m["lam"], m["mass"],
                    self.volume, self.force_group, grid.force_accel, self.grasp_group, grid.grasp_velocity,
                    origin, inv_dx, n, dt],
            outputs=[grid.mv, grid.m],
            device=dev,
        )
        tool = self.scene.tool
        if tool is not None:
            center = path_point(tool.times, tool.centers, t)
            half = np.asarray(tool.half_extent)
            tool_v = path_velocity(tool.times, tool.centers, t)
            tool_args = [1, wp.vec3(*(center - half)), wp.vec3(*(center + half)), wp.vec3(*tool_v)]
        else:
            tool_args = [0, wp.vec3(0.0), wp.vec3(0.0), wp.vec3(0.0)]
        wp.launch(
            kernels.grid_update,
            dim=(n + 1,) * 3,
            inputs=[grid.mv, grid.m, self.static_mask, self.min_mass, wp.vec3(*cfg.gravity), cfg.damping,
                    WALLS[cfg.wall], cfg.wall_cells, n, origin, self.dx, dt, *tool_args, int(record)],
            outputs=[grid.v, self._removed],
            device=dev,
        )
        cut = self._cut_substeps.get(substep)
        if cut is not None:
            cut_args = [1, wp.vec3(*cut.point), wp.vec3(*cut.normal), cut.half_width, wp.vec3(*cut.lo),
                        wp.vec3(*cut.hi), cut.damage]
        else:
            cut_args = [0, wp.vec3(0.0), wp.vec3(0.0, 0.0, 1.0), 0.0, wp.vec3(0.0), wp.vec3(0.0), 0.0]
        wp.launch(
            kernels.g2p,
            dim=self.n,
            inputs=[src.x, src.F, src.damage, self.model, m["mu"], m["yield_stress"], m["viscosity"], grid.v,
                    self.grasp_group, grid.grasp_velocity, origin, inv_dx, n, dt, self.x_min, self.x_max,
                    *cut_args],
            outputs=[dst.x, dst.v, dst.C, dst.F, dst.damage, clamped],
            device=dev,
        )

    def step(self, n_substeps: int = 1) -> State:
        """Advance `self.state` by n_substeps (forward only, no tape); returns the new state. Warns
        (ClampWarning) the first time in a run that particles are clamped to the grid's edge."""
        every = self.config.check_every
        self._removed.zero_()
        for _ in range(n_substeps):
            src = self.state
            dst = self._ping[1] if src is self._ping[0] else self._ping[0]
            self._fill_grid_inputs(self._grid, self.substep)
            self._launch_substep(src, dst, self._grid, self.substep, self.clamped, record=True)
            self.substep += 1
            self.state = dst
            if every and self.substep % every == 0:
                self._check(dst, self.substep)
        self._removed_over = n_substeps * self.config.dt
        if not self._clamp_warned and n_substeps > 0:
            count = self.n_clamped
            if count:
                self._clamp_warned = True
                self._warn_clamped(count, f"step(): by substep {self.substep}")
        return self.state

    @property
    def n_clamped(self) -> int:
        """How many times a particle position was clamped to the grid in step() since reset()."""
        return int(self.clamped.numpy()[0])

    # ------------------------------------------------------------------ read-outs of the current state
    def positions(self) -> np.ndarray:
        """Current particle positions [N, 3] (float64)."""
        return self.state.x.numpy().astype(np.float64)

    def velocities(self) -> np.ndarray:
        return self.state.v.numpy().astype(np.float64)

    def masses(self) -> np.ndarray:
        return self.mat["mass"].numpy().astype(np.float64)

    def stress(self) -> np.ndarray:
        """Cauchy stress [N, 3, 3] (Pa, float64, tension positive) of the current state: tau / J with
        tau the Kirchhoff stress of each particle's model at its elastic F, scaled by 1 - damage,
        exactly what p2g applies (kernels.kirchhoff_stress)."""
        sigma = wp.zeros(self.n, dtype=wp.mat33, device=self.device)
        m = self.mat
        wp.launch(kernels.cauchy_stress, dim=self.n,
                  inputs=[self.state.F, self.state.damage, self.model, m["mu"], m["lam"]], outputs=[sigma],
                  device=self.device)
        return sigma.numpy().astype(np.float64)

    def contact_forces(self) -> dict:
        """Forces (N) the material exerts on its constraints, averaged over the substeps of the last
        step() call: {"walls": [3] on the domain walls and static boxes, "tool": [3] on the tool}.
        Each is the momentum the grid update removes at the constrained nodes, divided by the time.
        Zero before the first step() and after reset(); rollout() does not record them."""
        removed = self._removed.numpy().astype(np.float64)  # [2, 3] kg m/s
        scale = 1.0 / self._removed_over if self._removed_over > 0 else 0.0
        return {"walls": removed[0] * scale, "tool": removed[1] * scale}

    # ------------------------------------------------------------------ differentiable rollout
    def rollout(self, n_substeps: int, frame_every: int, **params: torch.Tensor) -> torch.Tensor:
        """Positions [n_substeps // frame_every, N, 3] after substeps frame_every, 2 frame_every, ...,
        simulated from the initial particles; differentiable w.r.t. the per-object tensors given in
        `params` (any of E, nu, density, yield_stress, plastic_viscosity, each [n_objects]; the
        others keep the materials' values). Does not change `self.state`; warns (ClampWarning) once
        if particles were clamped to the grid's edge."""
        frames = _rollout.rollout(self, n_substeps, frame_every, params)
        count = int(self._rollout_clamped.numpy()[0])
        if count:
            self._warn_clamped(count, f"rollout() of {n_substeps} substeps")
        return frames
