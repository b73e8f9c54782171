"""G2VLM's metrics on held-out scenes, per item (for bootstrap intervals) and averaged.

- Reconstruction (indoor scenes; both modes): the predicted point maps against the ground truth's at
  the ground truth's valid pixels, aligned as the Pi3 / G2VLM multi-view protocol does (Umeyama
  Sim(3), then ICP at 0.1 m; `common.metrics.align_sim3_icp`); then Acc / Comp / NC
  (`multiview_reconstruction_metrics`), Chamfer and F-score at 5 cm (`point_cloud_metrics`) and
  occupancy IoU of 10 cm voxels (`occupancy_iou`).
- Referring localisation: the phrase's best candidate, Acc@0.25 / Acc@0.5 of its axis-aligned IoU.
- Cross-modal retrieval within a scene: phrase -> object R@1 / R@5 over the scene's candidates;
  object -> phrase R@1 / R@5 over the scene's phrases (a hit when any phrase of the object ranks there).
- Scene graph: candidates with objectness > 0.5 are the objects, matched one-to-one to ground-truth
  objects at IoU >= 0.25; relations with probability > 0.5 between them; triplet precision / recall /
  F1 against the ground truth's triplets (`relations.py`), per scene.
- Spatial QA: exact match (`common.metrics.exact_match`) for categorical answers, VSI-Bench MRA for
  numbers (distance, size, count); their mean is qa_accuracy.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from common.cameras import depth_to_points
from common.metrics import (
    box_iou_3d_axis_aligned,
    exact_match,
    mean_relative_accuracy,
    multiview_reconstruction_metrics,
    occupancy_iou,
    parse_number,
    point_cloud_metrics,
)
from g2vlm.objective import query_prompt
from g2vlm.relations import RELATIONS, triplet_scores, triplets

RECON = ("chamfer", "fscore", "iou", "acc", "comp", "nc")
METRICS = {  # name: higher is better
    **{f"{mode}_{m}": m in ("fscore", "iou", "nc") for mode in ("sensor", "rgb") for m in RECON},
    "acc@0.25": True,
    "acc@0.5": True,
    "t2o_r1": True,
    "t2o_r5": True,
    "o2t_r1": True,
    "o2t_r5": True,
    "sg_precision": True,
    "sg_recall": True,
    "sg_f1": True,
    "qa_accuracy": True,
    "rgb_acc@0.25": True,
    "rgb_sg_f1": True,
}
MAX_POINTS = 20000


@torch.no_grad()
def reconstruct(model, scene, mode: str) -> tuple:
    """(depth [V, S, S], world points [V, S, S, 3]) predicted in `mode` ("sensor": completed sensor depth
    with the given cameras; "rgb": the reconstruction network, anchored at view 0's pose)."""
    g = model.geometry
    if mode == "sensor":
        depth, _ = g.depth_head(scene.rgb, scene.sensor)
        return depth, depth_to_points(depth, scene.K, scene.w2c)
    depth, _, world, _ = g.rgb_only(scene.rgb, scene.w2c[0])
    return depth, world


def recon_metrics(scene, world: torch.Tensor, ecfg, seed: int = 0) -> dict:
    """Reconstruction metrics of predicted world points [V, S, S, 3] (module docstring)."""
    valid = scene.depth > 0
    gt = depth_to_points(scene.depth, scene.K, scene.w2c)[valid].double().numpy()
    pred = world[valid].double().numpy()
    rng = np.random.default_rng(seed)
    if len(gt) > MAX_POINTS:
        keep = rng.choice(len(gt), MAX_POINTS, replace=False)
        gt, pred = gt[keep], pred[keep]
    official, aligned = multiview_reconstruction_metrics(pred, gt, ecfg.icp_threshold, return_aligned=True)
    pc = point_cloud_metrics(aligned, gt, threshold=ecfg.fscore_threshold)
    return {
        "chamfer": pc["chamfer"],
        "fscore": pc["fscore"],
        "iou": occupancy_iou(aligned, gt, ecfg.occupancy_voxel),
        "acc": official["acc"],
        "comp": official["comp"],
        "nc": official["nc"],
    }


def _iou(a, b) -> float:
    return float(
        box_iou_3d_axis_aligned(np.asarray(a[:3]), np.asarray(a[3:]), np.asarray(b[:3]), np.asarray(b[3:]))
    )


def scene_graph(model, boxes, w2c0, feats, objectness, threshold: float = 0.5) -> dict:
    """The scene graph as JSON-ready data: objects (candidate index, box, score) and their relations seen
    from the camera w2c0 [4, 4]; boxes [N, 6], feats [N, C], objectness [N] logits."""
    g = model.geometry
    keep = (torch.sigmoid(objectness) > 0.5).nonzero()[:, 0]
    objects = [
        {
            "id": int(k),
            "box": [round(float(x), 3) for x in boxes[k]],
            "score": round(float(torch.sigmoid(objectness[k])), 3),
        }
        for k in keep
    ]
    relations = []
    if len(keep) > 1:
        prob = torch.sigmoid(g.relations(feats[keep], boxes[keep], w2c0))  # [n, n, R]
        for i, j, r in (prob > threshold).nonzero().tolist():
            if i != j:
                relations.append(
                    {
                        "subject": int(keep[i]),
                        "predicate": RELATIONS[r],
                        "object": int(keep[j]),
                        "score": round(float(prob[i, j, r]), 3),
                    }
                )
    return {"objects": objects, "relations": relations}


def graph_triplets(scene, graph: dict) -> set:
    """Predicted triplets in ground-truth object ids (greedy one-to-one matching at IoU >= 0.25)."""
    pairs = sorted(
        (
            (_iou(scene.boxes[o["id"]].numpy(), gt), o["id"], g)
            for o in graph["objects"]
            for g, gt in enumerate(scene.object_boxes)
        ),
        reverse=True,
    )
    match, used = {}, set()
    for iou, cand, g in pairs:
        if iou >= 0.25 and cand not in match and g not in used:
            match[cand] = g
            used.add(g)
    out = set()
    for r in graph["relations"]:
        a, b = match.get(r["subject"], -1 - r["subject"]), match.get(r["object"], -1 - r["object"])
        out.add((a, r["predicate"], b))
    return out


def qa_score(answer: str, q) -> float:
    if q.value is not None:
        return (
            mean_relative_accuracy(parse_number(answer), q.value)
            if q.value != 0
            else exact_match(answer, q.answers)
        )
    return exact_match(answer, q.answers)


@torch.no_grad()
def evaluate_scene(model, scene, ecfg, modes=("sensor", "rgb"), recon_only: bool = False) -> dict:
    """Per-item values of one scene: {metric: [values]} (lists, for pooling over scenes)."""
    model.eval()
    g = model.geometry
    out: dict[str, list] = {k: [] for k in METRICS}
    for mode in modes:
        if scene.domain == "indoor" and not g.config.geometry_free:
            _, world = reconstruct(model, scene, mode)
            for k, v in recon_metrics(scene, world, ecfg).items():
                out[f"{mode}_{k}"].append(v)
        if recon_only:
            continue
        tokens = g.tokens(scene.rgb, scene.sensor, scene.K, scene.w2c, mode)
        feats, objectness = g.object_features(tokens, scene.boxes, scene.rgb, scene.K, scene.w2c)
        refer = [q for q in scene.queries if q.kind == "refer"]
        prefix = "" if mode == "sensor" else "rgb_"
        if refer:
            text = {
                k: v.to(scene.rgb.device) for k, v in model.encode([query_prompt(q) for q in refer]).items()
            }
            phrases = model.phrase_embeddings(text)  # [P, C]
            scores = g.align.scores(feats, phrases)  # [P, N] retrieval: the alignment space alone
            logits = g.ground(feats, scene.boxes, scene.w2c, phrases)  # [P, N] localisation
            for p, q in enumerate(refer):
                iou = _iou(scene.boxes[int(logits[p].argmax())].numpy(), q.target_box)
                out[f"{prefix}acc@0.25"].append(float(iou >= 0.25))
                if mode == "sensor":
                    out["acc@0.5"].append(float(iou >= 0.5))
                    rank = int((scores[p] > scores[p, q.target]).sum())
                    out["t2o_r1"].append(float(rank < 1))
                    out["t2o_r5"].append(float(rank < 5))
            if mode == "sensor":
                for obj in sorted({q.target for q in refer}):
                    col = scores[:, obj]  # [P]
                    best = min(int((col > col[p]).sum()) for p, q in enumerate(refer) if q.target == obj)
                    out["o2t_r1"].append(float(best < 1))
                    out["o2t_r5"].append(float(best < 5))
        graph = scene_graph(model, scene.boxes, scene.w2c[0], feats, objectness, ecfg.relation_threshold)
        p, r, f = triplet_scores(graph_triplets(scene, graph), triplets(scene.relations))
        out[f"{prefix}sg_f1"].append(f)
        if mode == "sensor":
            out["sg_precision"].append(p)
            out["sg_recall"].append(r)
            qa = [q for q in scene.queries if q.kind == "qa"]
            if qa:
                answers = model.answer([query_prompt(q) for q in qa], [tokens] * len(qa), ecfg.max_new_tokens)
                out["qa_accuracy"] += [qa_score(a, q) for a, q in zip(answers, qa)]
    return out


def pool(per_scene: list[dict]) -> tuple[dict, dict]:
    """-> (metrics {name: mean or None}, per-item arrays {name: np.ndarray})."""
    per = {k: np.array([v for d in per_scene for v in d.get(k, [])], dtype=float) for k in METRICS}
    return {k: float(v.mean()) if v.size else None for k, v in per.items()}, per


# -------------------------------------------------------------------------------------------------
# Trivial baselines
# -------------------------------------------------------------------------------------------------


def mean_depth_baseline(train_scenes, scenes, ecfg) -> dict:
    """Reconstruction from a constant depth (the training scenes' mean indoor depth), given cameras."""
    depths = torch.cat([s.depth[s.depth > 0] for s in train_scenes if s.domain == "indoor"])
    mean = float(depths.mean())
    out: dict[str, list] = {k: [] for k in METRICS}
    for s in scenes:
        if s.domain == "indoor":
            world = depth_to_points(torch.full_like(s.depth, mean), s.K, s.w2c)
            for k, v in recon_metrics(s, world, ecfg).items():
                out[f"sensor_{k}"].append(v)
    return out


def nearest_centre_baseline(scenes) -> dict:
    """Grounding: the candidate whose centre is nearest the mean of the scene's candidate centres."""
    out: dict[str, list] = {k: [] for k in METRICS}
    for s in scenes:
        centre = s.boxes[:, :3].mean(0)
        k = int((s.boxes[:, :3] - centre).norm(dim=1).argmin())
        for q in s.queries:
            if q.kind == "refer":
                iou = _iou(s.boxes[k].numpy(), q.target_box)
                out["acc@0.25"].append(float(iou >= 0.25))
                out["acc@0.5"].append(float(iou >= 0.5))
    return out


def majority_relation_baseline(train_scenes, scenes) -> dict:
    """Scene graph: the ground-truth objects given, every ordered pair with the training's most frequent
    relation."""
    counts = Counter(RELATIONS[r] for s in train_scenes for _, _, r in zip(*np.nonzero(s.relations)))
    predicate = counts.most_common(1)[0][0]
    out: dict[str, list] = {k: [] for k in METRICS}
    for s in scenes:
        n = len(s.object_boxes)
        pred = {(i, predicate, j) for i in range(n) for j in range(n) if i != j}
        p, r, f = triplet_scores(pred, triplets(s.relations))
        out["sg_precision"].append(p)
        out["sg_recall"].append(r)
        out["sg_f1"].append(f)
    return out


def main(argv=None) -> None:
    """python -m g2vlm.evaluate --model DIR [--seven-scenes ROOT [--stride 200]] [key=value ...]"""
    import argparse
    import json
    from pathlib import Path

    from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
    from g2vlm.config import load_config
    from g2vlm.data import ensure_data, load_scenes, load_seven_scenes
    from g2vlm.model import G2VLM

    ap = OneLineParser("g2vlm.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a G2VLM folder (e.g. results/g2vlm/g2vlm/stage2/final)")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="a YAML config (default: configs/tiny.yaml)")
    ap.add_argument(
        "--seven-scenes", default=None, help="a 7-Scenes root: reconstruction on its test sequences"
    )
    ap.add_argument(
        "--stride", type=int, default=None, help="keyframe stride on 7-Scenes (official 200 / 40)"
    )
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.max_scenes=4")
    args = ap.parse_args(argv)
    with one_line_errors("g2vlm.evaluate"):
        set_threads(args.threads)
        extra = [f"data.seven_scenes_root={args.seven_scenes}"] if args.seven_scenes else []
        extra += [f"data.seven_scenes_stride={args.stride}"] if args.stride else []
        cfg = load_config(args.config, list(args.overrides) + extra)
        model = G2VLM.from_pretrained(args.model)
        if args.seven_scenes:
            scenes = load_seven_scenes(cfg)
            metrics, _ = pool([evaluate_scene(model, s, cfg.eval, recon_only=True) for s in scenes])
        else:
            ensure_data(cfg.data)
            scenes = load_scenes(cfg, cfg.data.test_split)
            metrics, _ = pool([evaluate_scene(model, s, cfg.eval) for s in scenes])
    print(json.dumps({k: v for k, v in metrics.items() if v is not None}, indent=1))


if __name__ == "__main__":
    main()
