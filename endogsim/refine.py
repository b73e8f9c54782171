"""Material refinement: per-object E and nu fitted through the differentiable MPM and the renderer.

EndoGSim refines the MLLM-initialised object-wise material field by differentiable MPM under "joint
supervision from rendered images and optical flow" (paper, method; the official code's loop is
summarised in the anchors notes, section 1.3). Here, per iteration:

1. `MPMSimulator.rollout` simulates the fitted frames from the rest state, differentiable in the
   per-object parameters (full-horizon gradient, checkpointed segments; the official code tapes
   only the last substep).
2. Every Gaussian bound to a particle moves with it (mean = particle position + its rest offset);
   the CPU compositor (`endogsim.render`) renders each frame's colour, plus, as two extra rendered
   channels, the simulated optical flow: each Gaussian's projected displacement to the next frame,
   alpha-composited like a colour (premultiplied; the static background contributes zero flow).
3. Loss = w_image * MSE(rendered, observed) over tissue pixels (the tool mask, dilated by a pixel,
   is left out) + w_flow * mean squared end-point error between the simulated flow and the
   observed flow over the pixels where the observed flow is valid.
4. Adam on log10(E) and nu (PhysFlow's update works in log10 space); after each step the values
   are projected into their bounds and below the solver's elastic-wave time-step limit.

The observed flow is either given (`Observations.flows`, e.g. from a reconstructed 4DGS's
motion) or, by default, computed here from the observed frames by a classical iterative
Lucas-Kanade (`lucas_kanade`, tool pixels excluded from its windows) - the official code uses
RAFT, which needs pretrained weights.

`python -m endogsim.refine --data DIR --out OUT` runs the demonstration on the synthetic scene
(`endogsim.synthetic_scene`) from its ground-truth particles, starting from the literature table
(`material_prior.TABLE`), and writes `refine.json` and `trajectories.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.metrics import psnr

from .physics import Material, MPMConfig, MPMSimulator, Particles, Scene
from .render import render

__all__ = ["RefineConfig", "GaussianBinding", "Camera", "Observations", "RefineResult", "RefineInputError",
           "refine_materials", "simulate_frames", "lucas_kanade", "flow_loss", "render_particles",
           "bind_isotropic", "StaticGaussians", "stable_E_max", "visible_at_rest", "synthetic_problem",
           "prior_materials", "run_synthetic_demo", "scan_loss", "future_psnr"]


class RefineInputError(ValueError):
    """Bad input to the refinement; the message names the field and what was expected."""


@dataclass
class RefineConfig:
    """How the per-object parameters are fitted (one field per knob; `key=value` on the CLI)."""

    iterations: int = 30
    lr_log_E: float = 0.05  # Adam step on log10(E) (about 12% per step at most)
    lr_nu: float = 0.005  # Adam step on nu
    lr_final: float = 0.1  # cosine decay of both steps to this fraction at the last iteration (as PhysFlow's schedule)
    fit_nu: bool = True  # also fit nu (else kept at its initial value)
    objects: tuple | None = None  # object ids to fit; None = every object
    w_image: float = 1.0  # weight of the masked image MSE ([0, 1] colours)
    w_flow: float = 0.01  # weight of the flow MSE (px^2)
    flow: str = "lucas_kanade"  # observed flow: "lucas_kanade" (computed here) or "given" (Observations.flows)
    lk_sigma: float = 2.0  # px, Gaussian window of Lucas-Kanade
    lk_iterations: int = 5  # warping iterations of Lucas-Kanade
    lk_min_eig: float = 1e-4  # smallest structure-tensor eigenvalue of a valid flow pixel
    mask_dilate: int = 1  # px the tool mask is grown by before it is left out
    cull_weight: float = 0.005  # drop Gaussians whose summed compositing weight at rest is below this (px); 0 keeps all
    log_E_bounds: tuple = (2.0, 7.0)  # log10 Pa
    nu_bounds: tuple = (0.1, 0.45)
    cfl_margin: float = 0.95  # E stays below this fraction of the time-step limit's E
    tile_size: int = 16  # renderer tile

    def __post_init__(self):
        if not isinstance(self.iterations, int) or self.iterations < 0:
            raise RefineInputError(f"RefineConfig.iterations: expected an int >= 0, got {self.iterations!r}")
        if self.flow not in ("lucas_kanade", "given"):
            raise RefineInputError(f"RefineConfig.flow: expected 'lucas_kanade' or 'given', got {self.flow!r}")
        for name in ("lr_log_E", "lr_nu", "w_image", "w_flow", "lk_sigma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise RefineInputError(f"RefineConfig.{name}: expected a finite number >= 0, got {v!r}")
        if self.w_image == 0 and self.w_flow == 0:
            raise RefineInputError("RefineConfig: w_image and w_flow are both 0, nothing to fit")
        lo, hi = self.nu_bounds
        if not 0.0 <= lo < hi < 0.5:
            raise RefineInputError(f"RefineConfig.nu_bounds: expected 0 <= lo < hi < 0.5, got {self.nu_bounds!r}")


@dataclass
class GaussianBinding:
    """Gaussians that move with particles: particle [G] (index of each Gaussian's particle),
    offsets [G, 3] (m, Gaussian mean minus particle position at rest), colors [G, 3], scales
    [G, 3] (activated), quats [G, 4] (w, x, y, z), opacities [G] in (0, 1)."""

    particle: torch.Tensor
    offsets: torch.Tensor
    colors: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor

    def check(self, n_particles: int) -> None:
        G = len(self.particle)
        expect = {"particle": (G,), "offsets": (G, 3), "colors": (G, 3), "scales": (G, 3), "quats": (G, 4),
                  "opacities": (G,)}
        for name, shape in expect.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise RefineInputError(f"GaussianBinding.{name}: expected a tensor of shape {shape}, "
                                       f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if G == 0:
            raise RefineInputError("GaussianBinding.particle: expected at least one Gaussian")
        ints = self.particle.dtype in (torch.int32, torch.int64)
        if not ints or self.particle.min() < 0 or self.particle.max() >= n_particles:
            raise RefineInputError(f"GaussianBinding.particle: expected integer indices in [0, {n_particles}) "
                                   f"(the particles), got range [{int(self.particle.min())}, "
                                   f"{int(self.particle.max())}]")


def bind_isotropic(particles: Particles, colors, sigma: float, opacity: float = 0.9) -> GaussianBinding:
    """One isotropic Gaussian per particle, centred on it (the synthetic scene's appearance model)."""
    n = len(particles.x)
    return GaussianBinding(particle=torch.arange(n), offsets=torch.zeros(n, 3),
                           colors=torch.as_tensor(np.asarray(colors), dtype=torch.float32),
                           scales=torch.full((n, 3), float(sigma)), quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
                           opacities=torch.full((n,), float(opacity)))


@dataclass
class StaticGaussians:
    """Gaussians that do not move (the background: the support, the rest of the scene), rendered
    together with the bound ones so that depth ordering is exact: means [S, 3], colors [S, 3],
    scales [S, 3], quats [S, 4], opacities [S]."""

    means: torch.Tensor
    colors: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor

    @staticmethod
    def isotropic(points, colors, sigma: float, opacity: float = 0.9) -> "StaticGaussians":
        n = len(points)
        return StaticGaussians(torch.as_tensor(np.asarray(points), dtype=torch.float32),
                               torch.as_tensor(np.asarray(colors), dtype=torch.float32),
                               torch.full((n, 3), float(sigma)), torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
                               torch.full((n,), float(opacity)))


@dataclass
class Camera:
    K: torch.Tensor  # [3, 3]
    w2c: torch.Tensor  # [4, 4]
    width: int
    height: int


@dataclass
class Observations:
    """The observed clip: images [F, H, W, 3] in [0, 1], tool masks [F, H, W] (True = tool), frame
    times [F] in s (times[0] = 0 is the particles' rest state; equal spacing, a whole number of
    MPM substeps), and optionally the observed flow [F - 1, H, W, 2] (px, frame i to i + 1, at
    frame i's pixels) with its validity [F - 1, H, W]."""

    images: torch.Tensor
    tool_masks: torch.Tensor
    times: torch.Tensor
    flows: torch.Tensor | None = None
    flow_valid: torch.Tensor | None = None

    def check(self, camera: Camera) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise RefineInputError(f"Observations.images: expected [F, H, W, 3], got "
                                   f"{tuple(getattr(self.images, 'shape', ()))}")
        Fn, H, W, _ = self.images.shape
        if (H, W) != (camera.height, camera.width):
            raise RefineInputError(f"Observations.images: frames are {H}x{W} (HxW) but the camera is "
                                   f"{camera.height}x{camera.width}")
        if Fn < 2:
            raise RefineInputError(f"Observations.images: expected at least 2 frames, got {Fn}")
        if not isinstance(self.tool_masks, torch.Tensor) or tuple(self.tool_masks.shape) != (Fn, H, W):
            raise RefineInputError(f"Observations.tool_masks: expected shape {(Fn, H, W)} (one mask per frame, "
                                   f"same size as the images), got {tuple(getattr(self.tool_masks, 'shape', ()))}")
        if not isinstance(self.times, torch.Tensor) or tuple(self.times.shape) != (Fn,):
            raise RefineInputError(f"Observations.times: expected shape ({Fn},), got "
                                   f"{tuple(getattr(self.times, 'shape', ()))}")
        if self.flows is not None:
            if tuple(self.flows.shape) != (Fn - 1, H, W, 2):
                raise RefineInputError(f"Observations.flows: expected shape {(Fn - 1, H, W, 2)}, "
                                       f"got {tuple(self.flows.shape)}")
            if self.flow_valid is not None and tuple(self.flow_valid.shape) != (Fn - 1, H, W):
                raise RefineInputError(f"Observations.flow_valid: expected shape {(Fn - 1, H, W)}, "
                                       f"got {tuple(self.flow_valid.shape)}")


@dataclass
class RefineResult:
    E: list  # refined E per object, Pa
    nu: list
    materials: list  # the refined endogsim.physics.Material per object
    initial_E: list
    initial_nu: list
    objects: list  # the fitted object ids
    history: list = field(default_factory=list)  # per iteration: E, nu, loss, image, flow, seconds per stage
    flow_source: str = ""
    n_gaussians: tuple = ()  # (rendered after culling, given)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["materials"] = [asdict(m) for m in self.materials]
        return d


# ---------------------------------------------------------------------------------------- checks
def stable_E_max(material: Material, nu: float, config: MPMConfig, margin: float = 0.95) -> float:
    """The largest E the explicit MPM's elastic-wave limit dt <= cfl dx / c allows (times margin),
    c^2 = E (1 - nu) / ((1 + nu)(1 - 2 nu) rho) the P-wave speed squared."""
    c_max = config.cfl * config.dx / config.dt
    return margin * material.density * c_max**2 * (1 + nu) * (1 - 2 * nu) / (1 - nu)


def _frame_step(times: torch.Tensor, dt: float) -> int:
    t = times.detach().double().cpu().numpy()
    if abs(t[0]) > 1e-9:
        raise RefineInputError(f"Observations.times: expected times[0] = 0 (the particles' rest state), got {t[0]}")
    steps = t / dt
    every = int(round(steps[1]))
    if every < 1 or np.any(np.abs(steps - every * np.arange(len(t))) > 1e-3):
        raise RefineInputError(f"Observations.times: expected equally spaced times, a whole number of MPM substeps "
                               f"(dt = {dt}) apart, got {t.tolist()}")
    return every


def _objects(cfg: RefineConfig, n_objects: int) -> list[int]:
    if cfg.objects is None:
        return list(range(n_objects))
    objs = list(cfg.objects)
    for o in objs:
        if not isinstance(o, (int, np.integer)) or not 0 <= o < n_objects:
            raise RefineInputError(f"RefineConfig.objects: unknown object id {o!r}; the materials list has ids "
                                   f"0..{n_objects - 1}")
    return objs


# ---------------------------------------------------------------------------------------- flow
def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with zero padding."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()  # [2r + 1]
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


def _warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """img [B, C, H, W] sampled at x + flow (flow [B, H, W, 2] in px), bilinear, border clamp."""
    B, _, H, W = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=img.dtype), torch.arange(W, dtype=img.dtype), indexing="ij")
    gx = 2 * (xs + flow[..., 0]) / max(W - 1, 1) - 1  # [B, H, W]
    gy = 2 * (ys + flow[..., 1]) / max(H - 1, 1) - 1
    return F.grid_sample(img, torch.stack([gx, gy], -1), align_corners=True, padding_mode="border")


def lucas_kanade(images: torch.Tensor, masks: torch.Tensor | None = None, sigma: float = 2.0,
                 iterations: int = 5, min_eig: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense iterative Lucas-Kanade flow between consecutive frames.

    images [F, H, W, 3] in [0, 1]; masks [F, H, W] True where a pixel must not be used (the tool).
    Returns flow [F - 1, H, W, 2] (px, x then y, from frame i to i + 1 at frame i's pixels) and its
    validity [F - 1, H, W] (the window's structure tensor is well conditioned and no masked pixel
    is involved). Each iteration warps frame i + 1 by the current flow and solves the 2x2 normal
    equations of the linearised brightness constancy in a Gaussian window (Lucas & Kanade 1981).
    """
    gray = images.mean(-1)[:, None].double()  # [F, 1, H, W]
    I0, I1 = gray[:-1], gray[1:]  # [B, 1, H, W]
    B, _, H, W = I0.shape
    use = torch.ones_like(I0)
    if masks is not None:
        bad = masks.double()[:, None]  # [F, 1, H, W]
        grown = F.max_pool2d(bad, 3, 1, 1)  # [F, 1, H, W] the gradient stencil reaches a pixel further
        use = (1 - grown[:-1]) * (1 - grown[1:])  # [B, 1, H, W]
    gx = F.pad((I0[..., 2:] - I0[..., :-2]) / 2, (1, 1, 0, 0), mode="replicate")  # [B, 1, H, W]
    gy = F.pad((I0[..., 2:, :] - I0[..., :-2, :]) / 2, (0, 0, 1, 1), mode="replicate")
    a = _gauss_blur(use * gx * gx, sigma)  # [B, 1, H, W] structure tensor entries
    b = _gauss_blur(use * gx * gy, sigma)
    c = _gauss_blur(use * gy * gy, sigma)
    det = a * c - b * b
    tr = a + c
    eig_min = tr / 2 - torch.sqrt(torch.clamp(tr**2 / 4 - det, min=0))  # [B, 1, H, W]
    flow = torch.zeros(B, H, W, 2, dtype=gray.dtype)
    for _ in range(iterations):
        It = _warp(I1, flow) - I0  # [B, 1, H, W]
        p = _gauss_blur(use * gx * It, sigma)
        q = _gauss_blur(use * gy * It, sigma)
        safe = torch.where(det.abs() > 1e-20, det, torch.ones_like(det))
        du = -(c * p - b * q) / safe  # [B, 1, H, W]
        dv = -(a * q - b * p) / safe
        flow = flow + torch.stack([du[:, 0], dv[:, 0]], -1).clamp(-2, 2)
    weight = _gauss_blur(1 - use, sigma)  # [B, 1, H, W] > 0 where the window touches a masked pixel
    valid = (eig_min[:, 0] > min_eig) & (weight[:, 0] < 1e-3)  # [B, H, W]
    return flow.float(), valid


def flow_loss(flow_sim: torch.Tensor, flow_obs: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared end-point error (px^2) between simulated and observed flow [..., H, W, 2] over
    the valid pixels [..., H, W]; zero for identical flows, differentiable in flow_sim."""
    if flow_sim.shape != flow_obs.shape:
        raise RefineInputError(f"flow_loss: simulated flow {tuple(flow_sim.shape)} and observed flow "
                               f"{tuple(flow_obs.shape)} differ in shape")
    sq = ((flow_sim - flow_obs) ** 2).sum(-1)  # [..., H, W]
    if valid is None:
        return sq.mean()
    v = valid.to(sq.dtype)
    return (sq * v).sum() / v.sum().clamp(min=1.0)


# ---------------------------------------------------------------------------------------- rendering
def _project(points: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Pixel coordinates [..., 2] of world points [..., 3] (the renderer's convention)."""
    R, t = camera.w2c[:3, :3].to(points), camera.w2c[:3, 3].to(points)
    p = points @ R.T + t  # [..., 3]
    K = camera.K.to(points)
    return torch.stack([K[0, 0] * p[..., 0] / p[..., 2] + K[0, 2], K[1, 1] * p[..., 1] / p[..., 2] + K[1, 2]], -1)


def render_particles(positions: torch.Tensor, gaussians: GaussianBinding, camera: Camera,
                     background: torch.Tensor | StaticGaussians | None = None,
                     next_positions: torch.Tensor | None = None,
                     tile_size: int = 16) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render the Gaussians bound to particles at positions [N, 3]: image [H, W, 3] and, when
    next_positions [N, 3] are given, the simulated flow [H, W, 2] (px): each Gaussian's projected
    displacement to the next frame rendered as a feature (premultiplied by alpha; the background
    does not move). The background is either an image [H, W, 3] composited behind
    (rgb + (1 - alpha) bg) or `StaticGaussians` rendered together with the moving ones."""
    means = positions[gaussians.particle] + gaussians.offsets.to(positions)  # [G, 3]
    colors = gaussians.colors.to(positions)
    quats, scales = gaussians.quats.to(positions), gaussians.scales.to(positions)
    opac = gaussians.opacities.to(positions)
    if next_positions is not None:
        nxt = next_positions[gaussians.particle] + gaussians.offsets.to(positions)  # [G, 3]
        disp = _project(nxt, camera) - _project(means, camera)  # [G, 2] px
        colors = torch.cat([colors, disp], -1)  # [G, 5]
    if isinstance(background, StaticGaussians):
        s = background
        s_colors = s.colors.to(positions)
        if next_positions is not None:
            s_colors = torch.cat([s_colors, torch.zeros(len(s_colors), 2, dtype=positions.dtype)], -1)  # [S, 5]
        means = torch.cat([means, s.means.to(positions)])  # [G + S, 3]
        colors = torch.cat([colors, s_colors])
        quats = torch.cat([quats, s.quats.to(positions)])
        scales = torch.cat([scales, s.scales.to(positions)])
        opac = torch.cat([opac, s.opacities.to(positions)])
        background = None
    out = render(means, quats, scales, opac, colors, camera.w2c.to(positions), camera.K.to(positions),
                 camera.width, camera.height, backend="torch", tile_size=tile_size)
    rgb = out.rgb[..., :3]  # [H, W, 3]
    if background is not None:
        rgb = rgb + (1 - out.alpha)[..., None] * background.to(rgb)
    flow = out.rgb[..., 3:5] if next_positions is not None else None  # [H, W, 2]
    return rgb, flow


def visible_at_rest(positions: torch.Tensor, gaussians: GaussianBinding, camera: Camera,
                    background: StaticGaussians | torch.Tensor | None, min_weight: float):
    """Keep the Gaussians (bound and static) whose summed compositing weight over the image at rest
    is at least min_weight px: the gradient of the rendered colour sum with respect to a colour is
    exactly that weight, so one backward pass measures every Gaussian's visibility. Gaussians hidden
    inside the tissue cost render time and change nothing while the deformation stays moderate."""
    G = len(gaussians.particle)
    probe = torch.zeros(G, 1, requires_grad=True)
    means = positions[gaussians.particle] + gaussians.offsets
    parts = dict(means=[means], quats=[gaussians.quats], scales=[gaussians.scales], opac=[gaussians.opacities])
    static = isinstance(background, StaticGaussians)
    if static:
        s_probe = torch.zeros(len(background.means), 1, requires_grad=True)
        parts["means"].append(background.means)
        parts["quats"].append(background.quats)
        parts["scales"].append(background.scales)
        parts["opac"].append(background.opacities)
    colors = torch.cat([probe, s_probe]) if static else probe  # [M, 1]
    out = render(torch.cat(parts["means"]).float(), torch.cat(parts["quats"]).float(),
                 torch.cat(parts["scales"]).float(), torch.cat(parts["opac"]).float(), colors + 1.0,
                 camera.w2c.float(), camera.K.float(), camera.width, camera.height, backend="torch")
    grads = torch.autograd.grad(out.rgb.sum(), [probe, s_probe] if static else [probe])
    keep = grads[0][:, 0] >= min_weight  # [G]
    sub = GaussianBinding(*(getattr(gaussians, f.name)[keep] for f in fields(GaussianBinding)))
    if static:
        k = grads[1][:, 0] >= min_weight
        background = StaticGaussians(*(getattr(background, f.name)[k] for f in fields(StaticGaussians)))
    return sub, background


# ---------------------------------------------------------------------------------------- simulation
def _materials_with(materials: list, E: list, nu: list) -> list:
    return [replace(m, E=float(e), nu=float(n)) for m, e, n in zip(materials, E, nu)]


def simulate_frames(particles: Particles, gaussians: GaussianBinding, materials: list, mpm_config: MPMConfig,
                    scene: Scene, camera: Camera, times, background: torch.Tensor | None = None,
                    tile_size: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    """Forward-simulate with the given materials and render the frames at `times` [F] (s, times[0]
    = 0 the rest state): images [F, H, W, 3] and particle positions [F, N, 3]."""
    times = torch.as_tensor(np.asarray(times, dtype=np.float64))
    every = _frame_step(times, mpm_config.dt)
    sim = MPMSimulator(mpm_config, particles, materials, scene)
    pos = [sim.positions()]
    for _ in range(len(times) - 1):
        sim.step(every)
        pos.append(sim.positions())
    pos = np.stack(pos)  # [F, N, 3]
    with torch.no_grad():
        images = torch.stack([render_particles(torch.tensor(p, dtype=torch.float32), gaussians, camera, background,
                                               tile_size=tile_size)[0] for p in pos])  # [F, H, W, 3]
    return images.clamp(0, 1), pos


def future_psnr(pred: torch.Tensor, observed: torch.Tensor, tool_masks: torch.Tensor) -> list[float]:
    """PSNR per frame over the tissue pixels (not the tool) of pred / observed [F, H, W, 3]."""
    keep = ~tool_masks.bool()  # [F, H, W]
    return [float(v) for v in psnr(pred.permute(0, 3, 1, 2), observed.permute(0, 3, 1, 2), mask=keep, reduce="none")]


# ---------------------------------------------------------------------------------------- refinement
def loss_depends(*terms) -> bool:
    return any(t.requires_grad for t in terms)


def refine_materials(particles: Particles, gaussians: GaussianBinding, materials: list, mpm_config: MPMConfig,
                     scene: Scene, camera: Camera, observations: Observations,
                     config: RefineConfig | None = None, background: torch.Tensor | None = None,
                     progress=None) -> RefineResult:
    """Fit per-object log10(E) (and nu) so that the simulated, rendered clip matches the observed
    one (module docstring). `materials` are the initial values (e.g. `MaterialPrior`'s), one per
    object id in `particles.object_id`; their model, density and yield stress stay fixed.
    `progress(iteration, record)` is called after every iteration if given."""
    cfg = config or RefineConfig()
    if not isinstance(particles, Particles):
        raise RefineInputError(f"particles: expected endogsim.physics.Particles, got {type(particles).__name__}")
    if not isinstance(materials, (list, tuple)) or not all(isinstance(m, Material) for m in materials):
        raise RefineInputError("materials: expected a list of endogsim.physics.Material, one per object id")
    n_obj = len(materials)
    if int(particles.object_id.max()) >= n_obj:
        raise RefineInputError(f"particles.object_id: unknown object id {int(particles.object_id.max())}; "
                               f"{n_obj} materials were given")
    objs = _objects(cfg, n_obj)
    gaussians.check(len(particles.x))
    observations.check(camera)
    if isinstance(background, torch.Tensor) and tuple(background.shape) != (camera.height, camera.width, 3):
        raise RefineInputError(f"background: expected shape {(camera.height, camera.width, 3)}, "
                               f"got {tuple(background.shape)}")
    every = _frame_step(observations.times, mpm_config.dt)
    Fn = observations.images.shape[0]

    # observed flow (fixed during the fit)
    obs = observations.images.float()  # [F, H, W, 3]
    if cfg.flow == "given":
        if observations.flows is None:
            raise RefineInputError("Observations.flows: RefineConfig.flow = 'given' needs the observed flow")
        flow_obs = observations.flows.float()
        flow_valid = (observations.flow_valid if observations.flow_valid is not None
                      else torch.ones(flow_obs.shape[:-1], dtype=torch.bool))
        source = "given (Observations.flows)"
    else:
        flow_obs, flow_valid = lucas_kanade(obs, observations.tool_masks, cfg.lk_sigma, cfg.lk_iterations,
                                            cfg.lk_min_eig)
        source = f"Lucas-Kanade on the observed frames (sigma {cfg.lk_sigma} px, {cfg.lk_iterations} iterations)"
    tool = observations.tool_masks.float()[:, None]  # [F, 1, H, W]
    if cfg.mask_dilate > 0:
        tool = F.max_pool2d(tool, 2 * cfg.mask_dilate + 1, 1, cfg.mask_dilate)
    keep = (1 - tool[:, 0])  # [F, H, W] tissue (and background) pixels
    flow_valid = flow_valid & (keep[:-1] > 0) & (keep[1:] > 0)  # [F - 1, H, W]

    x0 = torch.tensor(particles.x, dtype=torch.float32)
    n_gauss = len(gaussians.particle)
    if cfg.cull_weight > 0:
        with torch.enable_grad():
            gaussians, background = visible_at_rest(x0, gaussians, camera, background, cfg.cull_weight)
    log_E = torch.tensor([math.log10(m.E) for m in materials], dtype=torch.float64)
    nu = torch.tensor([m.nu for m in materials], dtype=torch.float64)
    fit = torch.zeros(n_obj, dtype=torch.bool)
    fit[objs] = True
    log_E.requires_grad_(True)
    nu.requires_grad_(True)
    groups = [{"params": [log_E], "lr": cfg.lr_log_E}]
    if cfg.fit_nu:
        groups.append({"params": [nu], "lr": cfg.lr_nu})
    opt = torch.optim.Adam(groups)
    def decay(k: int) -> float:  # cosine from 1 to lr_final over the iterations
        return cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * k / max(cfg.iterations - 1, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    init_E, init_nu = [m.E for m in materials], [m.nu for m in materials]
    history = []

    def project_bounds():
        with torch.no_grad():
            nu.clamp_(*cfg.nu_bounds)
            lo, hi = cfg.log_E_bounds
            for o in range(n_obj):
                cap = math.log10(stable_E_max(materials[o], float(nu[o]), mpm_config, cfg.cfl_margin))
                log_E[o].clamp_(lo, min(hi, cap))
            # objects that are not fitted keep their values
            log_E[~fit] = torch.tensor([math.log10(init_E[o]) for o in range(n_obj)], dtype=torch.float64)[~fit]
            nu[~fit] = torch.tensor(init_nu, dtype=torch.float64)[~fit]

    project_bounds()  # a start above the time-step limit is brought below it (history[0] shows the value used)
    sim = MPMSimulator(mpm_config, particles, _materials_with(materials, (10**log_E).tolist(), nu.tolist()), scene)
    for it in range(cfg.iterations + 1):  # the last pass only records the final loss
        opt.zero_grad()
        t0 = time.perf_counter()
        E = 10**log_E
        pos = sim.rollout((Fn - 1) * every, every, E=E, nu=nu)  # [F - 1, N, 3]
        pos = torch.cat([x0[None], pos.float()])  # [F, N, 3]
        t1 = time.perf_counter()
        img_terms, flow_terms = [], []
        with torch.no_grad():
            moved = (pos - x0).abs().amax((1, 2)) > 1e-7  # [F] frames whose particles left the rest state
        for i in range(Fn):
            nxt = pos[i + 1] if (i + 1 < Fn and cfg.w_flow > 0) else None
            if not moved[i] and (nxt is None or not moved[i + 1]):
                continue  # at rest and so is the next frame: this frame's terms do not depend on the parameters
            rgb, flow = render_particles(pos[i], gaussians, camera, background, nxt, cfg.tile_size)
            if i > 0 and moved[i]:
                k = keep[i]  # [H, W]
                img_terms.append((((rgb - obs[i]) ** 2).sum(-1) * k).sum() / (3 * k.sum().clamp(min=1)))
            if flow is not None:
                flow_terms.append(flow_loss(flow, flow_obs[i], flow_valid[i]))
        # means over the fitted frames (frames at rest add a constant, the rest-state term, left out)
        image = torch.stack(img_terms).sum() / (Fn - 1) if img_terms else torch.zeros(())
        flow_l = torch.stack(flow_terms).sum() / (Fn - 1) if flow_terms else torch.zeros(())
        if not loss_depends(image, flow_l):
            raise RefineInputError("refine_materials: no particle moved in the simulated frames, so the images "
                                   "do not depend on the materials (check the scene's forces / tool and the times)")
        loss = cfg.w_image * image + cfg.w_flow * flow_l
        t2 = time.perf_counter()
        record = {"iteration": it, "E": (10**log_E).detach().tolist(), "nu": nu.detach().tolist(),
                  "loss": loss.item(), "image_mse": image.item(), "flow_mse_px2": flow_l.item(),
                  "simulate_s": t1 - t0, "render_s": t2 - t1}
        if it < cfg.iterations:
            loss.backward()
            t3 = time.perf_counter()
            record["backward_s"] = t3 - t2
            for p in (log_E, nu):
                if p.grad is not None:
                    p.grad[~fit] = 0
            record["grad_log_E"] = log_E.grad.tolist()
            opt.step()
            sched.step()
            project_bounds()
        history.append(record)
        if progress is not None:
            progress(it, record)

    # the best iterate by loss (the last Adam steps may oscillate around the minimum)
    best = min(history, key=lambda r: r["loss"])
    E_out, nu_out = best["E"], best["nu"]
    return RefineResult(E=E_out, nu=nu_out, materials=_materials_with(materials, E_out, nu_out),
                        initial_E=init_E, initial_nu=init_nu, objects=objs, history=history, flow_source=source,
                        n_gaussians=(len(gaussians.particle), n_gauss))


# ---------------------------------------------------------------------------------------- demonstration
PRIOR_LABELS = ("liver", "kidney")  # the table classes the demonstration assigns to tissue_0 (soft) and tissue_1


def synthetic_problem(data_dir, seed: int = 0):
    """The synthetic clip in `data_dir` (written by `make_surgical_scene` with `seed` if absent) as
    refinement inputs from its ground truth: (setup, particles, gaussians, static background
    Gaussians, camera, observations [all frames], ground-truth dict). The particles and Gaussian
    colours are the generator's own (an oracle reconstruction), so only the materials are unknown."""
    from common.datasets import read_endonerf

    from .synthetic_scene import (DEPTH_SCALE, OPACITY, TISSUE_SIGMA, build_setup, make_surgical_scene)

    data_dir = Path(data_dir)
    gt_path = data_dir / "ground_truth.json"
    if not gt_path.exists():
        make_surgical_scene(data_dir, seed=seed)
    gt = json.loads(gt_path.read_text())
    try:
        sim, cam, objs, inter = gt["simulation"], gt["camera"], gt["objects"], gt["interaction"]
        times = np.asarray(gt["frame_times"])
        setup = build_setup(int(gt["seed"]), len(times), (int(cam["height"]), int(cam["width"])),
                            E=[o["E"] for o in objs], nu=objs[0]["nu"], density=[o["density"] for o in objs],
                            model=objs[0]["model"], duration=float(times[-1]), dt=float(sim["dt"]),
                            n_grid=int(sim["n_grid"]), interaction=inter["kind"],
                            force=inter.get("force_N", (0.0, 0.0, 0.0)), damping=float(sim["damping"]))
    except KeyError as e:
        raise RefineInputError(f"{gt_path}: missing field {e} (expected a file written by make_surgical_scene)") from e
    if not np.allclose(setup.times, times, atol=1e-9):
        raise RefineInputError(f"{gt_path}: frame_times do not match the generator's for these settings")
    sample = read_endonerf(data_dir, depth_scale=DEPTH_SCALE)
    obs = Observations(images=sample.images.permute(0, 2, 3, 1).float(), tool_masks=sample.masks["tool"].bool(),
                       times=torch.tensor(setup.times))
    gaussians = bind_isotropic(setup.particles, setup.tissue_colors, TISSUE_SIGMA, OPACITY)
    static = StaticGaussians.isotropic(setup.support_points, setup.support_colors, 0.002, OPACITY)
    camera = Camera(setup.K, torch.tensor(cam["w2c"], dtype=torch.float32), setup.width, setup.height)
    return setup, setup.particles, gaussians, static, camera, obs, gt


def prior_materials(gt: dict, labels=PRIOR_LABELS) -> tuple[list, list]:
    """The literature-table start (`MaterialPrior().table(label)`): E, nu and density per object; the
    constitutive model is the scene's (refinement fits E and nu, not the model class)."""
    from .material_prior import MaterialPrior

    prior = MaterialPrior()
    mats, sources = [], []
    for o, label in zip(gt["objects"], labels):
        est = prior.table(label)
        mats.append(Material(model=o["model"], E=est.E.value, nu=est.nu.value, density=est.density.value))
        sources.append({"label": label, **est.sources()})
    return mats, sources


def run_synthetic_demo(data_dir, out_dir, fit_frames: int = 8, config: RefineConfig | None = None, seed: int = 0,
                       progress=None) -> dict:
    """Refine the synthetic clip's materials from the table prior on frames [0, fit_frames) and
    predict the rest: writes `refine.json`, `trajectories.png` and `future_frames.png` into out_dir
    and returns the summary dict (E/nu per object vs truth, future-frame PSNR before/after, timings)."""
    cfg = config or RefineConfig()
    setup, particles, gaussians, static, camera, obs, gt = synthetic_problem(data_dir, seed)
    Fn = obs.images.shape[0]
    if not 2 <= fit_frames < Fn:
        raise RefineInputError(f"fit_frames: expected 2 <= fit_frames < {Fn} (frames in the clip), got {fit_frames}")
    start, sources = prior_materials(gt)
    fit_obs = Observations(obs.images[:fit_frames], obs.tool_masks[:fit_frames], obs.times[:fit_frames])
    t0 = time.perf_counter()
    result = refine_materials(particles, gaussians, start, setup.config, setup.scene, camera, fit_obs, cfg,
                              background=static, progress=progress)
    fit_s = time.perf_counter() - t0
    future = slice(fit_frames, Fn)
    psnrs, images = {}, {}
    for name, mats in (("prior", start), ("refined", result.materials), ("truth", setup.materials)):
        images[name], _ = simulate_frames(particles, gaussians, mats, setup.config, setup.scene, camera,
                                          setup.times, static)
        psnrs[name] = future_psnr(images[name][future], obs.images[future], obs.tool_masks[future])
    truth_E = [o["E"] for o in gt["objects"]]
    truth_nu = [o["nu"] for o in gt["objects"]]
    rel = lambda E: [abs(e / t - 1) for e, t in zip(E, truth_E)]  # noqa: E731
    iters = [h for h in result.history if "backward_s" in h]
    summary = {
        "objects": [{"id": o["id"], "name": o["name"], "prior_label": s["label"], "E_true": o["E"], "nu_true": o["nu"],
                     "E_prior": m.E, "nu_prior": m.nu, "E_refined": e, "nu_refined": n, "E_source_prior": s["E"]}
                    for o, s, m, e, n in zip(gt["objects"], sources, start, result.E, result.nu)],
        "E_rel_error_prior": rel([m.E for m in start]), "E_rel_error_refined": rel(result.E),
        "E_rel_error_max_refined": max(rel(result.E)), "E_rel_error_max_prior": max(rel([m.E for m in start])),
        "nu_abs_error_refined": [abs(n - t) for n, t in zip(result.nu, truth_nu)],
        "fit_frames": fit_frames, "future_frames": list(range(fit_frames, Fn)),
        "future_psnr": {k: float(np.mean(v)) for k, v in psnrs.items()},
        "future_psnr_per_frame": psnrs,
        "flow_source": result.flow_source,
        "iterations": cfg.iterations, "fit_seconds": fit_s,
        "seconds_per_iteration": {k: float(np.median([h[k] for h in iters])) if iters else None
                                  for k in ("simulate_s", "render_s", "backward_s")},
        "config": {k: getattr(cfg, k) for k in (f.name for f in fields(cfg))},
        "history": result.history,
        "note": "from the ground-truth particles and Gaussian colours (oracle reconstruction); start = the "
                "literature table (material_prior.TABLE) with the scene's constitutive model",
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "refine.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_trajectories(result.history, truth_E, truth_nu, out_dir / "trajectories.png")
    _future_strip(obs.images[future], images["prior"][future], images["refined"][future], out_dir / "future_frames.png")
    return summary


def scan_loss(data_dir, fit_frames: int = 8, factors=(0.33, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0),
              config: RefineConfig | None = None, seed: int = 0) -> dict:
    """Identifiability check: the image and flow losses of the fitted frames when one object's E is
    the truth times each factor (the other at its truth), forward only. Factors whose E would break
    the time-step limit are skipped."""
    cfg = config or RefineConfig()
    setup, particles, gaussians, static, camera, obs, gt = synthetic_problem(data_dir, seed)
    x0 = torch.tensor(particles.x, dtype=torch.float32)
    gaussians, static = visible_at_rest(x0, gaussians, camera, static, cfg.cull_weight)
    images, masks = obs.images[:fit_frames], obs.tool_masks[:fit_frames]
    flow_obs, valid = lucas_kanade(images, masks, cfg.lk_sigma, cfg.lk_iterations, cfg.lk_min_eig)
    tool = masks.float()
    if cfg.mask_dilate:
        tool = F.max_pool2d(tool[:, None], 2 * cfg.mask_dilate + 1, 1, cfg.mask_dilate)[:, 0]  # [F, H, W]
    keep = 1 - tool  # [F, H, W]
    valid = valid & (keep[:-1] > 0) & (keep[1:] > 0)
    out = {"fit_frames": fit_frames, "interaction": gt["interaction"]["kind"], "objects": []}
    for o in range(len(setup.materials)):
        rows = []
        for f in factors:
            mats = [replace(m, E=m.E * f) if j == o else m for j, m in enumerate(setup.materials)]
            if mats[o].E > stable_E_max(mats[o], mats[o].nu, setup.config, 1.0):
                continue
            _, pos = simulate_frames(particles, gaussians, mats, setup.config, setup.scene, camera,
                                     setup.times[:fit_frames], static)
            pos = torch.tensor(pos, dtype=torch.float32)  # [F, N, 3]
            li, lf = [], []
            with torch.no_grad():
                for i in range(fit_frames):
                    nxt = pos[i + 1] if i + 1 < fit_frames else None
                    rgb, fl = render_particles(pos[i], gaussians, camera, static, nxt, cfg.tile_size)
                    if i > 0:
                        li.append((((rgb - images[i]) ** 2).sum(-1) * keep[i]).sum() / (3 * keep[i].sum()))
                    if fl is not None:
                        lf.append(flow_loss(fl, flow_obs[i], valid[i]))
            rows.append({"factor": f, "E": mats[o].E, "image_mse": float(torch.stack(li).mean()),
                         "flow_mse_px2": float(torch.stack(lf).mean())})
        out["objects"].append({"id": o, "E_true": setup.materials[o].E, "scan": rows})
    return out


def plot_trajectories(history: list, truth_E, truth_nu, path) -> None:
    """E and nu per object against the iteration (truth dashed), and the losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [h["iteration"] for h in history]
    E = np.array([h["E"] for h in history])  # [I, O]
    nu = np.array([h["nu"] for h in history])  # [I, O]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for o in range(E.shape[1]):
        line, = ax[0].plot(it, E[:, o] / 1e3, "o-", ms=3, label=f"object {o}")
        ax[0].axhline(truth_E[o] / 1e3, ls="--", color=line.get_color())
        ax[1].plot(it, nu[:, o], "o-", ms=3, color=line.get_color())
        ax[1].axhline(truth_nu[o], ls="--", color=line.get_color())
    ax[0].set(xlabel="iteration", ylabel="E (kPa)", title="Young's modulus (dashed: truth)", yscale="log")
    ax[0].legend()
    ax[1].set(xlabel="iteration", ylabel="nu", title="Poisson's ratio (dashed: truth)")
    ax[2].plot(it, [h["image_mse"] for h in history], label="image MSE")
    ax2 = ax[2].twinx()
    ax2.plot(it, [h["flow_mse_px2"] for h in history], color="C1", label="flow MSE (px^2)")
    ax[2].set(xlabel="iteration", ylabel="image MSE", title="losses", yscale="log")
    ax2.set_ylabel("flow MSE (px^2)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _future_strip(observed, prior, refined, path) -> None:
    """Rows: observed, simulated with the prior, simulated after refinement (future frames)."""
    from PIL import Image

    rows = [torch.cat(list(x), 1) for x in (observed, prior, refined)]  # each [H, F * W, 3]
    img = (torch.cat(rows, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def _parse_overrides(pairs: list[str]) -> RefineConfig:
    known = {f.name: f for f in fields(RefineConfig)}
    kw = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        if key not in known:
            raise SystemExit(f"unknown RefineConfig key {key!r}; known: {sorted(known)}")
        default = getattr(RefineConfig(), key)
        if isinstance(default, bool):
            kw[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            kw[key] = int(value)
        elif isinstance(default, float):
            kw[key] = float(value)
        elif isinstance(default, tuple) or key == "objects":
            kw[key] = None if value.lower() == "none" else tuple(json.loads(f"[{value}]"))
        else:
            kw[key] = value
    return RefineConfig(**kw)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Refine per-object E and nu of the synthetic clip through MPM + rendering")
    p.add_argument("--data", required=True, help="synthetic clip folder (generated there if absent)")
    p.add_argument("--out", required=True, help="output folder for refine.json and the plots")
    p.add_argument("--fit-frames", type=int, default=8, help="frames [0, K) are fitted, the rest predicted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scan", action="store_true", help="only scan the losses against E per object (identifiability)")
    p.add_argument("overrides", nargs="*", help="RefineConfig key=value")
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # the machine's cores are shared; more threads spin-wait against other processes
    torch.manual_seed(a.seed)
    cfg = _parse_overrides(a.overrides)
    if a.scan:
        res = scan_loss(a.data, a.fit_frames, config=cfg, seed=a.seed)
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "scan.json").write_text(json.dumps(res, indent=1) + "\n")
        for o in res["objects"]:
            for r in o["scan"]:
                print(f"object {o['id']} E = {r['factor']:.2f} x truth: image MSE {r['image_mse']:.4e}  "
                      f"flow MSE {r['flow_mse_px2']:.4f} px^2")
        return

    def progress(it, r):
        E = ", ".join(f"{e:.0f}" for e in r["E"])
        nu = ", ".join(f"{n:.3f}" for n in r["nu"])
        print(f"iter {it:3d}  E = [{E}] Pa  nu = [{nu}]  image {r['image_mse']:.3e}  flow {r['flow_mse_px2']:.4f}  "
              f"({r['simulate_s']:.1f} + {r['render_s']:.1f} + {r.get('backward_s', 0):.1f} s)", flush=True)

    s = run_synthetic_demo(a.data, a.out, a.fit_frames, cfg, a.seed, progress)
    for o in s["objects"]:
        print(f"object {o['id']} ({o['prior_label']} prior): E prior {o['E_prior']:.0f} -> "
              f"refined {o['E_refined']:.0f} "
              f"(truth {o['E_true']:.0f}); nu {o['nu_prior']:.3f} -> {o['nu_refined']:.3f} (truth {o['nu_true']:.3f})")
    fp = s["future_psnr"]
    print(f"future frames PSNR (tissue pixels): prior {fp['prior']:.2f} dB, refined {fp['refined']:.2f} dB, "
          f"true materials {fp['truth']:.2f} dB; wrote {a.out}/refine.json, trajectories.png, future_frames.png")


if __name__ == "__main__":
    main()
