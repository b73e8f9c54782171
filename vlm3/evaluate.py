"""Evaluate VLM3 (or a trivial baseline) on held-out scenes with `common.metrics` only.

    python -m vlm3.evaluate --checkpoint results/vlm3/run/checkpoint --config vlm3/configs/tiny.yaml

The test questions are a pure function of (test split, eval.seed, data settings): every model and
baseline answers the same ones. Answers are parsed with `vlm3.prompts`; an unparseable answer is
logged and scored as wrong: depth 0 m (delta1 0, AbsRel ~1), correspondence the image corner farthest
from the truth, pose 180 deg rotation and 90 deg translation-direction error, objects incorrect.

Metrics: depth delta1 / AbsRel (per point, as DepthLM); correspondence end-point error mean and
median in normalised [0, 1000) pixels; pose rotation and translation-direction errors (degrees) and
AUC@30 (%) from the yaw/pitch/roll and direction answers of each pair, plus the rotation-angle error
and the distance AbsRel; object accuracy (yes/no exact, metric answers within +-25%, SpatialRGPT).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.metrics import (
    accuracy,
    depth_metrics,
    epe_stats,
    pose_auc,
    rotation_error_deg,
    translation_direction_error_deg,
)
from vlm3 import prompts as P
from vlm3.config import Config, load_config
from vlm3.data import QuestionBuilder, TaskDataset, ypr_to_matrix
from vlm3.scenes import SceneCache

METRICS = {
    "depth_delta1": True,
    "depth_abs_rel": False,
    "corr_epe_mean": False,
    "corr_epe_median": False,
    "pose_rot_err_deg": False,
    "pose_trans_err_deg": False,
    "pose_auc30": True,
    "pose_angle_err_deg": False,
    "pose_distance_abs_rel": False,
    "object_accuracy": True,
    "parse_failure_rate": False,
}


def held_out_questions(cfg: Config, cache: SceneCache | None = None) -> dict:
    """{task: [Example]} on the test split: single-point depth, correspondences, four pose
    questions per pair, object questions."""
    from vlm3.train import scene_cache, task_settings  # local: train imports this module's users

    e = cfg.eval
    cache = cache or scene_cache(cfg, "test")
    builder = QuestionBuilder(cache, task_settings(cfg, training=False))
    pose = []
    rng = np.random.default_rng([e.seed, 99])
    for _ in range(e.pose_pairs):
        s = int(rng.integers(len(cache)))
        i, j = builder.draw_pair(rng, cache.samples[s])
        pose += [builder.pose(rng, kind=k, pair=(s, i, j)) for k in P.POSE_QUESTIONS]
    return {
        "depth": [TaskDataset(builder, "depth", e.depth, e.seed, n_points=1)[i] for i in range(e.depth)],
        "correspondence": [
            TaskDataset(builder, "correspondence", e.correspondence, e.seed, n_points=1)[i]
            for i in range(e.correspondence)
        ],
        "object": [TaskDataset(builder, "object", e.object, e.seed)[i] for i in range(e.object)],
        "pose": pose,
    }


def answer_all(vlm, questions: dict, batch_size: int, max_new_tokens: int, progress: bool = False) -> dict:
    """The model's raw text answers {task: [str]}, greedy, in batches."""
    from tqdm import tqdm

    answers = {}
    for task, exs in questions.items():
        texts = []
        for k in tqdm(range(0, len(exs), batch_size), desc=f"answer {task}", disable=not progress):
            chunk = exs[k : k + batch_size]
            texts += vlm.generate([e.images for e in chunk], [e.prompt for e in chunk], max_new_tokens)
        answers[task] = texts
    return answers


def score(questions: dict, answers: dict, failures: list | None = None, per_item: dict | None = None) -> dict:
    """Metrics from raw text answers; `failures` collects the unparseable ones (`ParseFailure`);
    `per_item` (if given) receives per-question values for bootstrap intervals."""
    failures = [] if failures is None else failures
    per_item = {} if per_item is None else per_item
    n_total = n_fail_start = len(failures)
    out = {}
    if "depth" in questions:
        exs, texts = questions["depth"], answers["depth"]
        gt = np.array([e.target["depth"][0] for e in exs])
        pred = np.zeros_like(gt)
        for k, t in enumerate(texts):
            v = P.parse_depth(t)
            if v is None:
                P.log_failure(failures, "depth", "depth", t, k)
            pred[k] = v if v is not None else 0.0
        m = depth_metrics(pred[None], gt[None])  # [1, N] points as one "image": per-point averaging
        ratio = np.maximum(np.maximum(pred, 1e-3) / gt, gt / np.maximum(pred, 1e-3))
        per_item["depth_delta1"] = (ratio < 1.25).astype(float)
        out["depth_delta1"], out["depth_abs_rel"] = m["delta1"], m["abs_rel"]
        n_total += len(exs)
    if "correspondence" in questions:
        exs, texts = questions["correspondence"], answers["correspondence"]
        gt = np.array([e.target["match"] for e in exs], dtype=np.float64)  # [N, 2] in [0, 1000)
        pred = np.zeros_like(gt)
        for k, t in enumerate(texts):
            xy = P.parse_xy(t)
            if xy is None:
                P.log_failure(failures, "correspondence", "correspondence", t, k)
                corners = np.array([[0, 0], [999, 0], [0, 999], [999, 999]], dtype=np.float64)
                xy = corners[np.argmax(np.linalg.norm(corners - gt[k], axis=-1))]
            pred[k] = xy
        m = epe_stats(pred, gt)
        per_item["corr_epe_mean"] = np.linalg.norm(pred - gt, axis=-1)
        out["corr_epe_mean"], out["corr_epe_median"] = m["mean"], m["median"]
        n_total += len(exs)
    if "pose" in questions:
        out.update(_score_pose(questions["pose"], answers["pose"], failures, per_item))
        n_total += len(questions["pose"])
    if "object" in questions:
        exs, texts = questions["object"], answers["object"]
        flags = []
        for k, (e, t) in enumerate(zip(exs, texts)):
            if e.kind in P.OBJECT_METRIC:
                v = P.parse_depth(t)  # a positive length in metres
                ok = v is not None and 0.75 * e.target["value"] <= v <= 1.25 * e.target["value"]
            else:
                v = P.parse_yes_no(t)
                ok = v is not None and v == e.target["value"]
            if v is None:
                P.log_failure(failures, "object", e.kind, t, k)
            flags.append(ok)
        out["object_accuracy"] = accuracy(flags)
        per_item["object_accuracy"] = np.array(flags, dtype=float)
        n_total += len(exs)
    out["parse_failure_rate"] = (len(failures) - n_fail_start) / max(1, n_total - n_fail_start)
    return out


def item_scenes(task: str, questions: dict) -> np.ndarray:
    """The test scene of each of `score`'s per-item values of `task`: one per question, or for pose one
    per distinct pair in the order first asked (how `_score_pose` keys them)."""
    if task == "pose":
        return np.array([k[0] for k in dict.fromkeys(tuple(e.target["pair"]) for e in questions["pose"])])
    return np.array([e.target["where"][0] for e in questions[task]])


def _score_pose(exs, texts, failures, per_item: dict) -> dict:
    pairs: dict = {}  # distinct pairs in the order first asked (item_scenes relies on it)
    angle_err, dist_rel = [], []
    for k, (e, t) in enumerate(zip(exs, texts)):
        key = tuple(e.target["pair"])
        pairs.setdefault(key, {"R": np.array(e.target["R"]), "t": np.array(e.target["t_unit"])})
        parsed = {
            "angle": P.parse_rotation_angle,
            "ypr": P.parse_ypr,
            "direction": P.parse_direction,
            "distance": P.parse_distance,
        }[e.kind](t)
        if parsed is None:
            P.log_failure(failures, "pose", e.kind, t, k)
        if e.kind == "angle":
            angle_err.append(180.0 if parsed is None else abs(parsed - e.target["angle"]))
        elif e.kind == "distance":
            dist_rel.append(
                1.0 if parsed is None else abs(parsed - e.target["distance"]) / e.target["distance"]
            )
        else:
            pairs[key][e.kind] = parsed
    t_gt = np.stack([p["t"] for p in pairs.values()])  # [P, 3]
    rot_err = np.array(
        [
            180.0 if p.get("ypr") is None else float(rotation_error_deg(ypr_to_matrix(p["ypr"]), p["R"]))
            for p in pairs.values()
        ]
    )
    t_pred = np.stack(
        [np.zeros(3) if p.get("direction") is None else np.array(p["direction"]) for p in pairs.values()]
    )
    trans_err = translation_direction_error_deg(t_pred, t_gt)  # zero vector (failure) -> 90 deg
    per_item["pose_rot_err_deg"] = rot_err  # [P] one per pair
    return {
        "pose_rot_err_deg": float(rot_err.mean()),
        "pose_trans_err_deg": float(trans_err.mean()),
        "pose_auc30": 100.0 * pose_auc(rot_err, trans_err, 30),
        "pose_angle_err_deg": float(np.mean(angle_err)) if angle_err else None,
        "pose_distance_abs_rel": float(np.mean(dist_rel)) if dist_rel else None,
    }


# ----------------------------------------------------------------------------------------------
# Trivial baselines: text answers built from training statistics, scored by the same code
# ----------------------------------------------------------------------------------------------


def train_statistics(cfg: Config, n: int = 2000) -> dict:
    """Answer statistics of the training split (real pairs only, no copy lessons): median depth and
    distance, majority yes/no and median metric answer per object kind, and the two-view priors of
    `baseline_answers(prior=True)`: median match offset, median rotation angle and yaw/pitch/roll,
    medoid translation direction, the distance with the least AbsRel."""
    from vlm3.train import scene_cache, task_settings

    cache = scene_cache(cfg)
    builder = QuestionBuilder(cache, task_settings(cfg, training=False))

    def targets(task: str, m: int, **kw) -> list[dict]:
        ds = TaskDataset(builder, task, n, 5, **kw)
        return [ds[i].target for i in range(m)]

    depth = [t["depth"][0] for t in targets("depth", n, n_points=1)]
    pose = targets("pose", n // 4, kind="distance")  # every pose target holds the whole relative pose
    dist = np.array([t["distance"] for t in pose])
    stats = {"depth_median": float(np.median(depth)), "distance_median": float(np.median(dist)), "object": {}}
    d = np.sort(dist)  # the constant c minimising mean |c - d| / d: the median of d weighted by 1 / d
    stats["distance_abs_rel_best"] = float(d[np.searchsorted(np.cumsum(1 / d), 0.5 * np.sum(1 / d))])
    corr = targets("correspondence", n // 4, n_points=1)
    offset = np.median([np.subtract(c["match"], c["query"]) for c in corr], axis=0)  # [2] in [0, 1000) px
    t = np.array([p["t_unit"] for p in pose])  # [N, 3]
    # The training direction with the least mean (sign-invariant) error to all the others: the best
    # constant answer under the metric, which the mean direction is not when motions are bimodal.
    pairs = (len(t), len(t), 3)
    err = translation_direction_error_deg(np.broadcast_to(t[:, None], pairs), np.broadcast_to(t[None], pairs))
    stats.update(
        {
            "corr_offset_median": offset.tolist(),
            "angle_median": float(np.median([p["angle"] for p in pose])),
            "ypr_median": np.median([p["ypr"] for p in pose], axis=0).tolist(),
            "direction_medoid": t[int(np.argmin(err.mean(1)))].tolist(),
        }
    )  # err: [N, N]
    for kind in P.OBJECT_QUESTIONS:
        vals = [t["value"] for t in targets("object", n // 4, kind=kind)]
        stats["object"][kind] = (
            float(np.median(vals)) if kind in P.OBJECT_METRIC else bool(np.mean(vals) >= 0.5)
        )
    return stats


def baseline_answers(questions: dict, stats: dict, prior: bool = False) -> dict:
    """Median depth, identity correspondence, identity pose (no rotation, no translation), majority
    object answer, written in the answer templates so that they go through the same parser.

    `prior`: the two-view answers a model gives that has learned the training answers but not to
    compare the images: the query plus the median training offset, the median training rotation
    angle and yaw/pitch/roll, the training translation direction closest to all others (medoid), the
    constant distance with the least training AbsRel: each the best constant for its metric. A model
    that beats identity but not this prior has learned the answer statistics, not the pair."""

    def pose(e):
        if prior:
            return P.pose_answer(
                e.kind,
                angle=stats["angle_median"],
                ypr=stats["ypr_median"],
                t_unit=stats["direction_medoid"],
                distance=stats["distance_abs_rel_best"],
            )
        if e.kind == "direction":
            return "The camera does not move, unit vector (0.00, 0.00, 0.00)."  # identity: no direction
        return P.pose_answer(e.kind, angle=0.0, ypr=(0.0, 0.0, 0.0), distance=stats["distance_median"])

    def corr(e):
        xy = np.asarray(e.target["query"], dtype=float)
        if prior:  # inside the [0, 1000) frame, as any answer is
            xy = np.clip(xy + np.asarray(stats["corr_offset_median"]), 0.0, P.BOX_SCALE - 1.0)
        return P.correspondence_answer(xy.tolist())

    answer = {
        "depth": lambda e: P.depth_answer([stats["depth_median"]], think=False),
        "correspondence": corr,
        "pose": pose,
        "object": lambda e: P.object_answer(e.kind, stats["object"][e.kind]),
    }
    return {task: [answer[task](e) for e in exs] for task, exs in questions.items()}


def answer_and_score(vlm, questions: dict, cfg: Config) -> tuple[dict, dict, list]:
    """(answers, metrics, parse failures) of `vlm` on `questions`, or of the trivial baselines
    (`baseline_answers` on the training split's statistics) when vlm is None."""
    if vlm is None:
        answers = baseline_answers(questions, train_statistics(cfg))
    else:
        answers = answer_all(vlm, questions, cfg.eval.batch_size, cfg.eval.max_new_tokens, progress=True)
    failures: list = []
    return answers, score(questions, answers, failures), failures


def write_scores(path, metrics: dict, failures: list) -> None:
    """The metrics and the unparsed answers as JSON at path."""
    Path(path).write_text(json.dumps({"metrics": metrics, "parse_failures": [asdict(f) for f in failures]}, indent=1))


def main(argv=None) -> None:
    from vlm3.model import VLM3

    ap = OneLineParser("vlm3.evaluate", description=__doc__)
    ap.add_argument("--checkpoint", help="a trained model's checkpoint folder (or use --baseline)")
    ap.add_argument("--baseline", action="store_true", help="score the trivial baselines instead of a model")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config of the data and evaluation settings (default: configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="write metrics and parse failures here (JSON)")
    ap.add_argument("--seed", type=int, default=None, help="overrides eval.seed")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (eval.batch_size=8)")
    args = ap.parse_args(argv)
    with one_line_errors("vlm3.evaluate"):
        set_threads(args.threads)
        cfg = load_config(
            args.config, list(args.overrides) + ([f"eval.seed={args.seed}"] if args.seed is not None else [])
        )
        if (args.checkpoint is None) == (not args.baseline):
            ap.error("give exactly one of --checkpoint and --baseline")
        # A bad checkpoint folder is named before the questions are built.
        vlm = None if args.baseline else VLM3.from_pretrained(args.checkpoint)
        from vlm3.train import scene_cache

        cache = scene_cache(cfg, "test")
        questions = held_out_questions(cfg, cache)
        _, metrics, failures = answer_and_score(vlm, questions, cfg)
        print(json.dumps(metrics, indent=1))
        if args.out:
            write_scores(args.out, metrics, failures)


if __name__ == "__main__":
    main()
