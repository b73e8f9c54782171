"""Is E identifiable from the clip? The losses of the fitted frames against E, per object.

    python -m endogsim.diagnostics.identifiability --data DIR [--fit-frames 8] [--out scan.json]

On the synthetic clip's own scene (`endogsim.clip.ground_truth_scene`, the generator's particles),
one object's E is set to the truth times each factor (the other at its truth) and the fitted
frames are simulated under the clip's known force, rendered, and compared with the video: the
image MSE over tissue pixels and the flow MSE against Lucas-Kanade, forward only. A loss with its
minimum at factor 1 says the refinement can find E; a flat one says it cannot (under a prescribed
tool displacement, the "indent" clip, E shows only through inertia). Both losses are taken on the
frames' texture, as the refinement takes them (`RefineConfig.texture_sigma`). Factors whose E would break
the time-step limit are skipped.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from common.cli import OneLineParser
from endogsim.binding import render_particles, visible_at_rest
from endogsim.clip import clip_observations, ground_truth_scene, known_forces
from endogsim.flow import flow_loss, lucas_kanade, texture
from endogsim.refine import RefineConfig, scene_physics, simulate_frames, stable_E_max

FACTORS = (0.33, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 3.0)


def scan_loss(data_dir, fit_frames: int = 8, factors=FACTORS, config: RefineConfig | None = None) -> dict:
    cfg = config or RefineConfig()
    scene = ground_truth_scene(data_dir)
    obs = clip_observations(data_dir, range(fit_frames))
    p = scene_physics(scene, obs.times.numpy(), known_forces(data_dir))
    x0 = torch.tensor(p.particles.x, dtype=torch.float32)
    gaussians, static = visible_at_rest(x0, p.binding, p.camera, p.background, cfg.cull_weight)
    tool = F.max_pool2d(obs.tool_masks.float()[:, None], 2 * cfg.mask_dilate + 1, 1, cfg.mask_dilate)[:, 0]
    keep = 1 - tool  # [F, H, W]
    observed = texture(obs.images, keep, cfg.texture_sigma)  # what the refinement compares
    flow_obs, valid = lucas_kanade(
        observed + 0.5, obs.tool_masks, cfg.lk_sigma, cfg.lk_iterations, cfg.lk_min_eig
    )
    valid = valid & (keep[:-1] > 0) & (keep[1:] > 0)
    out = {"fit_frames": fit_frames, "objects": []}
    for o, truth in enumerate(scene.materials):
        rows = []
        for f in factors:
            mats = [replace(m, E=m.E * f) if j == o else m for j, m in enumerate(scene.materials)]
            if mats[o].E > stable_E_max(mats[o], mats[o].nu, p.mpm, 1.0):
                continue
            _, pos = simulate_frames(
                p.particles, gaussians, mats, p.mpm, p.physics, p.camera, obs.times.numpy(), static
            )
            pos = torch.tensor(pos, dtype=torch.float32)  # [F, N, 3]
            li, lf = [], []
            with torch.no_grad():
                for i in range(fit_frames):
                    nxt = pos[i + 1] if i + 1 < fit_frames else None
                    rgb, fl = render_particles(pos[i], gaussians, p.camera, static, nxt, cfg.tile_size)
                    if i > 0:
                        rgb = texture(rgb[None], keep[i][None], cfg.texture_sigma)[0]
                        li.append(
                            (((rgb - observed[i]) ** 2).sum(-1) * keep[i]).sum() / (3 * keep[i].sum())
                        )
                    if fl is not None:
                        lf.append(flow_loss(fl, flow_obs[i], valid[i]))
            rows.append(
                {
                    "factor": f,
                    "E": mats[o].E,
                    "image_mse": float(torch.stack(li).mean()),
                    "flow_mse_px2": float(torch.stack(lf).mean()),
                }
            )
        out["objects"].append({"id": o, "E_true": truth.E, "scan": rows})
    return out


def main(argv=None) -> int:
    ap = OneLineParser(
        "endogsim.diagnostics.identifiability",
        description=__doc__,
    )
    ap.add_argument("--data", required=True, help="a synthetic clip (endogsim.synthetic_scene)")
    ap.add_argument("--fit-frames", type=int, default=8, help="frames of the clip the loss is scanned over (default 8)")
    ap.add_argument("--out", default=None, help="write the scan as JSON here")
    args = ap.parse_args(argv)
    res = scan_loss(args.data, args.fit_frames)
    for o in res["objects"]:
        for r in o["scan"]:
            print(
                f"object {o['id']} E = {r['factor']:.2f} x truth: image MSE {r['image_mse']:.4e}  "
                f"flow MSE {r['flow_mse_px2']:.4f} px^2"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
