"""EndoGSim rendering and refinement: the CPU Gaussian compositor against the number of Gaussians
and the image size (gsplat beside it where CUDA is available), and one material-refinement
iteration split into simulate, render and backward.

`python -m benchmarks.perf endogsim [--quick]`
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
import warp as wp

from benchmarks.perf import Measurement, PerfReport
from endogsim.clip import clip_observations, ground_truth_scene, known_forces
from endogsim.material_prior import MaterialPrior
from endogsim.refine import RefineConfig, refine_scene, scene_physics
from endogsim.render import render
from endogsim.synthetic_scene import make_surgical_scene

wp.config.quiet = True


def _gaussians(n: int, width: int, height: int, device: str, seed: int = 0):
    """n Gaussians spread over the view of a 90-degree camera at depths 1-2, about 2 px across."""
    g = torch.Generator().manual_seed(seed)
    z = 1 + torch.rand(n, generator=g)
    f = width / 2
    u = torch.rand(n, generator=g) * width
    v = torch.rand(n, generator=g) * height
    means = torch.stack([(u - width / 2) * z / f, (v - height / 2) * z / f, z], -1)  # [n, 3]
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    scales = (1.0 + torch.rand(n, 3, generator=g)) * z[:, None] / f  # about 1-2 px
    opac = 0.3 + 0.6 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    K = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    args = [t.to(device).requires_grad_(True) for t in (means, quats, scales, opac, colors)]
    return args, torch.eye(4, device=device), K.to(device)


def _render_fn(n, width, height, device, backend, backward: bool):
    (means, quats, scales, opac, colors), w2c, K = _gaussians(n, width, height, device)

    def fn():
        out = render(means, quats, scales, opac, colors, w2c, K, width, height, backend=backend)
        if backward:
            (out.rgb.sum() + out.depth.sum()).backward()
        return out
    return fn


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("endogsim", "Gaussian compositor (PyTorch CPU vs gsplat CUDA) and one refinement iteration")
    cuda = torch.cuda.is_available()
    sizes = [(500, 32, 40), (2_000, 64, 80)] if quick else [(1_000, 64, 80), (4_000, 64, 80), (4_000, 128, 160),
                                                               (16_000, 128, 160)]
    repeats = 2 if quick else 3
    for n, H, W in sizes:
        for backward in (False, True):
            impls = {"torch-cpu": _render_fn(n, W, H, "cpu", "torch", backward)}
            if cuda:
                impls["gsplat-cuda"] = _render_fn(n, W, H, "cuda", "gsplat", backward)
            what = "forward+backward" if backward else "forward"
            report.compare(f"render {what}, {n} Gaussians, {H}x{W}", impls, items=H * W, unit="pixels",
                           repeats=repeats, memory=not backward)
    if not cuda:
        report.notes.append("gsplat rows skipped: no CUDA device here (gsplat's rasteriser is CUDA-only).")

    # one refinement iteration on the synthetic clip (the demonstration's settings)
    with tempfile.TemporaryDirectory() as tmp:
        frames = 6 if quick else 16
        make_surgical_scene(tmp, seed=0, frames=frames, size=(32, 40) if quick else (64, 80))
        scene = ground_truth_scene(tmp)
        start = [MaterialPrior().table(lab).to_material(scene.materials[0].model) for lab in ("liver", "kidney")]
        scene = ground_truth_scene(tmp, start)
        fit = 4 if quick else 8
        fit_obs = clip_observations(tmp, range(fit))
        iters = 2 if quick else 4
        t0 = time.perf_counter()
        res = refine_scene(scene, fit_obs, known_forces(tmp), RefineConfig(iterations=iters))
        total = time.perf_counter() - t0
    steps = [h for h in res.history if "backward_s" in h][1:] or [h for h in res.history if "backward_s" in h]
    substeps = round(float(fit_obs.times[-1]) / scene_physics(scene, fit_obs.times.numpy()).mpm.dt)
    case = (f"refinement iteration: {len(scene.particles.x)} particles x {substeps} substeps, "
            f"{res.n_gaussians[0]} of {res.n_gaussians[1]} Gaussians rendered, {fit} frames at "
            f"{scene.height}x{scene.width}")
    for stage in ("simulate_s", "render_s", "backward_s"):
        vals = [h[stage] for h in steps]
        med = float(np.median(vals))
        report.add(Measurement(stage[:-2], case, med, float(np.min(vals)), float(np.max(vals)), len(vals)))
    report.notes.append(
        f"{case}: simulate = the MPM rollout forward (Warp, CPU), render = rendering RGB + flow of the moving frames "
        f"and the losses (PyTorch), backward = renderer backward + MPM adjoint (checkpointed re-simulation). "
        f"{iters} iterations took {total:.1f} s in all, including the one-off visibility culling and the "
        f"Lucas-Kanade flow of the observed frames (the first iteration is left out of the medians)."
    )
    return report
