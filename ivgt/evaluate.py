"""Evaluate IVGT on held-out synthetic scenes with `common.metrics` only.

`python -m ivgt.evaluate --model results/ivgt/run/model [--scenes 32] [--out results/ivgt/eval.json]`

Protocol (per test scene): views 0-3 are the input (unposed), views 4-5 held out for novel-view
synthesis. Everything is compared in the canonical frame of the ground truth (first input camera
= world, lengths divided by the mean distance of the input views' valid depth points, VGGT's
normalisation), in which the model is trained to predict.
- pose: pairwise RRA@15, RTA@15, AUC@30 (VGGT protocol) of the predicted input cameras;
- depth: AbsRel and delta1 of the depth rendered from the SDF at each predicted input camera,
  median-aligned per image (monocular protocol), at `eval_size`;
- normals: mean angle of the rendered normals (camera frame) to the ground truth;
- novel views: PSNR / SSIM of the views rendered at the held-out ground-truth cameras, rendered at
  the model's input size and downsampled to `eval_size` with the same antialiased filter as the
  ground-truth images (one ray per output pixel would compare an aliased rendering with a
  filtered target);
- mesh: accuracy, completeness, Chamfer, F-score (tau = 0.05 normalised units). Every method's
  mesh (IVGT: marching cubes of its SDF inside the ground-truth bounds; the baseline: its
  constant-depth planes) is ray cast from the ground-truth input cameras at the input resolution
  and the first hits are back-projected; the points inside the ground-truth bounds (+0.05) are
  compared with the back-projected ground-truth depth of the same pixels. This is the ScanNet
  protocol of MonoSDF / Manhattan-SDF (the mesh re-fused from depth rendered at the ground-truth
  poses) in point form: geometry no input view sees (occluded, outside every frustum) is not
  scored, for every method alike; a surface in front of the true one (a floater) is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.cameras import depth_to_points, resize_intrinsics, unproject
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.datasets import SceneDataset
from common.metrics import depth_metrics, normal_angle_metrics, point_cloud_metrics, pose_metrics, psnr, ssim
from ivgt.data import canonical_views
from ivgt.model import IVGT
from ivgt.raycast import mesh_depth

METRICS = {  # name -> higher_is_better
    "mesh_accuracy": False, "mesh_completeness": False, "mesh_chamfer": False, "mesh_fscore": True,
    "depth_abs_rel": False, "depth_delta1": True, "normal_mean_angle": False,
    "pose_rra15": True, "pose_rta15": True, "pose_auc30": True, "nvs_psnr": True, "nvs_ssim": True,
}
INPUT_VIEWS, TARGET_VIEWS = [0, 1, 2, 3], [4, 5]


def _down(x: torch.Tensor, size, nearest=True) -> torch.Tensor:  # [V, C, H, W]
    return F.interpolate(x, size=size, mode="nearest") if nearest else F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def ground_truth(batch: dict, eval_size) -> dict:
    """GT at the evaluation size and the observed GT surface points [N, 3]."""
    H, W = batch["images"].shape[-2:]
    n = len(INPUT_VIEWS)
    depth = batch["depth"]
    valid = depth[:n] > 0
    pts = depth_to_points(depth[:n], batch["K"][:n], batch["w2c"][:n])[valid]  # [N, 3]
    return {
        "K": resize_intrinsics(batch["K"], (H, W), eval_size),
        "depth": _down(depth[:, None], eval_size)[:, 0],
        "normals": _down(batch["normals"], eval_size) if batch["normals"] is not None else None,
        "images": _down(batch["images"], eval_size, nearest=False),
        "points": pts,
    }


def gt_bounds(gt_points: torch.Tensor, margin: float = 0.05) -> torch.Tensor:
    """[2, 3] axis-aligned bounds of the observed ground-truth surface points plus a margin."""
    return torch.stack([gt_points.min(0).values - margin, gt_points.max(0).values + margin])


def observed_surface(vertices, faces, batch: dict, gt_points: torch.Tensor) -> np.ndarray:
    """Points [N, 3] of a mesh seen by the input views (module docstring): first hits of the
    ground-truth input cameras' pixel rays, back-projected, inside the ground-truth bounds."""
    n = len(INPUT_VIEWS)
    H, W = batch["depth"].shape[-2:]
    depth = mesh_depth(vertices, faces, batch["K"][:n], batch["w2c"][:n], H, W)  # [n, H, W], 0: no hit
    pts = depth_to_points(depth, batch["K"][:n], batch["w2c"][:n])[depth > 0]  # [N, 3]
    lo, hi = gt_bounds(gt_points)
    return pts[((pts >= lo) & (pts <= hi)).all(-1)].double().numpy()


def score(pred: dict, gt: dict, batch: dict) -> dict:
    """Metrics of one scene from predictions: w2c [4, 4, 4], depth [4, h, w], normals [4, 3, h, w],
    rgb_novel [2, 3, h, w], vertices [N, 3] and faces [F, 3] of the mesh."""
    n = len(INPUT_VIEWS)
    out = {}
    pm = pose_metrics(pred["w2c"].double().numpy(), batch["w2c"][:n].double().numpy())
    out.update(pose_rra15=pm["rra_15"], pose_rta15=pm["rta_15"], pose_auc30=pm["auc_30"])
    d = depth_metrics(pred["depth"].clamp_min(1e-3).numpy(), gt["depth"][:n].numpy(), align="median")
    out.update(depth_abs_rel=d["abs_rel"], depth_delta1=d["delta1"])
    if gt["normals"] is not None:
        out["normal_mean_angle"] = normal_angle_metrics(pred["normals"].numpy(), gt["normals"][:n].numpy())["mean"]
    tgt = gt["images"][n:]
    out["nvs_psnr"] = float(psnr(pred["rgb_novel"], tgt))
    out["nvs_ssim"] = float(ssim(pred["rgb_novel"], tgt))
    pts = observed_surface(pred["vertices"], pred["faces"], batch, gt["points"])
    gt_pts = gt["points"].double().numpy()
    if len(pts) < 10:  # nothing reconstructed in the observed region: the worst honest value
        out.update(mesh_accuracy=None, mesh_completeness=None, mesh_chamfer=None, mesh_fscore=0.0)
    else:
        m = point_cloud_metrics(pts, gt_pts, threshold=0.05)
        out.update(mesh_accuracy=m["accuracy"], mesh_completeness=m["completeness"], mesh_chamfer=m["chamfer"], mesh_fscore=m["fscore"])
    return out


@torch.no_grad()
def predict_ivgt(model: IVGT, batch: dict, gt: dict, eval_size, mesh_resolution: int = 32) -> dict:
    n = len(INPUT_VIEWS)
    device = next(model.parameters()).device
    images = batch["images"][None, :n].to(device)
    out = model(images)
    scene = model.scene_from_outputs(images, out)
    H, W = batch["images"].shape[-2:]
    K_pred = resize_intrinsics(out["K"][0].cpu(), (H, W), eval_size)
    depth, normals, rgb = [], [], []
    for v in range(n):
        r = scene.render(K_pred[v].to(device), out["w2c"][0, v], *eval_size)
        depth.append(r["depth"].cpu()), normals.append(r["normals"].cpu())
    for v in range(n, n + len(TARGET_VIEWS)):  # at the input size, then filtered like the GT images
        rgb.append(scene.render(batch["K"][v].to(device), batch["w2c"][v].to(device), H, W)["rgb"].cpu())
    mesh = scene.extract_mesh(mesh_resolution, bounds=gt_bounds(gt["points"]))
    return {"w2c": out["w2c"][0].cpu(), "depth": torch.stack(depth), "normals": torch.stack(normals),
            "rgb_novel": _down(torch.stack(rgb), eval_size, nearest=False), "vertices": mesh.vertices, "faces": mesh.faces}


def predict_baseline(batch: dict, gt: dict, eval_size) -> dict:
    """Trivial baseline: identity poses, constant depth (1 unit, median-aligned by the protocol),
    normals facing the camera, the first input image as every novel view, and as its mesh the
    constant depth maps: each view's image rectangle at depth 1 (two triangles), placed by the
    identity pose (so all four coincide)."""
    n = len(INPUT_VIEWS)
    h, w = eval_size
    depth = torch.ones(n, h, w)
    normals = torch.zeros(n, 3, h, w)
    normals[:, 2] = -1
    H, W = batch["images"].shape[-2:]
    corners = torch.tensor([[0.0, 0.0], [W, 0.0], [W, H], [0.0, H]])  # image corners (pixel edges)
    vertices = torch.cat([unproject(corners, torch.ones(4), batch["K"][v]) for v in range(n)])  # [4n, 3]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    faces = torch.cat([faces + 4 * v for v in range(n)])  # [2n, 3]
    return {"w2c": torch.eye(4).expand(n, 4, 4).clone(), "depth": depth, "normals": normals,
            "rgb_novel": gt["images"][:1].expand(len(TARGET_VIEWS), -1, -1, -1),
            "vertices": vertices.numpy(), "faces": faces.numpy()}


def evaluate(models: dict, root="data/synthetic", split="test", scenes: int | None = None, eval_size=(32, 32),
             image_size=(64, 64), mesh_resolution: int = 32, progress: bool = True, per_scene_out=None) -> dict:
    """{method: {metric: mean}} and per-scene values for IVGT models and the trivial baseline.
    models: {name: IVGT}; the baseline is added as "baseline-identity-constant"."""
    from tqdm import tqdm

    data = SceneDataset(root, split, load=("depth", "normals"))
    count = len(data) if scenes is None else min(scenes, len(data))
    per = {name: [] for name in list(models) + ["baseline-identity-constant"]}
    for i in tqdm(range(count), desc="ivgt eval", disable=not progress):
        sample = data[i]
        batch = canonical_views(sample, INPUT_VIEWS + TARGET_VIEWS, image_size)
        gt = ground_truth(batch, eval_size)
        for name, model in models.items():
            per[name].append(score(predict_ivgt(model, batch, gt, eval_size, mesh_resolution), gt, batch))
        per["baseline-identity-constant"].append(score(predict_baseline(batch, gt, eval_size), gt, batch))
    means = {}
    for name, rows in per.items():
        means[name] = {}
        for metric in METRICS:
            vals = [r[metric] for r in rows if r.get(metric) is not None]
            means[name][metric] = float(np.mean(vals)) if vals else None
    return {"means": means, "per_scene": per, "scenes": count}


def main(argv=None):
    parser = OneLineParser("ivgt.evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint folder (save_pretrained)")
    parser.add_argument("--data", default="data/synthetic", help="root of the synthetic splits (make data)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--scenes", type=int, default=None, help="first N scenes of the split (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (default 0)")
    parser.add_argument("--out", default="results/ivgt/eval.json", help="JSON file of the mean metrics")
    add_threads_flag(parser)
    args = parser.parse_args(argv)
    with one_line_errors("ivgt.evaluate"):
        if args.scenes is not None and args.scenes < 1:
            raise ValueError(f"--scenes: expected an int >= 1, got {args.scenes}")
        set_threads(args.threads)
        torch.manual_seed(args.seed)
        model = IVGT.load(args.model)
        res = evaluate({"ivgt": model}, args.data, args.split, args.scenes, image_size=model.cfg.image_size)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res["means"], indent=1))
    print(json.dumps(res["means"], indent=1))


if __name__ == "__main__":
    main()
