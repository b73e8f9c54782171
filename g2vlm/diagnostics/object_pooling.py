"""Which object pooling grounds best: stage 2 for a few hundred steps from the reproduce's stage-1
model with the candidate features pooled from voxel tokens, from the encoder's points, or both
(the product uses both), beside the geometry-free VLM; Acc@0.25 on the test split (sensor mode).
"projected" adds to both the encoder's per-pixel features pooled inside each box's projection in
every view (the geometry-free VLM's pooling, on the geometry encoder's pixel features); "semantic"
adds instead the geometry-free VLM's own RGB patch tokens pooled that way (a semantic stream beside
the geometric one, as G2VLM keeps its VLM's visual tokens).

    python -m g2vlm.diagnostics.object_pooling --steps 400 --variant points
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from common.cli import OneLineParser, add_threads_flag, set_threads
from g2vlm.config import load_config
from g2vlm.data import load_scenes
from g2vlm.evaluate import evaluate_scene, pool
from g2vlm.heads import pool_boxes
from g2vlm.model import G2VLM, G2VLMGeometry
from g2vlm.train import train

ORIGINAL = G2VLMGeometry.object_features
ORIGINAL_TOKENS = G2VLMGeometry.tokens


def tokens_with_pixels(self, rgb, depth_in, K, w2c, mode="sensor", vertices=None, vertex_normals=None):
    out = ORIGINAL_TOKENS(self, rgb, depth_in, K, w2c, mode, vertices, vertex_normals)
    if not self.config.geometry_free and mode == "sensor":
        depth, _ = self.depth_head(rgb, depth_in)
        out.pixel_grid = self.encoder._pixel_features(rgb, depth.detach())  # [V, h, w, C]
    return out


def projected(grid, boxes, K, w2c, S):
    """Mean pixel feature [N, C] inside each box's projected rectangle, over the views."""
    from common.metrics import box_corners

    V, g = grid.shape[0], grid.shape[1]
    centers = (torch.arange(g, device=boxes.device) + 0.5) * (S / g)
    w = torch.zeros(boxes.shape[0], V * g * g, device=boxes.device)
    for n, box in enumerate(boxes):
        c = torch.from_numpy(box_corners(box[:3].cpu().numpy(), box[3:].cpu().numpy())).to(K)
        for v in range(V):
            cam = c @ w2c[v, :3, :3].T + w2c[v, :3, 3]
            if bool((cam[:, 2] <= 0.05).any()):
                continue
            uv = cam[:, :2] / cam[:, 2:] * K[v, [0, 1], [0, 1]] + K[v, :2, 2]
            inx = (centers >= uv[:, 0].min()) & (centers <= uv[:, 0].max())
            iny = (centers >= uv[:, 1].min()) & (centers <= uv[:, 1].max())
            w[n, v * g * g : (v + 1) * g * g] = (iny[:, None] & inx[None]).flatten().float()
    return (w @ grid.reshape(-1, grid.shape[-1])) / w.sum(1, keepdim=True).clamp_min(1.0)


def pooled_by(variant: str):
    def object_features(self, tokens, boxes, rgb=None, K=None, w2c=None):
        if self.config.geometry_free or variant == "both":
            return ORIGINAL(self, tokens, boxes, rgb, K, w2c)
        if variant == "semantic":
            half = torch.tensor(self.config.voxel_sizes, device=boxes.device)[tokens.scale] / 2
            zero = torch.zeros(tokens.point_xyz.shape[0], device=boxes.device)
            pooled = pool_boxes(tokens.xyz, tokens.feats, half, boxes)
            pooled = pooled + pool_boxes(tokens.point_xyz, tokens.point_feats, zero, boxes)
            g = self.patch_embed(rgb * 2 - 1)  # [V, C, h, w] the geometry-free VLM's tokens
            patches = SimpleNamespace(feats=g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1]))
            return self.objects(pooled + self._pool_projected(patches, boxes, K, w2c, rgb.shape[-1]), boxes)
        if variant == "projected":
            half = torch.tensor(self.config.voxel_sizes, device=boxes.device)[tokens.scale] / 2
            zero = torch.zeros(tokens.point_xyz.shape[0], device=boxes.device)
            pooled = pool_boxes(tokens.xyz, tokens.feats, half, boxes)
            pooled = pooled + pool_boxes(tokens.point_xyz, tokens.point_feats, zero, boxes)
            if getattr(tokens, "pixel_grid", None) is not None:
                pooled = pooled + projected(tokens.pixel_grid, boxes, K, w2c, rgb.shape[-1])
            return self.objects(pooled, boxes)
        if variant == "voxels":
            half = torch.tensor(self.config.voxel_sizes, device=boxes.device)[tokens.scale] / 2
            return self.objects(pool_boxes(tokens.xyz, tokens.feats, half, boxes), boxes)
        zero = torch.zeros(tokens.point_xyz.shape[0], device=boxes.device)
        return self.objects(pool_boxes(tokens.point_xyz, tokens.point_feats, zero, boxes), boxes)

    return object_features


def main(argv=None) -> None:
    ap = OneLineParser(
        "g2vlm.diagnostics.object_pooling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--variant", choices=["voxels", "points", "both", "projected", "semantic", "geometry-free"],
        required=True, help="what a candidate box pools (module docstring)"
    )
    ap.add_argument("--steps", type=int, default=400, help="stage-2 steps")
    ap.add_argument("--init", default="results/g2vlm/stage1/stage1/final", help="the stage-1 model to start from")
    ap.add_argument("--out", default="/tmp/g2vlm_pooling", help="where the runs go")
    add_threads_flag(ap)
    args = ap.parse_args(argv)
    over = [f"train.stage2.steps={args.steps}", f"train.out_dir={args.out}/{args.variant}"]
    if args.variant == "geometry-free":
        over.append("model.geometry_free=true")
    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml", over)
    set_threads(args.threads)
    G2VLMGeometry.object_features = pooled_by(args.variant)
    if args.variant == "projected":
        G2VLMGeometry.tokens = tokens_with_pixels
    final = train(cfg, stages=(2,), init=args.init, progress=False)
    model = G2VLM.from_pretrained(final)
    metrics, _ = pool([evaluate_scene(model, s, cfg.eval, ("sensor",)) for s in load_scenes(cfg, "test")])
    shown = {k: round(metrics[k], 3) for k in ("acc@0.25", "t2o_r5", "sg_f1", "qa_accuracy")}
    print(json.dumps({"variant": args.variant, "steps": args.steps, **shown}))


if __name__ == "__main__":
    main()
