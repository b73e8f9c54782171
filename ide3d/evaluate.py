"""Grounding and QA metrics of a trained model, its baselines and their per-item values.

Protocols (`common.metrics`, Video-3D LLM's evaluation scripts):
- ScanRefer Acc@0.25 / Acc@0.5: the argmax candidate's axis-aligned IoU with the ground-truth box,
  over single-target queries, overall and per unique / multiple (the target's category is the
  only one of its kind in the scene, or not);
- Multi3DRefer F1@0.25 / F1@0.5: the predicted set (nothing when "no target" wins, else the top
  candidates until 0.4 of the softmax(s / 0.07) mass) against the ground-truth boxes, Hungarian
  matching, averaged over the Multi3DRefer queries (zero, one and several targets);
- QA exact match after LEO's answer normalisation (`common.metrics.exact_match`).

    python -m ide3d.evaluate --model results/ide3d/full/final [--no-3d-inputs]
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.metrics import box_iou_3d_axis_aligned, exact_match, multi3drefer_f1
from ide3d.data import collate, items
from ide3d.grounding import predict_multi, predict_single

METRICS = {  # name: higher is better
    "acc@0.25": True,
    "acc@0.5": True,
    "acc@0.25_unique": True,
    "acc@0.5_unique": True,
    "acc@0.25_multiple": True,
    "acc@0.5_multiple": True,
    "f1@0.25": True,
    "f1@0.5": True,
    "qa_em": True,
}


@dataclass
class Predictions:
    """Per query of `items(scenes)`: grounding -> chosen candidate indices (single: [argmax]),
    QA -> answer text."""

    chosen: dict  # (scene, query) -> list[int]
    answers: dict  # (scene, query) -> str


@torch.no_grad()
def predict(
    model,
    processor,
    scenes,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    threshold: float = 0.4,
    use_3d_inputs: bool = True,
) -> Predictions:
    """Run the model on every query of `scenes` (prepared for `processor`). `use_3d_inputs=False`
    withholds the per-token world points (the 3D-input variant evaluated without its 3D inputs)."""
    model.eval()
    device = next(model.parameters()).device
    tau = model.settings["ground_temperature"]
    chosen, answers = {}, {}
    ground, qa = items(scenes, "ground"), items(scenes, "qa")
    for start in range(0, len(ground), batch_size):
        part = ground[start : start + batch_size]
        batch = collate(scenes, part, processor)
        index = batch["video_index"].to(device)  # [B] scene of each query
        out = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            position_ids=batch["position_ids"].to(device),
            pixel_values_videos=batch["pixel_values_videos"].to(device),
            token_xyz=batch["token_xyz"].to(device) if use_3d_inputs else None,
            token_has_points=batch["token_has_points"].to(device),
            video_index=index,
        )
        for b, key in enumerate(part):
            u = int(index[b])
            objects = model.object_features(
                out.video.patch_features[u], batch["membership"][u].to(device), batch["boxes"][u].to(device)
            )
            scores = (
                model.ground_scores(out.last_hidden_state[b, int(batch["ground_index"][b])], objects)
                .float()
                .cpu()
            )
            q = scenes[key[0]].queries[key[1]]
            chosen[key] = (
                predict_multi(scores, tau, threshold)
                if q.dataset == "multi3drefer"
                else [predict_single(scores)]
            )
    for start in range(0, len(qa), batch_size):
        part = qa[start : start + batch_size]
        batch = collate(scenes, part, processor, with_answers=False)
        inputs = {
            k: batch[k].to(device)
            for k in ("input_ids", "attention_mask", "pixel_values_videos", "video_index")
        }
        if use_3d_inputs:
            inputs.update(
                token_xyz=batch["token_xyz"].to(device), token_has_points=batch["token_has_points"].to(device)
            )
        for key, text in zip(part, processor.decode(model.answer(inputs, max_new_tokens))):
            answers[key] = text
    return Predictions(chosen, answers)


def score(scenes, preds: Predictions) -> tuple[dict, dict]:
    """-> (metrics {name: value}, per-item values {name: np.ndarray}) over the queries of `scenes`."""
    per = {k: [] for k in ("acc@0.25", "acc@0.5", "f1@0.25", "f1@0.5", "qa_em")}
    kinds = []
    for key, chosen in preds.chosen.items():
        s, q = scenes[key[0]], scenes[key[0]].queries[key[1]]
        boxes = s.boxes.numpy()
        if q.dataset == "scanrefer":
            gt = q.target_boxes[0]
            iou = float(box_iou_3d_axis_aligned(boxes[chosen[0], :3], boxes[chosen[0], 3:], gt[:3], gt[3:]))
            per["acc@0.25"].append(float(iou >= 0.25))
            per["acc@0.5"].append(float(iou >= 0.5))
            kinds.append(q.qtype)
        else:
            for t in (0.25, 0.5):
                per[f"f1@{t:g}"].append(
                    multi3drefer_f1(boxes[chosen].reshape(-1, 6), q.target_boxes, threshold=t)
                )
    for key, text in preds.answers.items():
        per["qa_em"].append(exact_match(text, scenes[key[0]].queries[key[1]].answers))
    kinds = np.array(kinds)
    per = {k: np.array(v, dtype=float) for k, v in per.items()}
    for kind in ("unique", "multiple"):
        for t in ("0.25", "0.5"):
            per[f"acc@{t}_{kind}"] = per[f"acc@{t}"][kinds == kind] if len(kinds) else np.zeros(0)
    metrics = {k: float(v.mean()) if v.size else None for k, v in per.items()}
    return metrics, per


# -------------------------------------------------------------------------------------------------
# Trivial baselines (the same items, the same metric code)
# -------------------------------------------------------------------------------------------------


def random_candidate(scenes, seed: int = 0) -> Predictions:
    """A uniformly random candidate per grounding query (one, also for Multi3DRefer queries)."""
    rng = np.random.default_rng(seed)
    return Predictions({k: [int(rng.integers(len(scenes[k[0]].boxes)))] for k in items(scenes, "ground")}, {})


def largest_box(scenes) -> Predictions:
    """The largest-volume candidate for every grounding query."""
    out = {}
    for k in items(scenes, "ground"):
        boxes = scenes[k[0]].boxes
        out[k] = [int(boxes[:, 3:].prod(1).argmax())]
    return Predictions(out, {})


def majority_answer(train_scenes, scenes, per_type: bool = False) -> Predictions:
    """The most frequent training answer for every question (`per_type`: of its question type)."""
    counts: dict = {}
    for s in train_scenes:
        for q in s.queries:
            if q.kind == "qa":
                counts.setdefault(q.qtype if per_type else None, Counter())[q.answers[0]] += 1
    if not counts:
        raise ValueError("majority answer: the training scenes have no questions")
    overall = sum(counts.values(), Counter()).most_common(1)[0][0]
    answers = {}
    for k in items(scenes, "qa"):
        c = counts.get(scenes[k[0]].queries[k[1]].qtype if per_type else None)
        answers[k] = c.most_common(1)[0][0] if c else overall
    return Predictions({}, answers)


def main(argv=None) -> None:
    from ide3d.config import load_config
    from ide3d.data import ensure_data, load_scenes
    from ide3d.model import load_pretrained

    ap = OneLineParser("ide3d.evaluate", description=__doc__)
    ap.add_argument("--model", required=True, help="a folder written by ide3d.train (<out>/final)")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config of the data and evaluation settings (default: configs/tiny.yaml)")
    ap.add_argument("--no-3d-inputs", action="store_true", help="withhold the 3D position inputs")
    ap.add_argument("--out", default=None, help="write the metrics as JSON here")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (eval.batch_size=4)")
    args = ap.parse_args(argv)
    with one_line_errors("ide3d.evaluate"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        model, processor = load_pretrained(args.model)
        ensure_data(cfg.data)
        scenes = load_scenes(cfg.data, cfg.data.test_split, processor=processor)
        preds = predict(
            model,
            processor,
            scenes,
            cfg.eval.batch_size,
            cfg.eval.max_new_tokens,
            cfg.eval.multi_threshold,
            use_3d_inputs=not args.no_3d_inputs,
        )
        metrics, _ = score(scenes, preds)
    text = json.dumps(metrics, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
