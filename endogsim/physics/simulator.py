"""The MPM simulator: one object with `step()` for forward runs and `rollout()` for differentiable
ones (a `torch.autograd.Function` over a Warp tape, with optional checkpointed segments).

Differentiable design (what the anchors get wrong, see the notes): every substep writes a fresh
particle state and fresh grid arrays, so the tape never sees an overwritten value; the gradient
covers the whole rollout, not the last substep; with `checkpoint_every = S` only the states at
segment starts are kept and each segment is re-simulated under its own tape in the backward pass,
so memory is O(S + T / S) states instead of O(T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import warp as wp

from endogsim.physics import kernels
from endogsim.physics.config import (
    MODELS,
    WALLS,
    Material,
    MPMConfig,
    Particles,
    PhysicsInputError,
    Scene,
    path_point,
    path_velocity,
)

PARAMS = ("E", "nu", "density", "yield_stress", "plastic_viscosity")


class TimeStepError(PhysicsInputError):
    """MPMConfig.dt is above a stability limit; the message names the limit and the largest allowed dt."""


class SimulationError(RuntimeError):
    """The run produced a NaN or an exploding velocity; the message names the substep and the particle."""


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


class _Grid:
    """Scratch arrays of one substep: grid momentum, mass and velocity [n+1, n+1, n+1], and the
    per-group force accelerations and grasp velocities of that substep."""

    def __init__(self, n_nodes: int, n_forces: int, n_grasps: int, device, requires_grad: bool):
        shape = (n_nodes,) * 3
        self.mv = wp.zeros(shape, dtype=wp.vec3, device=device, requires_grad=requires_grad)
        self.m = wp.zeros(shape, dtype=float, device=device, requires_grad=requires_grad)
        self.v = wp.zeros(shape, dtype=wp.vec3, device=device, requires_grad=requires_grad)
        self.force_accel = wp.zeros(max(n_forces, 1), dtype=wp.vec3, device=device)
        self.grasp_velocity = wp.zeros(max(n_grasps, 1), dtype=wp.vec3, device=device)


def _in_box(x: np.ndarray, lo, hi) -> np.ndarray:
    return np.all((x >= np.asarray(lo)) & (x <= np.asarray(hi)), axis=1)


class MPMSimulator:
    """MLS-MPM on Warp's `cpu` or `cuda` device (MPMConfig.device).

    materials[o] is the material of object o; particles.object_id picks each particle's object.
    `step()` advances `self.state` (forward only); `rollout()` runs from the initial state and is
    differentiable with respect to the per-object material parameters.
    """

    def __init__(self, config: MPMConfig, particles: Particles, materials: list, scene: Scene | None = None):
        if not isinstance(config, MPMConfig):
            raise PhysicsInputError(f"config: expected an MPMConfig, got {type(config).__name__}")
        if not isinstance(materials, (list, tuple)) or not materials or not all(isinstance(m, Material) for m in materials):
            raise PhysicsInputError("materials: expected a non-empty list of Material")
        scene = Scene() if scene is None else scene
        if not isinstance(scene, Scene):
            raise PhysicsInputError(f"scene: expected a Scene or None, got {type(scene).__name__}")
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
                f"Particles.x: expected every particle inside [{lo.tolist()}, {hi.tolist()}] (the grid less one "
                f"cell), particle {p} is at {particles.x[p].tolist()} ({int(outside.sum())} outside)"
            )
        self.x_min, self.x_max = wp.vec3(*lo), wp.vec3(*hi)
        self.max_speed = cfg.max_speed if cfg.max_speed is not None else self.dx / cfg.dt

        dev = self.device
        self.object_id = wp.array(particles.object_id.astype(np.int32), dtype=int, device=dev)
        self.volume = wp.array(particles.volume.astype(np.float32), dtype=float, device=dev)
        self.model = wp.array(
            np.array([MODELS[materials[o].model] for o in particles.object_id], dtype=np.int32), dtype=int, device=dev
        )
        # per-object material table [n_objects] each, the leaves of the gradient
        self.params = {
            name: wp.array(np.array([getattr(m, name) for m in materials], np.float32), dtype=float, device=dev, requires_grad=True)
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
                raise PhysicsInputError(f"Scene.forces[{g}]: expected particles inside [{f.lo}, {f.hi}], found none")
            force_group[inside] = g
            self._force_mass.append(mass0[inside].sum())
        grasp_group = np.full(self.n, -1, np.int32)
        for g, gr in enumerate(scene.grasps):
            inside = _in_box(x0, gr.lo, gr.hi) & (grasp_group < 0)
            if not inside.any():
                raise PhysicsInputError(f"Scene.grasps[{g}]: expected particles inside [{gr.lo}, {gr.hi}], found none")
            grasp_group[inside] = g
        self.force_group = wp.array(force_group, dtype=int, device=dev)
        self.grasp_group = wp.array(grasp_group, dtype=int, device=dev)
        nodes = cfg.n_grid + 1
        node_pos = self.origin + self.dx * np.stack(np.meshgrid(*[np.arange(nodes)] * 3, indexing="ij"), -1)  # [n+1]^3 x 3
        mask = np.zeros((nodes,) * 3, np.int32)
        for b in scene.static_boxes:
            mask |= np.all((node_pos >= b.lo) & (node_pos <= b.hi), axis=-1)
        self.static_mask = wp.array(mask, dtype=int, device=dev)
        self._cut_substeps = {}
        for i, c in enumerate(scene.incisions):
            s = int(math.floor(c.time / cfg.dt + 1e-6))
            if s in self._cut_substeps:
                raise PhysicsInputError(f"Scene.incisions[{i}]: expected at most one incision per substep, two fall in substep {s}")
            self._cut_substeps[s] = c
        self.min_mass = float(1e-9 * mass0.mean())

        self.check_time_step()
        self.clamped = wp.zeros(1, dtype=int, device=dev)  # clamping events in forward runs
        self._replay_clamped = wp.zeros(1, dtype=int, device=dev)  # the same, during backward re-simulation
        self._first_bad = wp.zeros(1, dtype=int, device=dev)
        self._ping = [State.zeros(self.n, dev, False), State.zeros(self.n, dev, False)]
        self._grid = _Grid(nodes, len(scene.forces), len(scene.grasps), dev, False)
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
        """Back to the initial particles at substep 0."""
        self.substep = 0
        self.clamped.zero_()
        self.initial_state(self._ping[0])
        self.state = self._ping[0]

    def check_time_step(self, values: dict | None = None) -> None:
        """Raise TimeStepError if dt exceeds the elastic-wave limit cfl * dx / c (c the P-wave speed
        sqrt((lam + 2 mu) / rho) of any object) or the CFL limit cfl * dx / |v| for the initial
        particle, tool and grasp speeds."""
        cfg = self.config
        values = values or {k: np.array([getattr(m, k) for m in self.materials]) for k in PARAMS}
        for o in range(len(self.materials)):
            E, nu, rho = float(values["E"][o]), float(values["nu"][o]), float(values["density"][o])
            lam_2mu = E * (1 - nu) / ((1 + nu) * (1 - 2 * nu))
            c = math.sqrt(lam_2mu / rho)
            dt_max = cfg.cfl * self.dx / c
            if cfg.dt > dt_max:
                raise TimeStepError(
                    f"MPMConfig.dt = {cfg.dt:.3g} s exceeds the elastic-wave limit for object {o} "
                    f"(E = {E:.4g} Pa, nu = {nu:.3g}, density = {rho:.4g} kg/m^3): P-wave speed c = {c:.4g} m/s, "
                    f"dx = {self.dx:.4g} m, so dt must be <= cfl * dx / c = {cfg.cfl} * {self.dx:.4g} / {c:.4g} "
                    f"= {dt_max:.3g} s"
                )
        speeds = {"initial particle velocity": float(np.linalg.norm(self.particles.v, axis=1).max())}
        if self.scene.tool is not None:
            t = self.scene.tool
            speeds["Tool path"] = float((np.linalg.norm(np.diff(t.centers, axis=0), axis=1) / np.diff(t.times)).max())
        for g, gr in enumerate(self.scene.grasps):
            speeds[f"Grasp {g} path"] = float((np.linalg.norm(np.diff(gr.offsets, axis=0), axis=1) / np.diff(gr.times)).max())
        for what, speed in speeds.items():
            if speed > 0 and cfg.dt > cfg.cfl * self.dx / speed:
                raise TimeStepError(
                    f"MPMConfig.dt = {cfg.dt:.3g} s exceeds the CFL limit for the {what} ({speed:.4g} m/s): "
                    f"dt must be <= cfl * dx / speed = {cfg.cfl} * {self.dx:.4g} / {speed:.4g} = "
                    f"{cfg.cfl * self.dx / speed:.3g} s"
                )

    def _update_materials(self) -> None:
        p, m = self.params, self.mat
        wp.launch(
            kernels.particle_materials,
            dim=self.n,
            inputs=[self.object_id, self.volume, p["E"], p["nu"], p["density"], p["yield_stress"], p["plastic_viscosity"]],
            outputs=[m["mu"], m["lam"], m["mass"], m["yield_stress"], m["viscosity"]],
            device=self.device,
        )

    def _check(self, state: State, substep: int) -> None:
        """Stop the run at the first particle with a NaN / inf or a speed above max_speed."""
        self._first_bad.fill_(self.n)
        wp.launch(kernels.find_bad_particle, dim=self.n, inputs=[state.x, state.v, self.max_speed, self._first_bad], device=self.device)
        p = int(self._first_bad.numpy()[0])
        if p < self.n:
            x, v = state.x.numpy()[p], state.v.numpy()[p]
            raise SimulationError(
                f"substep {substep}: particle {p} has x = {x.tolist()}, v = {v.tolist()} "
                f"(|v| = {np.linalg.norm(v):.4g} m/s; NaN/inf or above max_speed = {self.max_speed:.4g} m/s). "
                f"Lower MPMConfig.dt or the stiffness, or check the scene."
            )

    # ------------------------------------------------------------------ one substep
    def _fill_grid_inputs(self, grid: _Grid, substep: int) -> None:
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

    def _launch_substep(self, src: State, dst: State, grid: _Grid, substep: int, clamped: wp.array) -> None:
        cfg, dev, n = self.config, self.device, self.config.n_grid
        dt, inv_dx, origin = cfg.dt, 1.0 / self.dx, wp.vec3(*cfg.origin)
        t = substep * dt
        m = self.mat
        grid.mv.zero_()
        grid.m.zero_()
        wp.launch(
            kernels.p2g,
            dim=self.n,
            inputs=[src.x, src.v, src.C, src.F, src.damage, self.model, m["mu"], m["lam"], m["mass"], self.volume,
                    self.force_group, grid.force_accel, self.grasp_group, grid.grasp_velocity, origin, inv_dx, n, dt],
            outputs=[grid.mv, grid.m],
            device=dev,
        )
        tool = self.scene.tool
        if tool is not None:
            center = path_point(tool.times, tool.centers, t)
            half = np.asarray(tool.half_extent)
            tool_args = [1, wp.vec3(*(center - half)), wp.vec3(*(center + half)), wp.vec3(*path_velocity(tool.times, tool.centers, t))]
        else:
            tool_args = [0, wp.vec3(0.0), wp.vec3(0.0), wp.vec3(0.0)]
        wp.launch(
            kernels.grid_update,
            dim=(n + 1,) * 3,
            inputs=[grid.mv, grid.m, self.static_mask, self.min_mass, wp.vec3(*cfg.gravity), cfg.damping,
                    WALLS[cfg.wall], cfg.wall_cells, n, origin, self.dx, dt, *tool_args],
            outputs=[grid.v],
            device=dev,
        )
        cut = self._cut_substeps.get(substep)
        if cut is not None:
            cut_args = [1, wp.vec3(*cut.point), wp.vec3(*cut.normal), cut.half_width, wp.vec3(*cut.lo), wp.vec3(*cut.hi), cut.damage]
        else:
            cut_args = [0, wp.vec3(0.0), wp.vec3(0.0, 0.0, 1.0), 0.0, wp.vec3(0.0), wp.vec3(0.0), 0.0]
        wp.launch(
            kernels.g2p,
            dim=self.n,
            inputs=[src.x, src.F, src.damage, self.model, m["mu"], m["yield_stress"], m["viscosity"], grid.v,
                    self.grasp_group, grid.grasp_velocity, origin, inv_dx, n, dt, self.x_min, self.x_max, *cut_args],
            outputs=[dst.x, dst.v, dst.C, dst.F, dst.damage, clamped],
            device=dev,
        )

    def step(self, n_substeps: int = 1) -> State:
        """Advance `self.state` by n_substeps (forward only, no tape); returns the new state."""
        every = self.config.check_every
        for _ in range(n_substeps):
            src = self.state
            dst = self._ping[1] if src is self._ping[0] else self._ping[0]
            self._fill_grid_inputs(self._grid, self.substep)
            self._launch_substep(src, dst, self._grid, self.substep, self.clamped)
            self.substep += 1
            self.state = dst
            if every and self.substep % every == 0:
                self._check(dst, self.substep)
        return self.state

    @property
    def n_clamped(self) -> int:
        """How many times a particle position was clamped to the grid in forward runs since reset()."""
        return int(self.clamped.numpy()[0])

    def positions(self) -> np.ndarray:
        """Current particle positions [N, 3] (float64)."""
        return self.state.x.numpy().astype(np.float64)

    def velocities(self) -> np.ndarray:
        return self.state.v.numpy().astype(np.float64)

    def masses(self) -> np.ndarray:
        return self.mat["mass"].numpy().astype(np.float64)

    # ------------------------------------------------------------------ differentiable rollout
    def rollout(self, n_substeps: int, frame_every: int, **params: torch.Tensor) -> torch.Tensor:
        """Positions [n_substeps // frame_every, N, 3] after substeps frame_every, 2 frame_every, ...,
        simulated from the initial particles; differentiable w.r.t. the per-object tensors given in
        `params` (any of E, nu, density, yield_stress, plastic_viscosity, each [n_objects]; the
        others keep the materials' values). Does not change `self.state`."""
        if not isinstance(n_substeps, int) or not isinstance(frame_every, int) or frame_every < 1 or n_substeps < frame_every or n_substeps % frame_every:
            raise PhysicsInputError(
                f"rollout: expected n_substeps a positive multiple of frame_every >= 1, got {n_substeps}, {frame_every}"
            )
        for name in params:
            if name not in PARAMS:
                raise PhysicsInputError(f"rollout: unknown parameter {name!r}, expected one of {PARAMS}")
        tensors = []
        for name in PARAMS:
            default = torch.tensor([getattr(m, name) for m in self.materials], dtype=torch.float64)
            value = params.get(name, default)
            if not isinstance(value, torch.Tensor) or value.shape != (len(self.materials),):
                raise PhysicsInputError(f"rollout: {name} expected a tensor of shape [{len(self.materials)}]")
            tensors.append(value)
        return _Rollout.apply(self, n_substeps, frame_every, *tensors)

    def _set_params(self, values: dict) -> None:
        for name, value in values.items():
            self.params[name].assign(wp.array(value.astype(np.float32), dtype=float, device=self.device))

    def _segment_buffers(self, length: int):
        if self._segment is None or self._segment[0] != length:
            dev, nodes = self.device, self.config.n_grid + 1
            states = [State.zeros(self.n, dev, True) for _ in range(length + 1)]
            grids = [_Grid(nodes, len(self.scene.forces), len(self.scene.grasps), dev, True) for _ in range(length)]
            self._segment = (length, states, grids)
        return self._segment[1], self._segment[2]

    def _run_segment(self, states, grids, start: int, length: int, tape, clamped, check: bool, frames: dict | None, frame_every: int):
        if tape is not None:
            with tape:
                self._update_materials()
        else:
            self._update_materials()
        every = self.config.check_every
        for i in range(length):
            s = start + i
            self._fill_grid_inputs(grids[i], s)
            if tape is not None:
                with tape:
                    self._launch_substep(states[i], states[i + 1], grids[i], s, clamped)
            else:
                self._launch_substep(states[i], states[i + 1], grids[i], s, clamped)
            if check and every and (s + 1) % every == 0:
                self._check(states[i + 1], s + 1)
            if frames is not None and (s + 1) % frame_every == 0:
                frames[(s + 1) // frame_every - 1] = wp.to_torch(states[i + 1].x).clone()

    def _forward_rollout(self, n_substeps: int, frame_every: int):
        seg = self.config.checkpoint_every or n_substeps
        seg = min(seg, n_substeps)
        states, grids = self._segment_buffers(seg)
        frames: dict = {}
        self.clamped.zero_()
        self.initial_state(states[0])
        checkpoints, tape = [], None
        for start in range(0, n_substeps, seg):
            length = min(seg, n_substeps - start)
            saved = State.zeros(self.n, self.device, False)
            saved.copy_from(states[0])
            checkpoints.append((start, length, saved))
            if self.config.checkpoint_every is None:
                tape = wp.Tape()  # one segment: keep its tape for the backward pass
            self._run_segment(states, grids, start, length, tape, self.clamped, True, frames, frame_every)
            if start + length < n_substeps:
                states[0].copy_from(states[length])
        out = torch.stack([frames[f] for f in range(n_substeps // frame_every)])  # [F, N, 3]
        return out, checkpoints, tape

    def _backward_rollout(self, checkpoints, tape, grad_frames: torch.Tensor, frame_every: int) -> dict:
        """Reverse pass over the segments: re-simulate each under a tape (unless kept), seed the
        adjoints of its frames and of its last state (carried from the next segment), backward."""
        seg = checkpoints[0][1]
        states, grids = self._segment_buffers(seg)
        totals = {name: np.zeros(len(self.materials)) for name in PARAMS}
        carry = None
        grad_frames = grad_frames.to(wp.device_to_torch(self.device)).float().contiguous()
        for start, length, saved in reversed(checkpoints):
            if tape is None or len(checkpoints) > 1:
                states[0].copy_from(saved)
                tape = wp.Tape()
                self._run_segment(states, grids, start, length, tape, self._replay_clamped, False, None, frame_every)
            for arr in [*self.params.values(), *self.mat.values()]:
                arr.grad.zero_()
            for st in states[: length + 1]:
                for arr in st.differentiable():
                    arr.grad.zero_()
            for g in grids[:length]:
                for arr in (g.mv, g.m, g.v):
                    arr.grad.zero_()
            for i in range(1, length + 1):
                s = start + i
                if s % frame_every == 0:
                    g = wp.from_torch(grad_frames[s // frame_every - 1], dtype=wp.vec3)
                    wp.launch(kernels.add_vec3, dim=self.n, inputs=[states[i].x.grad, g], device=self.device)
            if carry is not None:
                end = states[length]
                for dst, src, kern in zip(end.differentiable(), carry, (kernels.add_vec3, kernels.add_vec3, kernels.add_mat33, kernels.add_mat33)):
                    wp.launch(kern, dim=self.n, inputs=[dst.grad, src], device=self.device)
            tape.backward()
            for name in PARAMS:
                totals[name] += self.params[name].grad.numpy().astype(np.float64)
            carry = [wp.clone(arr.grad) for arr in states[0].differentiable()]
            tape.reset()
            tape = None
        for name, g in totals.items():
            if not np.all(np.isfinite(g)):
                raise SimulationError(f"backward: the gradient of {name} is not finite ({g.tolist()})")
        return totals


class _Rollout(torch.autograd.Function):
    """positions [F, N, 3] = rollout(E, nu, density, yield_stress, plastic_viscosity), each [n_objects]."""

    @staticmethod
    def forward(ctx, sim: MPMSimulator, n_substeps: int, frame_every: int, *values: torch.Tensor):
        host = {name: v.detach().double().cpu().numpy() for name, v in zip(PARAMS, values)}
        for name, v in host.items():
            low_ok = np.all(v >= 0) if name in ("yield_stress", "plastic_viscosity") else np.all(v > 0)
            if not np.all(np.isfinite(v)) or not low_ok or (name == "nu" and np.any(v >= 0.5)):
                raise PhysicsInputError(f"rollout: {name} = {v.tolist()} is outside its valid range")
        sim.check_time_step(host)
        sim._set_params(host)
        frames, checkpoints, tape = sim._forward_rollout(n_substeps, frame_every)
        ctx.sim, ctx.checkpoints, ctx.tape, ctx.frame_every = sim, checkpoints, tape, frame_every
        ctx.dtypes = [(v.dtype, v.device) for v in values]
        return frames.to(values[0].device)

    @staticmethod
    def backward(ctx, grad_frames):
        totals = ctx.sim._backward_rollout(ctx.checkpoints, ctx.tape, grad_frames, ctx.frame_every)
        ctx.checkpoints = ctx.tape = None
        grads = [torch.as_tensor(totals[name], dtype=dt, device=dev) for name, (dt, dev) in zip(PARAMS, ctx.dtypes)]
        return (None, None, None, *grads)
