"""A synthetic surgical clip with known materials, written in the EndoNeRF layout.

Two tissue blocks of different known Young's modulus lie side by side on a static support; a rigid
box tool enters the view, indents both blocks across their junction, retracts and leaves. The MPM
(`endogsim.physics`, CPU) simulates it, and every frame is rendered by the CPU Gaussian compositor
(`endogsim.render`) from one fixed camera: particles, the tool and the support are small isotropic
Gaussians, coloured per object with a mild per-particle texture so the tissue's flow is visible.

World frame = the camera frame (OpenCV: x right, y down, z forward), so every w2c is the identity
and "down" into the tissue is +z, away from the camera: indentation shows as a depth increase.

Written files (`read_endonerf(out_dir, depth_scale=DEPTH_SCALE)` reads them back in metres):

    images/%06d.png     RGB
    depth/%06d.png      16-bit, value = round(z [m] * DEPTH_SCALE), 0 = nothing rendered
    masks/%06d.png      white (255) = tool (the tool's compositing weight > 0.5)
    poses_bounds.npy    LLFF, identity poses (`common.cameras.write_llff_poses_bounds`)
    ground_truth.json   materials per object, the tool path, camera, depth scale, frame times, seed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.cameras import make_K, write_llff_poses_bounds
from common.datasets import io

from .physics import Material, MPMConfig, MPMSimulator, Particles, Scene, StaticBox, Tool, block_particles
from .render import render

__all__ = ["DEPTH_SCALE", "SyntheticScene", "make_surgical_scene"]

DEPTH_SCALE = 10000.0  # depth PNG units per metre (0.1 mm steps, up to 6.5 m)
SPACING = 0.0025  # m, particle lattice spacing (half a grid cell)
TOP_Z = 0.09  # m, camera-facing tissue surface
THICK = 0.015  # m, tissue thickness along z
HALF_XY = (0.015, 0.015)  # m, half sizes of each block in x and y
GAP = 0.002  # m, half the gap between the two blocks (x)
TOOL_HALF = (0.012, 0.004, 0.01)  # m, the tool box straddles the junction of both blocks
INDENT = 0.006  # m, how far the tool face goes below the tissue surface
OBJECT_COLORS = ((0.86, 0.42, 0.42), (0.78, 0.58, 0.36))  # soft block, stiff block
SUPPORT_COLOR, TOOL_COLOR = (0.35, 0.22, 0.22), (0.62, 0.64, 0.68)


@dataclass
class SyntheticScene:
    """What `make_surgical_scene` wrote, in memory: frame times [F] (s), simulated particle positions
    [F, N, 3] with their object ids [N], the tool centres [F, 3], K [3, 3] / width / height, the
    unquantised depth [F, H, W] (m) that was written, and the depth of the tissue and support alone
    [F, H, W] (rendered without the tool, which hides its own footprint in the written frames)."""

    out_dir: Path
    times: np.ndarray
    positions: np.ndarray
    object_id: np.ndarray
    tool_centers: np.ndarray
    tool_half_extent: tuple
    K: torch.Tensor
    width: int
    height: int
    materials: list
    depth: np.ndarray
    tissue_depth: np.ndarray


def _check_inputs(frames, size, seed) -> tuple[int, int]:
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 2:
        raise ValueError(f"make_surgical_scene: frames must be an int >= 2, got {frames!r}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"make_surgical_scene: size must be (H, W) with two positive ints, got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"make_surgical_scene: seed must be an int, got {seed!r}")
    return int(size[0]), int(size[1])


def _tool_path(duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Enter from out of view (-y), descend to INDENT below the surface, hold, retract, leave (+y)."""
    above = TOP_Z - TOOL_HALF[2] - 0.009  # tool face 9 mm above the tissue: beyond the MPM stencil (1.5 cells)
    down = TOP_Z - TOOL_HALF[2] + INDENT
    f = np.array([0.0, 0.12, 0.2, 0.45, 0.55, 0.7, 0.88, 1.0])
    y_out = 0.075
    centers = np.array([
        (0.0, -y_out, above), (0.0, 0.0, above), (0.0, 0.0, above), (0.0, 0.0, down),
        (0.0, 0.0, down), (0.0, 0.0, above), (0.0, 0.0, above), (0.0, y_out, above),
    ])  # [8, 3]
    return f * duration, centers


def _lattice(lo, hi, spacing) -> np.ndarray:
    counts = np.maximum(np.round((np.asarray(hi) - np.asarray(lo)) / spacing).astype(int), 1)
    axes = [lo[d] + (np.arange(counts[d]) + 0.5) * (hi[d] - lo[d]) / counts[d] for d in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [M, 3]


def make_surgical_scene(out_dir, seed: int = 0, frames: int = 16, size=(64, 80), *,
                        E=(3e3, 12e3), nu: float = 0.45, density=(1000.0, 1060.0),
                        model: str = "neo_hookean", duration: float = 0.16, dt: float = 2e-4,
                        n_grid: int = 20) -> SyntheticScene:
    """Simulate and render the clip into `out_dir` (see the module docstring). Object 0 is the left
    (x < 0) block with E[0], object 1 the right one with E[1]. Deterministic per seed: the seed
    sets the tissue texture and a small jitter of the particle lattice."""
    H, W = _check_inputs(frames, size, seed)
    if len(E) != 2 or len(density) != 2:
        raise ValueError(f"make_surgical_scene: E and density need one value per block (2), got {E!r}, {density!r}")
    if not (isinstance(duration, (int, float)) and duration >= 2 * dt):
        raise ValueError(f"make_surgical_scene: duration must be at least 2 * dt = {2 * dt} s, got {duration!r}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    materials = [Material(model=model, E=float(E[o]), nu=float(nu), density=float(density[o])) for o in range(2)]

    # particles: two blocks side by side in x, touching the support at z = TOP_Z + THICK
    parts = []
    for o, sign in enumerate((-1.0, 1.0)):
        x_in, x_out = sign * GAP, sign * (GAP + 2 * HALF_XY[0])
        lo = (min(x_in, x_out), -HALF_XY[1], TOP_Z)
        hi = (max(x_in, x_out), HALF_XY[1], TOP_Z + THICK)
        parts.append(block_particles(lo, hi, SPACING, object_id=o))
    x0 = np.concatenate([p.x for p in parts])  # [N, 3]
    x0 = x0 + rng.uniform(-0.1, 0.1, x0.shape) * SPACING  # the seed's jitter, a tenth of the spacing
    particles = Particles(x=x0, volume=np.concatenate([p.volume for p in parts]),
                          object_id=np.concatenate([p.object_id for p in parts]))

    domain = 0.1
    cfg = MPMConfig(n_grid=n_grid, domain_size=domain, origin=(-domain / 2, -domain / 2, 0.05), dt=dt,
                    damping=0.999, wall="slip", check_every=50)
    times_path, centers = _tool_path(duration)
    # the support's grid nodes reach into the bottom particle layer, anchoring the tissue's base
    support_z = TOP_Z + THICK - 0.8 * SPACING
    scene = Scene(static_boxes=[StaticBox((-1.0, -1.0, support_z), (1.0, 1.0, 1.0))],
                  tool=Tool(TOOL_HALF, times_path, centers))
    sim = MPMSimulator(cfg, particles, materials, scene)

    n_sub = int(round(duration / dt))
    frame_sub = np.round(np.linspace(0, n_sub, frames)).astype(int)  # substep of each frame
    positions = [sim.positions()]
    for a, b in zip(frame_sub[:-1], frame_sub[1:]):
        if b > a:
            sim.step(int(b - a))
        positions.append(sim.positions())
    positions = np.stack(positions)  # [F, N, 3]
    times = frame_sub * dt  # [F] s
    tool_centers = np.stack([[np.interp(t, times_path, centers[:, d]) for d in range(3)] for t in times])  # [F, 3]

    # appearance: per-object colour times a mild per-particle brightness texture
    texture = rng.uniform(0.8, 1.2, len(x0))  # [N]
    tissue_rgb = np.asarray(OBJECT_COLORS)[particles.object_id] * texture[:, None]  # [N, 3]
    support_pts = _lattice((-0.07, -0.06, support_z), (0.07, 0.06, support_z + 0.001), 0.003)  # [S, 3]
    support_rgb = np.asarray(SUPPORT_COLOR) * rng.uniform(0.85, 1.15, (len(support_pts), 1))  # [S, 3]
    tool_local = _lattice(-np.asarray(TOOL_HALF), np.asarray(TOOL_HALF), 0.002)  # [T, 3]

    f = float(W)  # focal in px: the 6.4 cm wide tissue pair spans ~70% of the width at TOP_Z
    K = make_K(torch.tensor(f), torch.tensor(f), torch.tensor(W / 2), torch.tensor(H / 2)).float()  # [3, 3]
    w2c = torch.eye(4)
    depths, tissue_depths = [], []
    for i in range(frames):
        means = np.concatenate([positions[i], support_pts, tool_local + tool_centers[i]])  # [M, 3]
        is_tool = np.r_[np.zeros(len(x0) + len(support_pts)), np.ones(len(tool_local))]  # [M]
        rgb = np.concatenate([tissue_rgb, support_rgb, np.tile(TOOL_COLOR, (len(tool_local), 1))])  # [M, 3]
        sigma = np.r_[np.full(len(x0), 0.6 * SPACING), np.full(len(support_pts), 0.002),
                      np.full(len(tool_local), 0.0012)]  # [M] m
        m = torch.tensor(means, dtype=torch.float32)
        colors = torch.tensor(np.c_[rgb, is_tool], dtype=torch.float32)  # [M, 4]: RGB and tool weight
        scales = torch.tensor(sigma, dtype=torch.float32)[:, None].expand(-1, 3)  # [M, 3]
        quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(m), 4)  # [M, 4]
        with torch.no_grad():
            out = render(m, quats, scales, torch.full((len(m),), 0.9), colors, w2c, K, W, H, backend="torch")
        image = out.rgb[..., :3].clamp(0, 1).permute(2, 0, 1)  # [3, H, W]
        depth = torch.where(out.alpha > 0.5, out.depth, torch.zeros_like(out.depth))  # [H, W] m
        tool_mask = out.rgb[..., 3] > 0.5  # [H, W]
        keep = ~torch.tensor(is_tool, dtype=torch.bool)  # [M] tissue and support only
        with torch.no_grad():
            bare = render(m[keep], quats[keep], scales[keep], torch.full((int(keep.sum()),), 0.9), colors[keep],
                          w2c, K, W, H, backend="torch")
        depths.append(depth.numpy())
        tissue_depths.append(torch.where(bare.alpha > 0.5, bare.depth, torch.zeros_like(bare.depth)).numpy())
        name = f"{i:06d}.png"
        io.write_rgb(out_dir / "images" / name, image)
        io.write_depth_png(out_dir / "depth" / name, depth, DEPTH_SCALE)
        io.write_mask(out_dir / "masks" / name, tool_mask)

    write_llff_poses_bounds(out_dir / "poses_bounds.npy", K.expand(frames, 3, 3), w2c.expand(frames, 4, 4),
                            H, W, torch.tensor([[0.05, 0.2]]).expand(frames, 2))
    io.write_json(out_dir / "ground_truth.json", {
        "seed": seed,
        "objects": [
            {"id": o, "name": f"tissue_{o}", "side": ("left (x < 0)", "right (x > 0)")[o], "model": m.model,
             "E": m.E, "nu": m.nu, "density": m.density,
             "num_particles": int((particles.object_id == o).sum())}
            for o, m in enumerate(materials)
        ],
        "tool": {"half_extent": list(TOOL_HALF), "path_times": times_path.tolist(),
                 "path_centers": centers.tolist(), "frame_centers": tool_centers.tolist()},
        "support": {"z_min": support_z},
        "camera": {"K": K.tolist(), "w2c": w2c.tolist(), "width": W, "height": H,
                   "convention": "OpenCV; world frame = camera frame"},
        "depth_scale": DEPTH_SCALE,
        "depth_units": "depth PNG value / depth_scale = z in metres; 0 = nothing rendered",
        "frame_times": times.tolist(),
        "simulation": {"n_grid": n_grid, "domain_size": domain, "origin": list(cfg.origin), "dt": dt,
                       "damping": cfg.damping, "wall": cfg.wall, "particle_spacing": SPACING},
    })
    return SyntheticScene(out_dir, times, positions, particles.object_id, tool_centers, TOOL_HALF, K, W, H, materials,
                          np.stack(depths), np.stack(tissue_depths))
