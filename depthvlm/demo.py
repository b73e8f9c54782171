"""One image in, the answer, its depth map (16-bit PNG and a coloured preview) and a point cloud out.

    python -m depthvlm.demo --model results/depthvlm/run/stage2/final --image IMG \
        [--K fx,fy,cx,cy] --ask "how far is the red box?" [--out demo_out]

The image is resampled to the model's canonical focal length (the one it was trained at, from
its saved run config, or --focal) with `common.cameras.unify_focal`; without --K a 60-degree
horizontal field of view is assumed and said so. The depth map is returned at the canonical
resolution; the point cloud is its unprojection with the canonical K (OpenCV camera frame, metres).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from common.cameras import depth_to_points, intrinsics_from_fov, unify_focal
from common.cli import OneLineParser, one_line_errors, parse_K


def run(model, processor, image: torch.Tensor, K: torch.Tensor, question: str, focal: float, max_new_tokens=32):
    """(answer, depth [H, W] metres, K_canonical [3, 3], image [3, H, W]) for one image."""
    image_u, K_u = unify_focal(image, K, focal)  # [3, H', W']
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in processor([image_u.clamp(0, 1)], [question]).items()}
    ids, depth = model.generate_with_depth(batch, max_new_tokens=max_new_tokens)
    return processor.decode(ids)[0].strip(), depth[0].float().cpu(), K_u, image_u


def write_outputs(out: Path, name: str, image, K, depth, K_u, image_u, answer: str) -> list[str]:
    """Write <name>_depth.png (16-bit millimetres, scale in <name>_depth.json) and
    <name>_depth_preview.png (colour bar in metres) at the given image's resolution (the canonical
    camera's depth warped to the image's camera), <name>_points.ply (the canonical depth unprojected:
    OpenCV camera frame, metres), <name>_contact_sheet.png and <name>_answer.txt; returns the names."""
    from common.pictures import (upsample_depth, write_contact_sheet, write_depth, write_depth_preview,
                                 write_point_cloud)

    out.mkdir(parents=True, exist_ok=True)
    full = upsample_depth(depth, K_u, tuple(image.shape[-2:]), K_new=K)  # [H, W] metres
    write_depth(out / f"{name}_depth.png", full, K=K)
    write_depth_preview(out / f"{name}_depth_preview.png", full)
    points = depth_to_points(depth, K_u)  # [H', W', 3] camera frame
    colors = image_u.permute(1, 2, 0).clamp(0, 1)  # [H', W', 3]
    valid = depth.reshape(-1) > 0
    write_point_cloud(out / f"{name}_points.ply", points.reshape(-1, 3)[valid], colors.reshape(-1, 3)[valid])
    write_contact_sheet(out / f"{name}_contact_sheet.png", [{"name": name, "image": image, "depth": full}],
                        title=f"depthvlm.demo: {answer[:80]}")
    (out / f"{name}_answer.txt").write_text(answer + "\n")
    return [f"{name}_{s}" for s in ("depth.png", "depth_preview.png", "points.ply", "contact_sheet.png", "answer.txt")]


def main(argv=None):
    from common.datasets.io import read_rgb
    from depthvlm.config import set_cpu_threads
    from depthvlm.model import load_pretrained

    ap = OneLineParser(
        "depthvlm.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="results/depthvlm/run/stage2/final")
    ap.add_argument("--image", required=True)
    ap.add_argument("--K", default=None, help="fx,fy,cx,cy in pixels of the given image")
    ap.add_argument("--ask", default="How far is the nearest object from the camera, in metres?")
    ap.add_argument("--focal", type=float, default=None, help="canonical focal (default: the training run's)")
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with one_line_errors("depthvlm.demo"):
        # Every flag and the image are checked before the model is loaded.
        K = parse_K("--K", args.K) if args.K else None
        if args.focal is not None and not 0 < args.focal < float("inf"):
            raise ValueError(f"--focal: expected a canonical focal length > 0 in pixels, got {args.focal}")
        if not args.ask.strip():
            raise ValueError("--ask: expected a question, got an empty string")
        image = read_rgb(Path(args.image))  # [3, H, W]; DatasetError naming the file
        H, W = image.shape[-2:]
        if K is None:
            fov_y = 2 * torch.atan(torch.tensor(H / W * np.tan(np.deg2rad(30))))
            K = intrinsics_from_fov(torch.tensor(np.deg2rad(60.0)), fov_y, W, H)
            print("no --K given: assuming a 60 degree horizontal field of view "
                  "(metric depth may be off by the focal error)")
        focal = args.focal
        if focal is None:
            run_cfg = Path(args.model).parent.parent / "config.json"
            focal = json.loads(run_cfg.read_text())["data"]["focal"] if run_cfg.is_file() else 1000.0
        torch.manual_seed(args.seed)
        set_cpu_threads(1)
        model, processor = load_pretrained(args.model)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        answer, depth, K_u, image_u = run(model, processor, image, K, args.ask, focal)
    written = write_outputs(Path(args.out), Path(args.image).stem, image, K, depth, K_u, image_u, answer)
    print(f"Q: {args.ask}\nA: {answer}\nwrote {', '.join(written)} in {args.out}")


if __name__ == "__main__":
    main()
