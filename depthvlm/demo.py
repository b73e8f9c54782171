"""One image in, the answer, its depth map (16-bit PNG and a coloured preview) and a point cloud out.

    python -m depthvlm.demo --image IMG --ask "how far is the red box?"
    python -m depthvlm.demo --image IMG --K 525,525,320,240 --model results/depthvlm/run/stage2/final --out out/

The image is read by `common.datasets.read_image_folder` (EXIF rotation applied, a large photo
downscaled on read): its intrinsics come from --K or --fov, else from camera files beside it
(intrinsics.txt, a COLMAP model, cameras.json, or --cameras), else a 60-degree horizontal field of
view is assumed, and one line says which (metric depth is off by the focal error then). It is then
resampled to the model's canonical focal length (the one it was trained at, from its saved run
config, or --focal) with `common.cameras.unify_focal`. The depth map is predicted at the canonical
resolution and written at the image's; the point cloud is the canonical depth unprojected with the
canonical K (OpenCV camera frame, metres). The outputs are named after the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from common.cameras import depth_to_points, unify_focal
from common.cli import OneLineParser, add_demo_flags, check_demo_flags, check_demo_model, one_line_errors
from common.viewer import add_view_flag, view_outputs

DEFAULT_MODEL = "results/depthvlm/run/stage2/final"  # make reproduce-depthvlm's model
MAX_SIDE = 1536  # the image is loaded at most this large (focal-length unification resamples it anyway)


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
    from tqdm import tqdm

    from common.datasets import read_image_folder
    from depthvlm.model import load_pretrained

    ap = OneLineParser("depthvlm.demo", description=__doc__)
    add_demo_flags(ap, input_flag="--image", input_help="the image (any size; EXIF rotation applied)",
                   model=DEFAULT_MODEL, make="make reproduce-depthvlm", out="results/depthvlm/demo")
    ap.add_argument("--ask", default="How far is the nearest object from the camera, in metres?",
                    help="the question (default: how far the nearest object is)")
    ap.add_argument("--focal", type=float, default=None,
                    help="canonical focal length in pixels (default: the training run's, else 1000)")
    ap.add_argument("--seed", type=int, default=0, help="torch seed")
    add_view_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors("depthvlm.demo"):
        # Every flag and the image are checked before the model is loaded.
        flags = check_demo_flags(args)
        if args.focal is not None and not 0 < args.focal < float("inf"):
            raise ValueError(f"--focal: expected a canonical focal length > 0 in pixels, got {args.focal}")
        if not args.ask.strip():
            raise ValueError("--ask: expected a question, got an empty string")
        sample = read_image_folder([Path(args.image)], max_side=MAX_SIDE, K=flags["K"], fov=flags["fov"],
                                   cameras=flags["cameras"])  # DatasetError naming the file
        image, K = sample.images[0], sample.K[0]  # [3, H, W], [3, 3]
        model_dir = check_demo_model(args)
        focal = args.focal
        if focal is None:
            run_cfg = model_dir.parent.parent / "config.json"
            focal = json.loads(run_cfg.read_text())["data"]["focal"] if run_cfg.is_file() else 1000.0
        torch.manual_seed(args.seed)
        print(sample.annotations["note"])
        with tqdm(total=3, desc="depthvlm.demo", unit="step", disable=None) as bar:
            bar.set_postfix_str("loading the model")
            model, processor = load_pretrained(model_dir)
            model.to(flags["device"])
            bar.update()
            bar.set_postfix_str("answering")
            answer, depth, K_u, image_u = run(model, processor, image, K, args.ask, focal)
            bar.update()
            bar.set_postfix_str("writing")
            written = write_outputs(Path(args.out), Path(args.image).stem, image, K, depth, K_u, image_u, answer)
            bar.update()
    print(f"Q: {args.ask}\nA: {answer}\nwrote {', '.join(written)} in {args.out}")
    if args.view:  # the point cloud (camera frame) and the camera in the browser, until Ctrl-C
        view_outputs("depthvlm.demo", [Path(args.out) / f"{Path(args.image).stem}_points.ply"],
                     {"K": K_u, "w2c": torch.eye(4), "height": image_u.shape[-2], "width": image_u.shape[-1],
                      "images": image_u[None]})


if __name__ == "__main__":
    main()
