"""Which object pooling grounds best: stage 2 for a few hundred steps from the reproduce's stage-1
model with the candidate features pooled from voxel tokens, from the encoder's points, or both
(the product uses both), beside the geometry-free VLM; Acc@0.25 on the test split (sensor mode).

    python -m g2vlm.diagnostics.object_pooling --steps 400 --variant points
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from g2vlm.config import load_config, set_threads
from g2vlm.data import load_scenes
from g2vlm.evaluate import evaluate_scene, pool
from g2vlm.heads import pool_boxes
from g2vlm.model import G2VLM, G2VLMGeometry
from g2vlm.train import train

ORIGINAL = G2VLMGeometry.object_features


def pooled_by(variant: str):
    def object_features(self, tokens, boxes, rgb=None, K=None, w2c=None):
        if self.config.geometry_free or variant == "both":
            return ORIGINAL(self, tokens, boxes, rgb, K, w2c)
        if variant == "voxels":
            half = torch.tensor(self.config.voxel_sizes, device=boxes.device)[tokens.scale] / 2
            return self.objects(pool_boxes(tokens.xyz, tokens.feats, half, boxes), boxes)
        zero = torch.zeros(tokens.point_xyz.shape[0], device=boxes.device)
        return self.objects(pool_boxes(tokens.point_xyz, tokens.point_feats, zero, boxes), boxes)

    return object_features


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=["voxels", "points", "both", "geometry-free"], required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--init", default="results/g2vlm/stage1/stage1/final")
    ap.add_argument("--out", default="/tmp/g2vlm_pooling")
    args = ap.parse_args(argv)
    over = [f"train.stage2.steps={args.steps}", f"train.out_dir={args.out}/{args.variant}", "threads=1"]
    if args.variant == "geometry-free":
        over.append("model.geometry_free=true")
    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml", over)
    set_threads(1)
    G2VLMGeometry.object_features = pooled_by(args.variant)
    final = train(cfg, stages=(2,), init=args.init, progress=False)
    model = G2VLM.from_pretrained(final)
    metrics, _ = pool([evaluate_scene(model, s, cfg.eval, ("sensor",)) for s in load_scenes(cfg, "test")])
    shown = {k: round(metrics[k], 3) for k in ("acc@0.25", "t2o_r5", "sg_f1", "qa_accuracy")}
    print(json.dumps({"variant": args.variant, "steps": args.steps, **shown}))


if __name__ == "__main__":
    main()
