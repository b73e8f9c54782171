"""Grounding by kind of phrase (colour, category, nearest, side, superlative) on the train and test
splits, after a few hundred stage-2 steps from a stage-1 model: the product ("full"), the product
without the relational term ("no-relational": the alignment's logits alone), or the geometry-free
VLM. Shows what the relational term adds and how far the model overfits its 64 training scenes.
(The fused-phrase numbers in the README were measured with the product before phrases were read as
text alone, commit 456fdbf, with this script's evaluation.)

    python -m g2vlm.diagnostics.grounding --variant full --steps 1200 --init results/g2vlm/stage1/stage1/final
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from common.cli import OneLineParser, add_threads_flag, set_threads
from g2vlm.config import load_config
from g2vlm.data import load_scenes
from g2vlm.evaluate import _iou
from g2vlm.heads import TEMPERATURE
from g2vlm.model import G2VLM, G2VLMGeometry
from g2vlm.objective import query_prompt
from g2vlm.train import train


def alignment_only(self, feats, boxes, w2c, phrases):
    return self.align.scores(feats, phrases) / TEMPERATURE


@torch.no_grad()
def accuracy_by_kind(model, scenes) -> dict:
    """Acc@0.25 per phrase kind and overall."""
    g, hits = model.geometry, defaultdict(list)
    for s in scenes:
        tokens = g.tokens(s.rgb, s.sensor, s.K, s.w2c, "sensor")
        feats, _ = g.object_features(tokens, s.boxes, s.rgb, s.K, s.w2c)
        refer = [q for q in s.queries if q.kind == "refer"]
        phrases = model.phrase_embeddings(model.encode([query_prompt(q) for q in refer]))  # [P, C]
        logits = g.ground(feats, s.boxes, s.w2c, phrases)  # [P, N]
        for p, q in enumerate(refer):
            hit = _iou(s.boxes[int(logits[p].argmax())].numpy(), q.target_box) >= 0.25
            hits[q.qtype].append(hit)
            hits["all"].append(hit)
    return {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())}


def main(argv=None) -> None:
    ap = OneLineParser(
        "g2vlm.diagnostics.grounding", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--variant", choices=["full", "no-relational", "geometry-free"], required=True,
                    help="which model trains (module docstring)")
    ap.add_argument("--steps", type=int, default=400, help="stage-2 steps")
    ap.add_argument("--init", default="results/g2vlm/stage1/stage1/final", help="the stage-1 model to start from")
    ap.add_argument("--out", default="/tmp/g2vlm_grounding", help="where the runs go")
    add_threads_flag(ap)
    args = ap.parse_args(argv)
    over = [f"train.stage2.steps={args.steps}", f"train.out_dir={args.out}/{args.variant}"]
    if args.variant == "geometry-free":
        over.append("model.geometry_free=true")
    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml", over)
    set_threads(args.threads)
    if args.variant == "no-relational":
        G2VLMGeometry.ground = alignment_only
    model = G2VLM.from_pretrained(train(cfg, stages=(2,), init=args.init, progress=False)).eval()
    shown = {split: accuracy_by_kind(model, load_scenes(cfg, split)) for split in ("train", "test")}
    print(json.dumps({"variant": args.variant, "steps": args.steps, **shown}))


if __name__ == "__main__":
    main()
