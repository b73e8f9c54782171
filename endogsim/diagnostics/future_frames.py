"""Can the future frames' PSNR rank materials on a reconstructed scene? Three motions of one scene.

    python -m endogsim.diagnostics.future_frames --data CLIP --model RECON/model [--out future.json]

The reconstructed scene (`endogsim.reproduce.decompose` of the 4DGS at `--model`) is moved three
ways over the clip and rendered: simulated with the table prior, simulated with the true materials,
and with each tissue Gaussian carried by the clip's true surface displacement at its nearest true
surface point (`endogsim.clip.true_surface_tracks`: the best motion any material could give). Each
is scored on the future frames (8 on) by PSNR over tissue pixels, unlit (the Gaussians' rest
colours as they stand) and relit as the product predicts frames (`endogsim.lighting.RestLight`: the
light at the endoscope, each Gaussian's normal turned by its particle's F; the true-motion rows use
the true-material simulation's F). The surface motion error (`endogsim.clip.surface_motion_error`) is given beside.
If the true motion does not beat the prior's in PSNR, no material can on that scene: the metric
is then limited by the reconstruction's appearance, not by the materials. A fourth row leaves the
scene at rest (no motion), and every row is also scored on the tissue pixels more than `band` px
from the tool (`future_psnr_far`), with the share of its squared error, beyond the rest row's,
that lies within that band (`extra_error_near_tool`): where the motion costs PSNR.
`--canonical-colors` keeps the 4DGS's canonical colours instead of the rest frame's.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from common.cli import OneLineParser, add_threads_flag, set_threads
from endogsim.binding import render_particles
from endogsim.clip import (clip_observations, known_forces, setup_from_clip, surface_motion_error,
                           true_surface_tracks)
from endogsim.config import DEFAULT_CONFIG, load_config
from endogsim.gaussians import GaussianModel
from endogsim.physics import MPMSimulator
from endogsim.refine import _frame_step, future_psnr, scene_physics
from endogsim.reproduce import FIT_FRAMES, decompose


def simulate_states(p, materials, times) -> list:
    """(positions [P, 3], F [P, 3, 3]) at each frame time."""
    every = _frame_step(torch.as_tensor(times), p.mpm.dt)
    sim = MPMSimulator(p.mpm, p.particles, materials, p.physics)
    states = [(sim.positions(), sim.state.F.numpy().astype(np.float64))]
    for _ in range(len(times) - 1):
        sim.step(every)
        states.append((sim.positions(), sim.state.F.numpy().astype(np.float64)))
    return states


def near_tool(tool_masks: torch.Tensor, band: int) -> torch.Tensor:
    """[F, H, W] bool: pixels within `band` px (Chebyshev) of the tool, the tool excluded."""
    tool = tool_masks.float()[:, None]  # [F, 1, H, W]
    grown = torch.nn.functional.max_pool2d(tool, 2 * band + 1, 1, band)[:, 0] > 0
    return grown & ~tool_masks.bool()


def compare(data: Path, model_dir: Path, config=DEFAULT_CONFIG, band: int = 10, rest_colors: bool = True) -> dict:
    cfg = load_config(config)
    setup, _ = setup_from_clip(data)
    truth = list(setup.materials)
    volume = float(setup.particles.volume[setup.particles.object_id == 0].sum())
    scene, _ = decompose(GaussianModel.from_pretrained(str(model_dir), use_safetensors=True), data, cfg, volume,
                         rest_colors)
    obs = clip_observations(data)
    times = obs.times.numpy()
    p = scene_physics(scene, times, known_forces(data))
    b = p.binding
    idx = b.particle.numpy()  # [G] each bound Gaussian's particle
    rest_x = np.asarray(p.particles.x, np.float64)
    x0 = p.light.rest_x  # [G, 3]
    tracks = true_surface_tracks(data)  # [F, T, 3]
    _, nearest = cKDTree(tracks[0]).query(x0)  # [G]
    runs = {"prior": simulate_states(p, scene.materials, times), "truth": simulate_states(p, truth, times)}
    rest = torch.tensor(rest_x, dtype=torch.float32)  # each motion is rendered as offsets from rest
    out, sq_err = {}, {}
    future, tool = slice(FIT_FRAMES, len(times)), obs.tool_masks[FIT_FRAMES:]
    near = near_tool(tool, band)  # [F', H, W]
    for name in ("at rest", "prior", "truth", "true motion"):
        states = runs["truth" if name in ("true motion", "at rest") else name]
        raw, relit = [], []
        for f in range(FIT_FRAMES, len(times)):
            pos, F = states[f]
            if name == "at rest":
                pos, F = rest_x, np.broadcast_to(np.eye(3), F.shape)
            shift = tracks[f, nearest] - tracks[0, nearest] if name == "true motion" else pos[idx] - rest_x[idx]  # [G, 3]
            moved = replace(b, offsets=b.offsets + torch.tensor(shift, dtype=torch.float32))
            lit = replace(moved, colors=p.light.colors(b.colors, shift, F[idx]))
            with torch.no_grad():
                raw.append(render_particles(rest, moved, p.camera, p.background)[0])
                relit.append(render_particles(rest, lit, p.camera, p.background)[0])
        pred = torch.stack(raw).clamp(0, 1)  # [F', H, W, 3]
        row = {key: float(np.mean(future_psnr(torch.stack(imgs).clamp(0, 1), obs.images[future], tool)))
               for key, imgs in (("future_psnr", raw), ("future_psnr_relit", relit))}
        row["future_psnr_far"] = float(np.mean(future_psnr(pred, obs.images[future], tool | near)))
        sq_err[name] = ((pred - obs.images[future]) ** 2).mean(-1) * ~tool.bool()  # [F', H, W]
        if name != "at rest":
            extra = sq_err[name] - sq_err["at rest"]
            row["extra_error_near_tool"] = float(extra[near].sum() / extra.sum()) if extra.sum() > 0 else None
        if name not in ("true motion", "at rest"):
            row["future_motion_error_mm"] = 1e3 * surface_motion_error(scene, np.stack([s[0] for s in states]), tracks, future)
        out[name] = row
    return out


def main(argv=None) -> int:
    ap = OneLineParser("endogsim.diagnostics.future_frames", description=__doc__)
    ap.add_argument("--data", required=True, help="the synthetic clip the 4DGS was trained on")
    ap.add_argument("--model", required=True, help="the trained 4DGS (e.g. results/endogsim/recon/model)")
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--band", type=int, default=10, help="px around the tool scored apart (default 10)")
    ap.add_argument("--canonical-colors", action="store_true",
                    help="keep the 4DGS's canonical colours (default: fitted to the rest frame)")
    add_threads_flag(ap)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    if args.band < 1:
        ap.error(f"--band: expected an int >= 1, got {args.band}")
    res = compare(Path(args.data), Path(args.model), args.config, args.band, not args.canonical_colors)
    for name, row in res.items():
        print(f"{name:12s} " + "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
