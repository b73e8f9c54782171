"""`MPMSimulator.rollout`: a `torch.autograd.Function` over a Warp tape, with optional checkpointed
segments.

Differentiable design (what the anchors get wrong, see the notes): every substep writes a fresh
particle state and fresh grid arrays, so the tape never sees an overwritten value; the gradient
covers the whole rollout, not the last substep; with `checkpoint_every = S` only the states at
segment starts are kept and each segment is re-simulated under its own tape in the backward pass,
so memory is O(S + T / S) states instead of O(T).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import warp as wp

from endogsim.physics import kernels
from endogsim.physics.config import PhysicsInputError, SimulationError
from endogsim.physics.state import Grid, State

PARAMS = ("E", "nu", "density", "yield_stress", "plastic_viscosity")


def rollout(sim, n_substeps: int, frame_every: int, params: dict) -> torch.Tensor:
    """Positions [n_substeps // frame_every, N, 3]; see `MPMSimulator.rollout`."""
    if not isinstance(n_substeps, int) or not isinstance(frame_every, int) or frame_every < 1 \
            or n_substeps < frame_every or n_substeps % frame_every:
        raise PhysicsInputError(
            f"rollout: expected n_substeps a positive multiple of frame_every >= 1, "
            f"got {n_substeps}, {frame_every}"
        )
    for name in params:
        if name not in PARAMS:
            raise PhysicsInputError(f"rollout: unknown parameter {name!r}, expected one of {PARAMS}")
    tensors = []
    for name in PARAMS:
        default = torch.tensor([getattr(m, name) for m in sim.materials], dtype=torch.float64)
        value = params.get(name, default)
        if not isinstance(value, torch.Tensor) or value.shape != (len(sim.materials),):
            raise PhysicsInputError(f"rollout: {name} expected a tensor of shape [{len(sim.materials)}]")
        tensors.append(value)
    return _Rollout.apply(sim, n_substeps, frame_every, *tensors)


def _segment_buffers(sim, length: int):
    """States [length + 1] and grids [length] with gradients, kept on the simulator between rollouts."""
    if sim._segment is None or sim._segment[0] != length:
        dev, nodes = sim.device, sim.config.n_grid + 1
        states = [State.zeros(sim.n, dev, True) for _ in range(length + 1)]
        grids = [Grid(nodes, len(sim.scene.forces), len(sim.scene.grasps), dev, True) for _ in range(length)]
        sim._segment = (length, states, grids)
    return sim._segment[1], sim._segment[2]


def _run_segment(sim, states, grids, start: int, length: int, tape, clamped, check: bool,
                 frames: dict | None, frame_every: int) -> None:
    """Substeps start .. start + length - 1 from states[0], under `tape` when one is given."""
    with tape if tape is not None else nullcontext():
        sim._update_materials()
    every = sim.config.check_every
    for i in range(length):
        s = start + i
        sim._fill_grid_inputs(grids[i], s)
        with tape if tape is not None else nullcontext():
            sim._launch_substep(states[i], states[i + 1], grids[i], s, clamped)
        if check and every and (s + 1) % every == 0:
            sim._check(states[i + 1], s + 1)
        if frames is not None and (s + 1) % frame_every == 0:
            frames[(s + 1) // frame_every - 1] = wp.to_torch(states[i + 1].x).clone()


def _forward(sim, n_substeps: int, frame_every: int):
    seg = min(sim.config.checkpoint_every or n_substeps, n_substeps)
    states, grids = _segment_buffers(sim, seg)
    frames: dict = {}
    sim._rollout_clamped.zero_()
    sim.initial_state(states[0])
    checkpoints, tape = [], None
    for start in range(0, n_substeps, seg):
        length = min(seg, n_substeps - start)
        saved = State.zeros(sim.n, sim.device, False)
        saved.copy_from(states[0])
        checkpoints.append((start, length, saved))
        if sim.config.checkpoint_every is None:
            tape = wp.Tape()  # one segment: keep its tape for the backward pass
        _run_segment(sim, states, grids, start, length, tape, sim._rollout_clamped, True, frames, frame_every)
        if start + length < n_substeps:
            states[0].copy_from(states[length])
    out = torch.stack([frames[f] for f in range(n_substeps // frame_every)])  # [F, N, 3]
    return out, checkpoints, tape


def _backward(sim, checkpoints, tape, grad_frames: torch.Tensor, frame_every: int) -> dict:
    """Reverse pass over the segments: re-simulate each under a tape (unless kept), seed the
    adjoints of its frames and of its last state (carried from the next segment), backward."""
    seg = checkpoints[0][1]
    states, grids = _segment_buffers(sim, seg)
    totals = {name: np.zeros(len(sim.materials)) for name in PARAMS}
    carry = None
    grad_frames = grad_frames.to(wp.device_to_torch(sim.device)).float().contiguous()
    for start, length, saved in reversed(checkpoints):
        if tape is None or len(checkpoints) > 1:
            states[0].copy_from(saved)
            tape = wp.Tape()
            _run_segment(sim, states, grids, start, length, tape, sim._replay_clamped, False, None,
                         frame_every)
        for arr in [*sim.params.values(), *sim.mat.values()]:
            arr.grad.zero_()
        for st in states[: length + 1]:
            for arr in st.differentiable():
                arr.grad.zero_()
        for g in grids[:length]:
            for arr in g.differentiable():
                arr.grad.zero_()
        for i in range(1, length + 1):
            s = start + i
            if s % frame_every == 0:
                g = wp.from_torch(grad_frames[s // frame_every - 1], dtype=wp.vec3)
                wp.launch(kernels.add_vec3, dim=sim.n, inputs=[states[i].x.grad, g], device=sim.device)
        if carry is not None:
            end = states[length]
            adds = (kernels.add_vec3, kernels.add_vec3, kernels.add_mat33, kernels.add_mat33)
            for dst, src, kern in zip(end.differentiable(), carry, adds):
                wp.launch(kern, dim=sim.n, inputs=[dst.grad, src], device=sim.device)
        tape.backward()
        for name in PARAMS:
            totals[name] += sim.params[name].grad.numpy().astype(np.float64)
        if start > 0:
            carry = [wp.clone(arr.grad) for arr in states[0].differentiable()]
        tape = None  # dropped, not reset: reset() would zero every gradient a second time
    for name, g in totals.items():
        if not np.all(np.isfinite(g)):
            raise SimulationError(f"backward: the gradient of {name} is not finite ({g.tolist()})")
    return totals


class _Rollout(torch.autograd.Function):
    """positions [F, N, 3] = rollout(E, nu, density, yield_stress, plastic_viscosity), each [n_objects]."""

    @staticmethod
    def forward(ctx, sim, n_substeps: int, frame_every: int, *values: torch.Tensor):
        host = {name: v.detach().double().cpu().numpy() for name, v in zip(PARAMS, values)}
        for name, v in host.items():
            low_ok = np.all(v >= 0) if name in ("yield_stress", "plastic_viscosity") else np.all(v > 0)
            if not np.all(np.isfinite(v)) or not low_ok or (name == "nu" and np.any(v >= 0.5)):
                raise PhysicsInputError(f"rollout: {name} = {v.tolist()} is outside its valid range")
        sim.check_time_step(host)
        for name, value in host.items():
            sim.params[name].assign(wp.array(value.astype(np.float32), dtype=float, device=sim.device))
        frames, checkpoints, tape = _forward(sim, n_substeps, frame_every)
        ctx.sim, ctx.checkpoints, ctx.tape, ctx.frame_every = sim, checkpoints, tape, frame_every
        ctx.dtypes = [(v.dtype, v.device) for v in values]
        return frames.to(values[0].device)

    @staticmethod
    def backward(ctx, grad_frames):
        totals = _backward(ctx.sim, ctx.checkpoints, ctx.tape, grad_frames, ctx.frame_every)
        ctx.checkpoints = ctx.tape = None
        grads = [torch.as_tensor(totals[name], dtype=dt, device=dev)
                 for name, (dt, dev) in zip(PARAMS, ctx.dtypes)]
        return (None, None, None, *grads)
