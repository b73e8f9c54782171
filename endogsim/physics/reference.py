"""A pure-PyTorch MLS-MPM with the same equations as `kernels.py`, for testing (float64 by default).

Vectorised over particles, with a loop over the 27 stencil nodes; it reads the scene tables
(groups, static mask, tool path, incisions) from an `MPMSimulator` so that both run the same case.
Slow by design: an oracle for the Warp kernels and a float64 finite-difference target.
"""

from __future__ import annotations

import numpy as np
import torch

from endogsim.physics.config import MODELS, WALLS, path_point, path_velocity

FIXED_COROTATED, NEO_HOOKEAN, STVK_HENCKY, VISCOPLASTIC_STVK = (MODELS[k] for k in MODELS)


def _svd_rotations(F: torch.Tensor):
    """F = U diag(sigma) V^T with U, V rotations (det +1) and sigma[2] signed, as wp.svd3. F [N, 3, 3]."""
    U, sigma, Vh = torch.linalg.svd(F)
    V = Vh.transpose(1, 2)
    flip_u = torch.linalg.det(U) < 0  # [N]
    flip_v = torch.linalg.det(V) < 0
    sign = torch.ones_like(sigma)
    sign[:, 2] = torch.where(flip_u ^ flip_v, -1.0, 1.0)
    U = U.clone()
    V = V.clone()
    U[flip_u, :, 2] *= -1
    V[flip_v, :, 2] *= -1
    return U, sigma * sign, V


def kirchhoff_stress(F, model, mu, lam):
    """Kirchhoff stress [N, 3, 3] of F [N, 3, 3] per model id [N] (see kernels.kirchhoff_stress)."""
    eye = torch.eye(3, dtype=F.dtype)
    J = torch.linalg.det(F)  # [N]
    Ft = F.transpose(1, 2)
    mu_, lam_ = mu[:, None, None], lam[:, None, None]
    neo = mu_ * (F @ Ft - eye) + lam_ * torch.log(J.clamp_min(1e-30))[:, None, None] * eye
    if bool((model == NEO_HOOKEAN).all()):
        return neo  # skip the (slow, batched) SVD
    U, sigma, V = _svd_rotations(F)
    R = U @ V.transpose(1, 2)
    corot = 2 * mu_ * (F - R) @ Ft + (lam * J * (J - 1))[:, None, None] * eye
    eps = torch.log(sigma.clamp_min(0.01))  # [N, 3]
    d = 2 * mu[:, None] * eps + (lam * eps.sum(1))[:, None]
    hencky = U @ torch.diag_embed(d) @ U.transpose(1, 2)
    m = model[:, None, None]
    return torch.where(m == NEO_HOOKEAN, neo, torch.where(m == FIXED_COROTATED, corot, hencky))


def von_mises_return(F_trial, mu, yield_stress, viscosity, dt):
    """Viscoplastic StVK return mapping (see kernels.von_mises_return); F_trial [N, 3, 3]."""
    U, sigma, V = _svd_rotations(F_trial)
    eps = torch.log(sigma.clamp_min(0.01))  # [N, 3]
    mean = eps.mean(1, keepdim=True)
    dev = eps - mean
    s_norm = 2 * mu * dev.norm(dim=1)  # [N]
    y = s_norm - np.sqrt(2.0 / 3.0) * yield_stress
    s_new = s_norm - y / (1 + viscosity / (2 * mu * dt))
    scale = torch.where(y > 0, s_new / torch.where(y > 0, s_norm, 1.0), 1.0)
    F_proj = U @ torch.diag_embed(torch.exp(scale[:, None] * dev + mean)) @ V.transpose(1, 2)
    return torch.where((y > 0)[:, None, None], F_proj, F_trial)


def particle_materials(sim, values: dict) -> dict:
    """Per-particle mu, lam, mass, yield_stress, viscosity [N] from per-object tensors [n_objects]."""
    oid = torch.as_tensor(sim.particles.object_id, dtype=torch.long)
    vol = torch.as_tensor(sim.particles.volume, dtype=torch.float64)
    E, nu = values["E"][oid], values["nu"][oid]
    return {
        "mu": E / (2 * (1 + nu)),
        "lam": E * nu / ((1 + nu) * (1 - 2 * nu)),
        "mass": values["density"][oid] * vol,
        "yield_stress": values["yield_stress"][oid],
        "viscosity": values["plastic_viscosity"][oid],
        "volume": vol,
        "model": torch.as_tensor(sim.model.numpy(), dtype=torch.long),
    }


def substep(sim, state: dict, mat: dict, s: int) -> dict:
    """One MLS-MPM substep s of `sim`'s case. state: x, v [N, 3], C, F [N, 3, 3], damage [N]."""
    cfg, scene = sim.config, sim.scene
    n, dx, dt = cfg.n_grid, sim.dx, cfg.dt
    t = s * dt
    origin = torch.tensor(cfg.origin, dtype=torch.float64)
    x, v, C, F, damage = state["x"], state["v"], state["C"], state["F"], state["damage"]
    N = len(x)
    nodes = n + 1

    # stencil and quadratic B-spline weights, w [N, node, axis]
    g = (x - origin) / dx
    base = torch.clamp(torch.floor(g - 0.5).long(), 0, n - 2)  # [N, 3]
    fx = g - base
    w = torch.stack([0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1) ** 2, 0.5 * (fx - 0.5) ** 2], 1)

    # particle velocity with the grasp and force overrides
    grasp = torch.as_tensor(sim.grasp_group.numpy(), dtype=torch.long)
    force = torch.as_tensor(sim.force_group.numpy(), dtype=torch.long)
    v_in, C_in = v, C
    if scene.grasps:
        gv = torch.tensor(np.array([path_velocity(gr.times, gr.offsets, t) for gr in scene.grasps]), dtype=torch.float64)
        held = grasp >= 0
        v_in = torch.where(held[:, None], gv[grasp.clamp_min(0)], v_in)
        C_in = torch.where(held[:, None, None], torch.zeros_like(C), C_in)
    if scene.forces:
        acc = np.zeros((len(scene.forces), 3))
        for i, f in enumerate(scene.forces):
            if f.start <= t < f.end:
                acc[i] = np.asarray(f.force) / sim._force_mass[i]
        acc = torch.tensor(acc)
        v_in = v_in + dt * torch.where((force >= 0)[:, None], acc[force.clamp_min(0)], torch.zeros(3, dtype=torch.float64))

    # P2G (MLS-MPM eq. 29)
    tau = (1 - damage)[:, None, None] * kirchhoff_stress(F, mat["model"], mat["mu"], mat["lam"])
    affine = -dt * mat["volume"][:, None, None] * 4 / dx**2 * tau + mat["mass"][:, None, None] * C_in
    grid_mv = torch.zeros(nodes**3, 3, dtype=torch.float64)
    grid_m = torch.zeros(nodes**3, dtype=torch.float64)
    offsets = [(i, j, k) for i in range(3) for j in range(3) for k in range(3)]
    for i, j, k in offsets:
        off = torch.tensor([i, j, k])
        dpos = (off - fx) * dx  # [N, 3]
        weight = w[:, i, 0] * w[:, j, 1] * w[:, k, 2]  # [N]
        idx = base + off
        flat = (idx[:, 0] * nodes + idx[:, 1]) * nodes + idx[:, 2]
        grid_mv = grid_mv.index_add(0, flat, weight[:, None] * (mat["mass"][:, None] * v_in + (affine @ dpos[:, :, None])[..., 0]))
        grid_m = grid_m.index_add(0, flat, weight * mat["mass"])

    # grid update: velocity, gravity, damping, walls, static boxes, tool
    ijk = torch.stack(torch.meshgrid(*[torch.arange(nodes)] * 3, indexing="ij"), -1).reshape(-1, 3)  # [nodes^3, 3]
    has_mass = grid_m > sim.min_mass
    gv = cfg.damping * (grid_mv / torch.where(has_mass, grid_m, 1.0)[:, None] + dt * torch.tensor(cfg.gravity))
    gv = torch.where(has_mass[:, None], gv, torch.zeros(3, dtype=torch.float64))
    lo_wall, hi_wall = ijk < cfg.wall_cells, ijk > n - cfg.wall_cells
    if WALLS[cfg.wall] == 2:
        gv = torch.where((lo_wall | hi_wall).any(1, keepdim=True), 0.0, gv)
    elif WALLS[cfg.wall] == 1:
        gv = torch.where((lo_wall & (gv < 0)) | (hi_wall & (gv > 0)), 0.0, gv)
    static = torch.as_tensor(sim.static_mask.numpy().reshape(-1) != 0)
    gv = torch.where(static[:, None], 0.0, gv)
    if scene.tool is not None:
        tool = scene.tool
        center = path_point(tool.times, tool.centers, t)
        half = np.asarray(tool.half_extent)
        pos = origin + dx * ijk
        inside = ((pos >= torch.tensor(center - half)) & (pos <= torch.tensor(center + half))).all(1)
        tool_v = torch.tensor(path_velocity(tool.times, tool.centers, t))
        gv = torch.where((inside & has_mass)[:, None], tool_v, gv)

    # G2P: v, C (= velocity gradient, MLS-MPM eq. 17, 28), F, x
    v_new = torch.zeros(N, 3, dtype=torch.float64)
    B = torch.zeros(N, 3, 3, dtype=torch.float64)
    for i, j, k in offsets:
        off = torch.tensor([i, j, k])
        dpos = (off - fx) * dx
        weight = w[:, i, 0] * w[:, j, 1] * w[:, k, 2]
        idx = base + off
        vi = gv[(idx[:, 0] * nodes + idx[:, 1]) * nodes + idx[:, 2]]  # [N, 3]
        v_new = v_new + weight[:, None] * vi
        B = B + weight[:, None, None] * vi[:, :, None] * dpos[:, None, :]
    C_new = 4 / dx**2 * B
    F_trial = (torch.eye(3, dtype=torch.float64) + dt * C_new) @ F
    plastic = (mat["model"] == VISCOPLASTIC_STVK)[:, None, None]
    F_new = F_trial
    if bool(plastic.any()):
        F_new = torch.where(plastic, von_mises_return(F_trial, mat["mu"], mat["yield_stress"], mat["viscosity"], dt), F_trial)
    if scene.grasps:
        v_new = torch.where((grasp >= 0)[:, None], v_in, v_new)
    x_min = origin + dx
    x_max = origin + (n - 1) * dx
    x_new = torch.minimum(torch.maximum(x + dt * v_new, x_min), x_max)
    cut = sim._cut_substeps.get(s)
    damage_new = damage
    if cut is not None:
        inside = ((x_new >= torch.tensor(cut.lo)) & (x_new <= torch.tensor(cut.hi))).all(1)
        near = ((x_new - torch.tensor(cut.point)) @ torch.tensor(cut.normal)).abs() < cut.half_width
        damage_new = torch.where(inside & near, torch.clamp(damage, min=cut.damage), damage)
    return {"x": x_new, "v": v_new, "C": C_new, "F": F_new, "damage": damage_new}


def initial_state(sim) -> dict:
    p = sim.particles
    N = len(p.x)
    return {
        "x": torch.tensor(p.x, dtype=torch.float64),
        "v": torch.tensor(p.v, dtype=torch.float64),
        "C": torch.zeros(N, 3, 3, dtype=torch.float64),
        "F": torch.eye(3, dtype=torch.float64).repeat(N, 1, 1),
        "damage": torch.zeros(N, dtype=torch.float64),
    }


def state_from_warp(state) -> dict:
    """A Warp `State` as float64 tensors."""
    return {name: torch.tensor(getattr(state, name).numpy(), dtype=torch.float64) for name in ("x", "v", "C", "F", "damage")}


def rollout(sim, n_substeps: int, frame_every: int, **params) -> torch.Tensor:
    """Positions [n_substeps // frame_every, N, 3] as `MPMSimulator.rollout`, in float64 torch."""
    values = {
        name: params.get(name, torch.tensor([getattr(m, name) for m in sim.materials], dtype=torch.float64))
        for name in ("E", "nu", "density", "yield_stress", "plastic_viscosity")
    }
    mat = particle_materials(sim, values)
    state = initial_state(sim)
    frames = []
    for s in range(n_substeps):
        state = substep(sim, state, mat, s)
        if (s + 1) % frame_every == 0:
            frames.append(state["x"])
    return torch.stack(frames)
