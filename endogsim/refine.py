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
   observed flow over the pixels where the observed flow is valid. Both images are compared on
   their texture (`flow.texture`, `texture_sigma`): a light at the endoscope shades tissue by how
   it faces the light, the shading changes as the tissue turns, and the Gaussians' fixed colours
   cannot follow it (on the synthetic clip it biases E 1.5x too stiff); the vessels' texture
   moves with the tissue. The observed flow is taken on the texture too.
4. Adam on log10(E) and nu (PhysFlow's update works in log10 space); after each step the values
   are projected into their bounds and below the solver's elastic-wave time-step limit.

The observed flow is either given (`Observations.flows`, e.g. from a reconstructed 4DGS's
motion) or, by default, computed here from the observed frames by a classical iterative
Lucas-Kanade (`lucas_kanade`, tool pixels excluded from its windows) - the official code uses
RAFT, which needs pretrained weights.

`refine_scene(scene, observations, forces)` fits the tissue objects of a `PhysicsScene` (the one
`PhysicsScene.from_gaussian_model` builds from the video, or the synthetic clip's ground truth);
`simulate_scene` predicts frames with given materials.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from common.metrics import psnr

from .binding import (Camera, GaussianBinding, StaticGaussians, bind_isotropic, bind_scene, render_particles,
                      visible_at_rest)
from .flow import flow_loss, lucas_kanade, texture
from .lighting import AMBIENT, RestLight
from .physics import (Material, MPMConfig, MPMSimulator, Particles, RegionForce, Interactions, frame_dt, max_stable_E,
                       with_dt)

__all__ = ["RefineConfig", "Observations", "RefineResult", "RefineInputError", "refine_materials", "refine_scene",
           "simulate_frames", "simulate_scene", "scene_physics", "SimulationInputs", "stable_E_max", "future_psnr",
           # the binding, re-exported: what a refinement is called with
           "Camera", "GaussianBinding", "StaticGaussians", "bind_isotropic"]


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
    texture_sigma: float = 3.0  # px: images and flow compared on their texture (`flow.texture`); 0 = raw
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
        for name in ("lr_log_E", "lr_nu", "w_image", "w_flow", "lk_sigma", "texture_sigma"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or not math.isfinite(v):
                raise RefineInputError(f"RefineConfig.{name}: expected a finite number >= 0, got {v!r}")
        if self.w_image == 0 and self.w_flow == 0:
            raise RefineInputError("RefineConfig: w_image and w_flow are both 0, nothing to fit")
        lo, hi = self.nu_bounds
        if not 0.0 <= lo < hi < 0.5:
            raise RefineInputError(f"RefineConfig.nu_bounds: expected 0 <= lo < hi < 0.5, got {self.nu_bounds!r}")


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
    """The largest E the explicit MPM's elastic-wave limit allows under `config` (times margin)."""
    return max_stable_E(material, nu, config.dx, config.dt, config.cfl, margin)


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


# ---------------------------------------------------------------------------------------- simulation
def _materials_with(materials: list, E: list, nu: list) -> list:
    return [replace(m, E=float(e), nu=float(n)) for m, e, n in zip(materials, E, nu)]


def simulate_frames(particles: Particles, gaussians: GaussianBinding, materials: list, mpm_config: MPMConfig,
                    scene: Interactions, camera: Camera, times, background: torch.Tensor | None = None,
                    tile_size: int = 16, light: RestLight | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Forward-simulate with the given materials and render the frames at `times` [F] (s, times[0]
    = 0 the rest state): images [F, H, W, 3] and particle positions [F, N, 3]. With a `light`, each
    frame's Gaussians are relit as their particles move and turn (`RestLight.colors`)."""
    times = torch.as_tensor(np.asarray(times, dtype=np.float64))
    every = _frame_step(times, mpm_config.dt)
    sim = MPMSimulator(mpm_config, particles, materials, scene)
    idx = gaussians.particle.numpy()  # [G] each bound Gaussian's particle
    pos, grads = [sim.positions()], [np.broadcast_to(np.eye(3), (len(idx), 3, 3))]
    for _ in range(len(times) - 1):
        sim.step(every)
        pos.append(sim.positions())
        if light is not None:  # F is read only to relight
            grads.append(sim.state.F.numpy()[idx].astype(np.float64))  # [G, 3, 3]
    pos = np.stack(pos)  # [F, N, 3]
    images = []
    for f, p in enumerate(pos):
        g = gaussians if light is None else replace(gaussians, colors=light.colors(gaussians.colors, p[idx] - pos[0][idx], grads[f]))
        with torch.no_grad():
            images.append(render_particles(torch.tensor(p, dtype=torch.float32), g, camera, background,
                                           tile_size=tile_size)[0])  # [H, W, 3]
    return torch.stack(images).clamp(0, 1), pos


@dataclass
class SimulationInputs:
    """What a `PhysicsScene` hands the simulator and the renderer (see `scene_physics`)."""

    particles: Particles
    binding: GaussianBinding
    background: StaticGaussians | None
    mpm: MPMConfig
    physics: Interactions
    camera: Camera
    light: RestLight  # what the predicted frames are lit by (the refinement compares texture, unlit)


def scene_physics(scene, times, forces=()) -> SimulationInputs:
    """The simulation of a `PhysicsScene` for frames at `times` [F] (s, equally spaced): its
    particles and bound Gaussians, its rigid Gaussians as the static background, its MPM settings
    with dt lowered to divide the frame interval (damping per second kept), its anchors and the
    given forces (`endogsim.physics.RegionForce`, e.g. the known tool force)."""
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or len(times) < 2:
        raise RefineInputError(f"times: expected at least 2 frame times [F] in s, got shape {times.shape}")
    if not all(isinstance(f, RegionForce) for f in forces):
        raise RefineInputError("forces: expected endogsim.physics.RegionForce items")
    binding, background, camera = bind_scene(scene)
    mpm = with_dt(scene.mpm, frame_dt(scene.mpm.dt, float(times[1] - times[0])))
    physics = Interactions(static_boxes=list(scene.anchors), forces=list(forces))
    light = RestLight.of(binding, scene.particles.x, AMBIENT)
    return SimulationInputs(scene.particles, binding, background, mpm, physics, camera, light)


def simulate_scene(scene, materials: list, times, forces=()) -> tuple[torch.Tensor, np.ndarray]:
    """Forward-simulate a `PhysicsScene` with `materials` (one per tissue object) from its rest
    state and render the frames at `times` [F] s: images [F, H, W, 3] and positions [F, P, 3]."""
    p = scene_physics(scene, times, forces)
    return simulate_frames(p.particles, p.binding, materials, p.mpm, p.physics, p.camera, times, p.background,
                           light=p.light)


def refine_scene(scene, observations: Observations, forces=(), config: RefineConfig | None = None,
                 progress=None) -> RefineResult:
    """Fit the tissue materials of a `PhysicsScene`, starting from its own (e.g. the material
    prior's), so that its simulation under `forces` matches `observations` (`refine_materials`)."""
    p = scene_physics(scene, observations.times.detach().cpu().numpy(), forces)
    return refine_materials(p.particles, p.binding, scene.materials, p.mpm, p.physics, p.camera, observations,
                            config, background=p.background, progress=progress)


def future_psnr(pred: torch.Tensor, observed: torch.Tensor, tool_masks: torch.Tensor) -> list[float]:
    """PSNR per frame over the tissue pixels (not the tool) of pred / observed [F, H, W, 3]."""
    keep = ~tool_masks.bool()  # [F, H, W]
    return [float(v) for v in psnr(pred.permute(0, 3, 1, 2), observed.permute(0, 3, 1, 2), mask=keep, reduce="none")]


# ---------------------------------------------------------------------------------------- refinement
def loss_depends(*terms) -> bool:
    return any(t.requires_grad for t in terms)


def refine_materials(particles: Particles, gaussians: GaussianBinding, materials: list, mpm_config: MPMConfig,
                     scene: Interactions, camera: Camera, observations: Observations,
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

    tool = observations.tool_masks.float()[:, None]  # [F, 1, H, W]
    if cfg.mask_dilate > 0:
        tool = F.max_pool2d(tool, 2 * cfg.mask_dilate + 1, 1, cfg.mask_dilate)
    keep = (1 - tool[:, 0])  # [F, H, W] tissue (and background) pixels
    # observed frames and flow (fixed during the fit), on their texture: shading that the Gaussians'
    # fixed colours cannot follow is taken out of both (`flow.texture`)
    obs = texture(observations.images.float(), keep, cfg.texture_sigma)  # [F, H, W, 3]
    if cfg.flow == "given":
        if observations.flows is None:
            raise RefineInputError("Observations.flows: RefineConfig.flow = 'given' needs the observed flow")
        flow_obs = observations.flows.float()
        flow_valid = (observations.flow_valid if observations.flow_valid is not None
                      else torch.ones(flow_obs.shape[:-1], dtype=torch.bool))
        source = "given (Observations.flows)"
    else:
        flow_obs, flow_valid = lucas_kanade(obs + 0.5, observations.tool_masks, cfg.lk_sigma, cfg.lk_iterations,
                                            cfg.lk_min_eig)
        source = (f"Lucas-Kanade on the observed frames' texture (sigma {cfg.lk_sigma} px, {cfg.lk_iterations} "
                  f"iterations, texture sigma {cfg.texture_sigma} px)")
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
                rgb = texture(rgb[None], k[None], cfg.texture_sigma)[0]  # [H, W, 3]
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


