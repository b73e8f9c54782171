"""A synthetic surgical clip with known materials, written in the EndoNeRF layout.

Two tissues of different known Young's modulus lie side by side on a static support; a tool
enters the view, presses on both, lets go and leaves. The MPM (`endogsim.physics`, CPU) simulates
it, and every frame is rendered by the CPU Gaussian compositor (`endogsim.render`) from one fixed
camera. Two looks (`look=`):

- "endoscopy" (default; `endogsim.synthetic_look`): two curved lobes meeting the support smoothly,
  drawn by surface discs that the simulation carries, with a vessel texture, a light at the camera
  and a metallic shaft laid across both lobes; 128 x 160 by default. Its rendered surface is where
  the material is (the depth map's volume is within 1% of the material's).
- "blocks": two 3 x 3 x 1.5 cm blocks; particles, the box tool and the support are small isotropic
  Gaussians, coloured per object with a mild per-particle texture; 64 x 80 by default. Their splats
  make the rendered tissue larger than the material (the depth map's volume is +45% at 64 x 80).

Two interactions (`interaction=`):

- "press" (default): while in contact the tool pushes the tissue under its face with a known
  constant force (into the tissue and sideways, +y), the official configs' `particle_impulse`
  (a `RegionForce` spread over the contact particles by mass); the rendered tool rides on the
  contact region. Displacement under a known force scales as 1 / E, so E is identifiable from the
  images alone; after the release the tissue springs back.
- "indent": the tool is a displacement-driven sticky collider (a kinematic box) that indents both
  blocks by INDENT and retracts. A prescribed displacement makes the quasi-static deformation of an
  elastic block independent of E: E then shows only through inertia, weakly (the loss-vs-E
  curves in the README).

World frame = the camera frame (OpenCV: x right, y down, z forward), so every w2c is the identity
and "down" into the tissue is +z, away from the camera: indentation shows as a depth increase.

Written files (`read_endonerf(out_dir, depth_scale=DEPTH_SCALE)` reads them back in metres):

    images/%06d.png     RGB
    depth/%06d.png      16-bit, value = round(z [m] * DEPTH_SCALE), 0 = nothing rendered
    masks/%06d.png      white (255) = tool (the tool's compositing weight > 0.5)
    poses_bounds.npy    LLFF, identity poses (`common.cameras.write_llff_poses_bounds`)
    ground_truth.json   materials per object, the interaction, the tool path, camera, depth scale,
                        frame times, solver settings, seed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.cameras import make_K, write_llff_poses_bounds
from common.datasets import io

from .physics import (Material, MPMConfig, MPMSimulator, Particles, RegionForce, Interactions, StaticBox, Tool,
                      block_particles)
from .render import render
from . import synthetic_look as endo

__all__ = ["DEPTH_SCALE", "INTERACTIONS", "LOOKS", "SceneSetup", "SyntheticScene", "build_setup", "simulate_positions",
           "tool_poses", "render_frame", "make_surgical_scene"]

DEPTH_SCALE = 10000.0  # depth PNG units per metre (0.1 mm steps, up to 6.5 m)
SPACING = 0.0025  # m, particle lattice spacing (half a grid cell)
TOP_Z = 0.09  # m, camera-facing tissue surface
THICK = 0.015  # m, tissue thickness along z
HALF_XY = (0.015, 0.015)  # m, half sizes of each block in x and y
GAP = 0.002  # m, half the gap between the two blocks (x)
TOOL_HALF = (0.012, 0.004, 0.01)  # m, the tool box straddles the junction of both blocks
INDENT = 0.006  # m, "indent": how far the tool face goes below the tissue surface
PRESS_FORCE = (0.0, 0.25, 0.12)  # N, "press": total force on the contact particles (sideways +y, into +z)
PRESS_DEPTH = 2  # "press": particle layers under the tool face that take the force
TISSUE_SIGMA = 0.8 * SPACING  # m, isotropic scale of a tissue Gaussian (the top layer hides the interior)
OPACITY = 0.99  # tissue is opaque: what the camera sees moves with the surface, not a blend of layers
OBJECT_COLORS = ((0.86, 0.42, 0.42), (0.78, 0.58, 0.36))  # soft block, stiff block
SUPPORT_COLOR, TOOL_COLOR = (0.35, 0.22, 0.22), (0.62, 0.64, 0.68)
INTERACTIONS = ("press", "indent")
LOOKS = ("blocks", "endoscopy")
DEFAULT_SIZE = {"blocks": (64, 80), "endoscopy": (128, 160)}
ENDO_PRESS_FORCE = (0.0, 0.12, 0.06)  # N, "endoscopy" press default (shared by both lobes by mass)
# the phases of the clip as fractions of its duration
F_TOUCH, F_RELEASE = 0.2, 0.7  # "press": force on at F_TOUCH, off at F_RELEASE


@dataclass
class SceneSetup:
    """Everything needed to simulate and render the clip: the MPM inputs (particles, materials,
    config, scene), the frame substeps [F] (a multiple of `frame_every`), the tissue colours [N, 3]
    ("endoscopy": the surface discs' lit at rest, zero for the lattice particles), the static support
    Gaussians [S, 3] and colours [S, 3], the tool's Gaussians in its own frame [T, 3], the camera,
    the interaction ("press": the contact particles [N] bool, never a disc, and the force) and the
    look ("endoscopy": `appearance` holds the discs' shapes, normals and albedo)."""

    interaction: str
    particles: Particles
    materials: list
    config: MPMConfig
    scene: Interactions
    frame_every: int
    frame_substeps: np.ndarray
    tissue_colors: np.ndarray
    support_points: np.ndarray
    support_colors: np.ndarray
    tool_local: np.ndarray
    K: torch.Tensor
    width: int
    height: int
    tool_path: tuple  # (times [K], centres [K, 3]) of the kinematic parts of the tool's motion
    contact: np.ndarray | None = None  # [N] bool, "press" only
    force: tuple | None = None  # N, "press" only
    look: str = "blocks"
    appearance: endo.EndoscopyLook | None = None

    @property
    def times(self) -> np.ndarray:
        return self.frame_substeps * self.config.dt  # [F] s


@dataclass
class SyntheticScene:
    """What `make_surgical_scene` wrote, in memory: frame times [F] (s), simulated particle positions
    [F, N, 3] with their object ids [N], the tool centres [F, 3] and axes [F, 3], K [3, 3] / width /
    height, the unquantised depth [F, H, W] (m) that was written, and the depth of the tissue and
    support alone [F, H, W] (rendered without the tool, which hides its own footprint)."""

    out_dir: Path
    times: np.ndarray
    positions: np.ndarray
    object_id: np.ndarray
    tool_centers: np.ndarray
    tool_half_extent: tuple | None  # the box tool's ("blocks"); None for the shaft
    K: torch.Tensor
    width: int
    height: int
    materials: list
    depth: np.ndarray
    tissue_depth: np.ndarray
    setup: SceneSetup | None = None
    tool_axes: np.ndarray | None = None
    look: str = "blocks"


def _check_inputs(frames, size, seed, interaction, look) -> tuple[int, int]:
    if not isinstance(look, str) or look not in LOOKS:
        raise ValueError(f"make_surgical_scene: look must be one of {LOOKS}, got {look!r}")
    if interaction not in INTERACTIONS:
        raise ValueError(f"make_surgical_scene: interaction must be one of {INTERACTIONS}, got {interaction!r}")
    if look == "endoscopy" and interaction != "press":
        raise ValueError(f"make_surgical_scene: look 'endoscopy' supports interaction 'press' only, got "
                         f"{interaction!r}")
    size = DEFAULT_SIZE[look] if size is None else size
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 2:
        raise ValueError(f"make_surgical_scene: frames must be an int >= 2, got {frames!r}")
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"make_surgical_scene: size must be (H, W) with two positive ints, got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"make_surgical_scene: seed must be an int, got {seed!r}")
    return int(size[0]), int(size[1])


ABOVE = TOP_Z - TOOL_HALF[2] - 0.009  # tool centre z with its face 9 mm above the tissue (beyond the MPM stencil)
TOUCH = TOP_Z - TOOL_HALF[2]  # tool centre z with its face on the tissue surface
Y_OUT = 0.075  # m, tool centre y out of view


def _indent_path(duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Enter from out of view (-y), descend to INDENT below the surface, hold, retract, leave (+y)."""
    down = TOUCH + INDENT
    f = np.array([0.0, 0.12, 0.2, 0.45, 0.55, 0.7, 0.88, 1.0])
    centers = np.array([
        (0.0, -Y_OUT, ABOVE), (0.0, 0.0, ABOVE), (0.0, 0.0, ABOVE), (0.0, 0.0, down),
        (0.0, 0.0, down), (0.0, 0.0, ABOVE), (0.0, 0.0, ABOVE), (0.0, Y_OUT, ABOVE),
    ])  # [8, 3]
    return f * duration, centers


def _lattice(lo, hi, spacing) -> np.ndarray:
    counts = np.maximum(np.round((np.asarray(hi) - np.asarray(lo)) / spacing).astype(int), 1)
    axes = [lo[d] + (np.arange(counts[d]) + 0.5) * (hi[d] - lo[d]) / counts[d] for d in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [M, 3]


def build_setup(seed: int = 0, frames: int = 16, size=None, *, E=(3e3, 12e3), nu: float = 0.45,
                density=(1000.0, 1060.0), model: str = "neo_hookean", duration: float = 0.15, dt: float = 2e-4,
                n_grid: int = 20, interaction: str = "press", force=None, damping: float | None = None,
                checkpoint_every: int | None = None, look: str = "endoscopy") -> SceneSetup:
    """The clip's inputs without simulating or writing anything (see `make_surgical_scene`).
    Frames are `frame_every = round(duration / dt / (frames - 1))` substeps apart. Damping per
    substep defaults to 0.995 for "press" (tissue in the body is damped by what surrounds it;
    the spring-back then settles within the clip) and 0.999 for "indent". size (H, W) and force
    default to the look's (DEFAULT_SIZE; PRESS_FORCE or ENDO_PRESS_FORCE)."""
    H, W = _check_inputs(frames, size, seed, interaction, look)
    if force is None:
        force = ENDO_PRESS_FORCE if look == "endoscopy" else PRESS_FORCE
    if len(E) != 2 or len(density) != 2:
        raise ValueError(f"make_surgical_scene: E and density need one value per block (2), got {E!r}, {density!r}")
    if not (isinstance(duration, (int, float)) and duration >= 2 * dt):
        raise ValueError(f"make_surgical_scene: duration must be at least 2 * dt = {2 * dt} s, got {duration!r}")
    rng = np.random.default_rng(seed)
    materials = [Material(model=model, E=float(E[o]), nu=float(nu), density=float(density[o])) for o in range(2)]

    f = float(W)  # focal in px: the 6.4 cm wide tissue pair spans ~70% of the width at TOP_Z
    K = make_K(torch.tensor(f), torch.tensor(f), torch.tensor(W / 2), torch.tensor(H / 2)).float()  # [3, 3]
    look_data, n_discs = None, 0
    if look == "endoscopy":  # lobes on the support at z = TOP_Z + THICK; surface discs first
        particles, look_data, disc_rgb = endo.build_look(rng, f, SPACING, TOP_Z + THICK)
        x0, n_discs = particles.x, look_data.n_discs
    else:  # particles: two blocks side by side in x, touching the support at z = TOP_Z + THICK
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

    frame_every = max(1, int(round(duration / dt / (frames - 1))))
    n_sub = frame_every * (frames - 1)
    duration = n_sub * dt  # the clip's exact length
    domain = 0.1
    if damping is None:
        damping = 0.995 if interaction == "press" else 0.999
    cfg = MPMConfig(n_grid=n_grid, domain_size=domain, origin=(-domain / 2, -domain / 2, 0.05), dt=dt,
                    damping=damping, wall="slip", check_every=50, checkpoint_every=checkpoint_every)
    # the support's grid nodes reach into the bottom particle layer, anchoring the tissue's base
    support_z = TOP_Z + THICK - 0.8 * SPACING
    statics = [StaticBox((-1.0, -1.0, support_z), (1.0, 1.0, 1.0))]
    contact, force_value = None, None
    if interaction == "indent":
        tool_path = _indent_path(duration)
        scene = Interactions(static_boxes=statics, tool=Tool(TOOL_HALF, *tool_path))
    else:
        # the contact particles: the top PRESS_DEPTH layers under the tool's face at rest ("endoscopy":
        # under the shaft laid across both lobes' tops)
        lo = (-TOOL_HALF[0], -TOOL_HALF[1], TOP_Z - SPACING)
        hi = (TOOL_HALF[0], TOOL_HALF[1], TOP_Z + (PRESS_DEPTH - 0.5) * SPACING)
        if look == "endoscopy":
            reach = endo.LOBE_GAP + 2 * endo.LOBE_HALF[0]
            lo = (-reach, -endo.CONTACT_HALF_Y, TOP_Z - SPACING)
            hi = (reach, endo.CONTACT_HALF_Y, TOP_Z + PRESS_DEPTH * SPACING)
        contact = np.all((x0 >= lo) & (x0 <= hi), axis=1) & (np.arange(len(x0)) >= n_discs)  # [N]
        force_value = tuple(float(f) for f in force)
        t_on, t_off = F_TOUCH * duration, F_RELEASE * duration
        scene = Interactions(static_boxes=statics, forces=[RegionForce(lo, hi, force_value, t_on, t_off)])
        above, touch = (ABOVE, TOUCH) if look == "blocks" else (TOP_Z - endo.SHAFT_RADIUS - 0.009,
                                                                TOP_Z - endo.SHAFT_RADIUS)
        tool_path = (np.array([0.0, 0.12, F_TOUCH]) * duration,
                     np.array([(0.0, -Y_OUT, above), (0.0, 0.0, above), (0.0, 0.0, touch)]))
    if look == "endoscopy":
        app = look_data
        tissue_rgb = np.r_[disc_rgb, np.zeros((len(x0) - n_discs, 3))]  # [N, 3]
        return SceneSetup(interaction, particles, materials, cfg, scene, frame_every, np.arange(frames) * frame_every,
                          tissue_rgb, app.support_points, app.support_rgb, app.tool_points, K, W, H, tool_path,
                          contact, force_value, look, app)

    # appearance: per-object colour times a mild per-particle brightness texture
    texture = rng.uniform(0.8, 1.2, len(x0))  # [N]
    tissue_rgb = np.asarray(OBJECT_COLORS)[particles.object_id] * texture[:, None]  # [N, 3]
    # the support's visible surface is where the tissue ends (its base), one layer of Gaussians
    base = TOP_Z + THICK
    support_pts = _lattice((-0.07, -0.06, base - 0.0005), (0.07, 0.06, base + 0.0005), 0.003)  # [S, 3]
    # distinct depths (a 0.2 mm ramp over the lattice, steps above float32 resolution) so the renderer's
    # depth sort has no ties: with ties, the order of overlapping support Gaussians would depend on what
    # else is drawn
    support_pts[:, 2] += 2e-4 * np.arange(len(support_pts)) / len(support_pts)
    support_rgb = np.asarray(SUPPORT_COLOR) * rng.uniform(0.85, 1.15, (len(support_pts), 1))  # [S, 3]
    tool_local = _lattice(-np.asarray(TOOL_HALF), np.asarray(TOOL_HALF), 0.002)  # [T, 3]
    return SceneSetup(interaction, particles, materials, cfg, scene, frame_every,
                      np.arange(frames) * frame_every, tissue_rgb, support_pts, support_rgb, tool_local, K, W, H,
                      tool_path, contact, force_value)


def simulate_positions(setup: SceneSetup, with_F: bool = False):
    """Forward-simulate the clip: particle positions [F, N, 3] at the frames (frame 0 = rest), and
    with_F their deformation gradients [F, N, 3, 3] too (a tuple)."""
    sim = MPMSimulator(setup.config, setup.particles, setup.materials, setup.scene)
    positions, grads = [sim.positions()], [sim.state.F.numpy().astype(np.float64)] if with_F else None
    for _ in setup.frame_substeps[1:]:
        sim.step(setup.frame_every)
        positions.append(sim.positions())
        if with_F:
            grads.append(sim.state.F.numpy().astype(np.float64))
    return (np.stack(positions), np.stack(grads)) if with_F else np.stack(positions)  # [F, N, 3], [F, N, 3, 3]


def tool_poses(setup: SceneSetup, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tool's centre [F, 3] and axis [F, 3] (unit; the box's x, the shaft's axis) at each frame.
    "indent": its path. "press": the approach path until the touch, then riding on the tissue it
    pushes (the touch point plus the contact particles' mean displacement; "endoscopy": the shaft
    through both lobes' contact points, each moved by its lobe's contact particles), then up and
    out of view (+y) from where it let go, the axis turning back to +x."""
    times = setup.times
    tp, cp = setup.tool_path
    x_axis = np.array([1.0, 0.0, 0.0])
    if setup.interaction == "indent":
        return np.stack([[np.interp(t, tp, cp[:, d]) for d in range(3)] for t in times]), np.tile(x_axis, (len(times), 1))
    duration = times[-1]
    t_on, t_off = F_TOUCH * duration, F_RELEASE * duration
    oid = setup.particles.object_id
    groups = [setup.contact] if setup.look == "blocks" else [setup.contact & (oid == o) for o in (0, 1)]
    x_mean = positions[0, setup.contact, 0].mean()
    points = np.stack([cp[-1] + [positions[0, g, 0].mean() - x_mean, 0, 0] + positions[:, g].mean(1)
                       - positions[0, g].mean(0) for g in groups])  # [G, F, 3] where the tool touches each group
    ride = points.mean(0)  # [F, 3]
    ride_axis = points[-1] - points[0] if len(groups) > 1 else np.tile(x_axis, (len(times), 1))  # [F, 3]
    ride_axis = ride_axis / np.linalg.norm(ride_axis, axis=1, keepdims=True)
    k_off = max(int(np.searchsorted(times, t_off, side="left")) - 1, 0)  # last frame under the force
    last = ride[k_off]
    leave_t = np.array([t_off, 0.85 * duration, duration])
    leave_c = np.array([last, (last[0], last[1], cp[0, 2]), (0.0, Y_OUT, cp[0, 2])])  # [3, 3]
    centers, axes = [], []
    for i, t in enumerate(times):
        if t <= t_on:
            centers.append([np.interp(t, tp, cp[:, d]) for d in range(3)])
            axes.append(x_axis)
        elif t < t_off:
            centers.append(ride[i])
            axes.append(ride_axis[i])
        else:
            centers.append([np.interp(t, leave_t, leave_c[:, d]) for d in range(3)])
            a = np.interp(t, leave_t[:2], [1.0, 0.0]) * ride_axis[k_off] + np.interp(t, leave_t[:2], [0.0, 1.0]) * x_axis
            axes.append(a / np.linalg.norm(a))
    return np.asarray(centers, np.float64), np.asarray(axes, np.float64)  # [F, 3], [F, 3]


def render_frame(setup: SceneSetup, tissue_positions: np.ndarray, tool_center: np.ndarray | None, *,
                 F: np.ndarray | None = None, tool_axis=(1.0, 0.0, 0.0)):
    """One frame: image [3, H, W], depth [H, W] (m, 0 where nothing), tool mask [H, W] (the tool's
    compositing weight > 0.5) and the depth of the tissue and support alone [H, W]. "endoscopy"
    also takes the particles' F [N, 3, 3] (None: rest) and the tool's axis [3]."""
    if setup.look == "endoscopy":
        pose = None if tool_center is None else (tool_center, np.asarray(tool_axis, np.float64))
        return endo.render_endoscopy(setup.appearance, tissue_positions, F, pose, setup.K, setup.width, setup.height)
    n, s = len(tissue_positions), len(setup.support_points)
    parts = [tissue_positions, setup.support_points]
    rgb = [setup.tissue_colors, setup.support_colors]
    sigma = [np.full(n, TISSUE_SIGMA), np.full(s, 0.002)]
    if tool_center is not None:
        parts.append(setup.tool_local + tool_center)
        rgb.append(np.tile(TOOL_COLOR, (len(setup.tool_local), 1)))
        sigma.append(np.full(len(setup.tool_local), 0.0012))
    means = np.concatenate(parts)  # [M, 3]
    is_tool = np.r_[np.zeros(n + s), np.ones(len(means) - n - s)]  # [M]
    m = torch.tensor(means, dtype=torch.float32)
    colors = torch.tensor(np.c_[np.concatenate(rgb), is_tool], dtype=torch.float32)  # [M, 4]: RGB and tool weight
    scales = torch.tensor(np.concatenate(sigma), dtype=torch.float32)[:, None].expand(-1, 3)  # [M, 3]
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(m), 4)  # [M, 4]
    w2c, K, W, H = torch.eye(4), setup.K, setup.width, setup.height
    with torch.no_grad():
        out = render(m, quats, scales, torch.full((len(m),), OPACITY), colors, w2c, K, W, H, backend="torch")
        keep = slice(0, n + s)  # tissue and support only
        bare = render(m[keep], quats[keep], scales[keep], torch.full((n + s,), OPACITY), colors[keep],
                      w2c, K, W, H, backend="torch")
    image = out.rgb[..., :3].clamp(0, 1).permute(2, 0, 1)  # [3, H, W]
    depth = torch.where(out.alpha > 0.5, out.depth, torch.zeros_like(out.depth))  # [H, W] m
    tool_mask = out.rgb[..., 3] > 0.5  # [H, W]
    tissue_depth = torch.where(bare.alpha > 0.5, bare.depth, torch.zeros_like(bare.depth))  # [H, W]
    return image, depth, tool_mask, tissue_depth


def make_surgical_scene(out_dir, seed: int = 0, frames: int = 16, size=None, *,
                        E=(3e3, 12e3), nu: float = 0.45, density=(1000.0, 1060.0),
                        model: str = "neo_hookean", duration: float = 0.15, dt: float = 2e-4,
                        n_grid: int = 20, interaction: str = "press", force=None,
                        damping: float | None = None, look: str = "endoscopy") -> SyntheticScene:
    """Simulate and render the clip into `out_dir` (see the module docstring). Object 0 is the left
    (x < 0) tissue with E[0], object 1 the right one with E[1]. Deterministic per seed: the seed
    sets the tissue texture and a small jitter of the particle lattice. size (H, W) defaults to
    the look's: 128 x 160 ("endoscopy"), 64 x 80 ("blocks")."""
    setup = build_setup(seed, frames, size, E=E, nu=nu, density=density, model=model, duration=duration, dt=dt,
                        n_grid=n_grid, interaction=interaction, force=force, damping=damping, look=look)
    out_dir = Path(out_dir)
    endoscopy = look == "endoscopy"
    positions, grads = simulate_positions(setup, with_F=True) if endoscopy else (simulate_positions(setup), None)
    centers, axes = tool_poses(setup, positions)  # [F, 3], [F, 3]
    H, W, K = setup.height, setup.width, setup.K
    depths, tissue_depths = [], []
    for i in range(frames):
        image, depth, tool_mask, tissue_depth = render_frame(setup, positions[i], centers[i], tool_axis=axes[i],
                                                             F=None if grads is None else grads[i])
        depths.append(depth.numpy())
        tissue_depths.append(tissue_depth.numpy())
        name = f"{i:06d}.png"
        io.write_rgb(out_dir / "images" / name, image)
        io.write_depth_png(out_dir / "depth" / name, depth, DEPTH_SCALE)
        io.write_mask(out_dir / "masks" / name, tool_mask)

    w2c = torch.eye(4)
    write_llff_poses_bounds(out_dir / "poses_bounds.npy", K.expand(frames, 3, 3), w2c.expand(frames, 4, 4),
                            H, W, torch.tensor([[0.05, 0.2]]).expand(frames, 2))
    cfg, particles, materials = setup.config, setup.particles, setup.materials
    times = setup.times
    if interaction == "press":
        f = setup.scene.forces[0]
        action = {"kind": "press", "force_N": list(f.force), "region_lo": list(f.lo), "region_hi": list(f.hi),
                  "start": f.start, "end": f.end, "num_contact_particles": int(setup.contact.sum()),
                  "note": "constant force spread over the contact particles by mass (RegionForce); the "
                          "rendered tool rides on them and is not a collider"}
    else:
        action = {"kind": "indent", "note": "the tool is a displacement-driven sticky box collider (Tool)"}
    objects = [{"id": o, "name": f"tissue_{o}", "side": ("left (x < 0)", "right (x > 0)")[o], "model": m.model,
                "E": m.E, "nu": m.nu, "density": m.density, "num_particles": int((particles.object_id == o).sum()),
                "volume_m3": float(particles.volume[particles.object_id == o].sum())}
               for o, m in enumerate(materials)]
    tool = {"shape": "box", "half_extent": list(TOOL_HALF)}
    if endoscopy:
        for o in objects:
            o["surface_volume_m3"] = endo.lobe_volume()
        tool = {"shape": "shaft", **endo.SHAFT_RECORD}
    record = {
        "seed": seed,
        "look": look,
        "objects": objects,
        "interaction": action,
        "tool": {**tool, "path_times": setup.tool_path[0].tolist(), "path_centers": setup.tool_path[1].tolist(),
                 "frame_centers": centers.tolist(), "frame_axes": axes.tolist()},
        "support": {"z_min": setup.scene.static_boxes[0].lo[2], "surface_z": TOP_Z + THICK,
                    "note": "z_min: where the grid nodes are held; surface_z: the rendered support surface"},
        "camera": {"K": K.tolist(), "w2c": w2c.tolist(), "width": W, "height": H,
                   "convention": "OpenCV; world frame = camera frame"},
        "depth_scale": DEPTH_SCALE,
        "depth_units": "depth PNG value / depth_scale = z in metres; 0 = nothing rendered",
        "frame_times": times.tolist(),
        "simulation": {"n_grid": n_grid, "domain_size": cfg.domain_size, "origin": list(cfg.origin), "dt": dt,
                       "damping": cfg.damping, "wall": cfg.wall, "particle_spacing": SPACING,
                       "frame_every": setup.frame_every, "gravity": list(cfg.gravity)},
    }
    if endoscopy:
        record["appearance"] = endo.describe(setup.appearance, TOP_Z + THICK)
    io.write_json(out_dir / "ground_truth.json", record)
    return SyntheticScene(out_dir, times, positions, particles.object_id, centers, None if endoscopy else TOOL_HALF,
                          K, W, H, materials, np.stack(depths), np.stack(tissue_depths), setup, axes, look)
