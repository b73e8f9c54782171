"""The held-out two-view metrics per camera path, and on rendered second views.

    python -m vlm3.diagnostics.two_view --checkpoint results/vlm3/vlm3/checkpoint --by-path
    python -m vlm3.diagnostics.two_view --baseline --by-path          # identity, split the same way
    python -m vlm3.diagnostics.two_view --checkpoint CKPT --turned     # the test pairs turned in place
    python -m vlm3.diagnostics.two_view --checkpoint CKPT --shifted 20 # each test view against a moved copy
    python -m vlm3.diagnostics.two_view --checkpoint CKPT --paired     # paired bootstrap against identity

`--by-path` splits the correspondence and pose metrics of the held-out questions (those of the tasks
in `data.mixture`, as `vlm3.evaluate` asks them) by the test scene's camera path: orbits (the camera
circles the scene's centre, turning to keep it in view) and forward paths (walking or driving, a
small sway) ask different things of a model. `--turned` and `--shifted` ask other questions
(`vlm3.diagnostics.rendered`): the same test pairs with the second camera turned in place
(correspondence and rotation only: no parallax), or each test view against itself with the crop
window moved by up to M px (correspondence only). `--paired` tests the rotation error (per pair) and
the correspondence EPE (per question) against identity's on the same questions, also averaged per
test scene first (`vlm3.reproduce.paired_per_item_and_scene`), as the long profile's report does;
with a larger test split (DIAGNOSTICS.md) it is the long profile's checkpoints on more held-out
scenes. Scoring is `vlm3.evaluate`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.metrics import bootstrap_ci
from vlm3 import prompts as P
from vlm3.diagnostics import rendered
from vlm3.evaluate import (
    answer_and_score,
    baseline_answers,
    score,
    train_statistics,
    write_scores,
)
from vlm3.reproduce import LONG_HEADLINE, paired_per_item_and_scene, trained_questions
from vlm3.scenes import SceneCache
from vlm3.train import ensure_data, scene_cache


def path_kind(cache: SceneCache, s: int) -> str:
    """The camera path of test scene s ("orbit" or "forward", `common.synthetic.paths`)."""
    return cache.samples[s].annotations["camera_path"]["kind"]


def by_path(questions: dict, answers: dict, cache: SceneCache) -> dict:
    """The two-view metrics per camera path {kind: metrics}. Besides `score`'s metrics, per path: the
    pairs, and for the yaw answers of pairs that turn by at least 1 deg the share with the true sign
    (also averaged per scene first, [mean, 95% low, high]), the share of those pairs turning right,
    the answers' Pearson r with the truth (None for a constant answer) and their range; identity's
    yaw 0 has no sign."""
    scene = {"correspondence": lambda e: e.target["where"][0], "pose": lambda e: e.target["pair"][0]}
    kind_of = {t: [path_kind(cache, scene[t](e)) for e in questions.get(t, [])] for t in scene}
    out = {}
    for kind in sorted({k for ks in kind_of.values() for k in ks}):
        q, a = {}, {}
        for task, kinds in kind_of.items():
            keep = [k for k, kk in enumerate(kinds) if kk == kind]
            if keep:
                q[task] = [questions[task][k] for k in keep]
                a[task] = [answers[task][k] for k in keep]
        m = score(q, a)
        m["correspondences"] = len(q.get("correspondence", []))
        ypr = [
            (e.target["ypr"][0], P.parse_ypr(t), e.target["pair"][0])
            for e, t in zip(q.get("pose", []), a.get("pose", []))
            if e.kind == "ypr"
        ]
        m["pose_pairs"] = len(ypr)
        turned = [(gt, p[0] if p is not None else 0.0, s) for gt, p, s in ypr if abs(gt) >= 1.0]
        if turned:
            gt, pred, scene = np.array(turned).T  # [3, N]
            right = np.sign(pred) == np.sign(gt)  # [N]
            m["pose_yaw_sign_acc"] = float(np.mean(right))
            # averaged per test scene first (an orbit's pairs share its turn), with a 95% interval over scenes
            per_scene = np.array([right[scene == u].mean() for u in np.unique(scene)])  # [S]
            m["pose_yaw_sign_acc_per_scene"] = [float(per_scene.mean()), *map(float, bootstrap_ci(per_scene))]
            m["pose_yaw_right_share"] = float(np.mean(gt > 0))  # one answer for all gets max(share, 1 - share)
            m["pose_yaw_pearson"] = float(np.corrcoef(gt, pred)[0, 1]) if np.std(pred) > 0 else None
            m["pose_yaw_answers"] = [float(pred.min()), float(pred.max())]  # the range of the answers
        out[kind] = m
    return out


def paired_vs_identity(questions: dict, answers: dict, stats: dict, seed: int = 0) -> dict:
    """{metric: paired_bootstrap_test of the answers minus identity's (lower is better), plus
    "per_scene": the same on per-scene means} for the rotation error (one value per pair) and the
    correspondence EPE (per question); `stats` are the training statistics identity's answers use."""
    ours, identity = {}, {}
    score(questions, answers, per_item=ours)
    score(questions, baseline_answers(questions, stats), per_item=identity)
    out = {}
    for task, key in LONG_HEADLINE.items():
        if task in questions and key in ours:
            out[key] = paired_per_item_and_scene(task, questions, ours[key], identity[key], seed=seed)
    return out


def main(argv=None) -> None:
    from vlm3.config import load_config
    from vlm3.model import VLM3

    ap = OneLineParser("vlm3.diagnostics.two_view", description=__doc__)
    ap.add_argument("--checkpoint", help="a trained model's checkpoint folder (or use --baseline)")
    ap.add_argument("--baseline", action="store_true", help="score the trivial baselines instead of a model")
    ap.add_argument("--turned", action="store_true",
                    help="correspondence and rotation on test pairs turned in place (no parallax)")
    ap.add_argument("--shifted", type=int, default=0, metavar="M",
                    help="correspondence of each test view with itself, crop moved by up to M px")
    ap.add_argument("--by-path", action="store_true",
                    help="the two-view metrics per camera path (orbit, forward) and the yaw sign")
    ap.add_argument("--paired", action="store_true",
                    help="paired bootstrap of rotation error and correspondence EPE against identity")
    ap.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "tiny.yaml"),
                    help="YAML config of the data and evaluation settings (default: vlm3/configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="write metrics and parse failures here (JSON)")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (eval.batch_size=8)")
    args = ap.parse_args(argv)
    with one_line_errors("vlm3.diagnostics.two_view"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        if (args.checkpoint is None) == (not args.baseline):
            ap.error("give exactly one of --checkpoint and --baseline")
        if args.turned and args.shifted:
            ap.error("--turned and --shifted are separate diagnostics; give one")
        if args.shifted < 0:
            raise ValueError(f"--shifted: expected an int >= 0 (pixels), got {args.shifted}")
        if not (args.turned or args.shifted or args.by_path or args.paired):
            ap.error("give --by-path, --paired, --turned or --shifted M (vlm3.evaluate scores the plain questions)")
        if args.paired and args.baseline:
            ap.error("--paired compares a checkpoint with identity; give --checkpoint, not --baseline")
        vlm = None if args.baseline else VLM3.from_pretrained(args.checkpoint)  # a bad folder first
        ensure_data(cfg)  # a larger test split for --paired is generated here (DIAGNOSTICS.md)
        cache = scene_cache(cfg, "test")
        if args.turned or args.shifted:
            questions = rendered.held_out_questions(cfg, cache, turned=args.turned, shifted=args.shifted)
        else:
            questions = trained_questions(cfg, cache)  # the tasks of data.mixture
        answers, metrics, failures = answer_and_score(vlm, questions, cfg)
        if args.by_path:
            metrics["by_path"] = by_path(questions, answers, cache)
        if args.paired:
            metrics["paired_vs_identity"] = paired_vs_identity(questions, answers, train_statistics(cfg))
        if args.turned or args.shifted:  # no translation: only the rotation metrics mean something
            for m in [metrics, *metrics.get("by_path", {}).values()]:
                for k in ("pose_trans_err_deg", "pose_auc30", "pose_distance_abs_rel"):
                    m.pop(k, None)
        print(json.dumps(metrics, indent=1))
        if args.out:
            write_scores(args.out, metrics, failures)


if __name__ == "__main__":
    main()
