"""`make reproduce-depthvlm`: train both stages on the synthetic benchmark, evaluate, compare.

    python -m depthvlm.reproduce [--config depthvlm/configs/tiny.yaml] [key=value ...]

Writes results/depthvlm/results.json (the DESIGN.md schema), results.md (the table) and
depth_maps.png (input, ground truth, DepthVLM, separate depth network). Beside DepthVLM: the
untrained model, a median-depth constant (with the median training answers for numeric questions),
a separate depth network of about the size of DepthVLM's encoder plus head trained on the same
data ("two models"), and the same VLM fine-tuned on the spatial questions without the depth head.
Ablation: DepthVLM after stage 1 only. Every number is measured by this run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, check_out_dir, one_line_errors, set_threads
from common.metrics import bootstrap_ci, depth_metrics
from common.results import git_commit, markdown_table, write_results
from depthvlm.baselines import (depthnet_from_vlm_config, median_depth, predict_depthnet, prior_answers,
                                train_depthnet)
from depthvlm.config import load_config
from depthvlm.data import build_items, check_source, ensure_synthetic
from depthvlm.evaluate import depth_scores, evaluate_model, paired_qa_tests, qa_scores, run_depthvlm
from depthvlm.model import build_model, load_pretrained
from depthvlm.train import train, train_stage

METRICS = {
    **{f"{d}_{m}": {"higher_is_better": m == "delta1"} for d in ("indoor", "outdoor") for m in ("delta1", "abs_rel", "rmse")},
    "qa_accuracy": {"higher_is_better": True},
    "qa_closer": {"higher_is_better": True},
    "qa_how_far": {"higher_is_better": True},
    "qa_apart": {"higher_is_better": True},
}
# DepthVLM-4B, delta1 from the official README tables (notes/anchors-vlm.md 1.2), sparse protocol.
PAPER = {"indoor_delta1": {"value": 0.908, "dataset": "NYUv2 (DepthVLM-4B)"},
         "outdoor_delta1": {"value": 0.821, "dataset": "nuScenes (DepthVLM-4B)"}}


def save_pictures(path: Path, items, columns: dict, n: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [i for d in ("indoor", "outdoor") for i in [j for j, it in enumerate(items) if it.domain == d][:n // 2]]
    fig, axes = plt.subplots(len(picks), 2 + len(columns), figsize=(2.2 * (2 + len(columns)), 2.2 * len(picks)))
    for r, i in enumerate(picks):
        gt = items[i].depth.numpy()
        vmax = np.percentile(gt[gt > 0], 98)
        row = [("image", items[i].image.permute(1, 2, 0).numpy(), None), ("ground truth", gt, vmax)]
        row += [(name, preds[i], vmax) for name, preds in columns.items()]
        for c, (title, img, vm) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, cmap=None if vm is None else "turbo", vmin=0, vmax=vm)
            ax.set_title(f"{title}" + (f" ({items[i].domain})" if c == 0 else ""), fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = OneLineParser("depthvlm.reproduce", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config to train (default: configs/tiny.yaml)")
    ap.add_argument("--results", default="results/depthvlm", help="folder of results.json, results.md and pictures")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (train.stage1.steps=10)")
    args = ap.parse_args(argv)
    with one_line_errors("depthvlm.reproduce"):  # bad settings, paths and data: one line, before any work
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        check_out_dir("--results", args.results)
        check_out_dir("out_dir", cfg.out_dir)
        check_source(cfg.data)
    t0 = time.time()
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ensure_synthetic(cfg.data, seed=cfg.seed)

    model, processor = build_model(cfg.model, seed=cfg.seed)
    train_items = build_items(cfg.data, cfg.data.train_split, processor.factor, cfg.data.max_train_views, cfg.seed)
    test_items = build_items(cfg.data, cfg.data.test_split, processor.factor, cfg.data.max_test_views, cfg.seed)
    ev = dict(max_new_tokens=cfg.max_new_tokens, max_depth=cfg.data.max_depth)
    methods, ablations, timing = {}, {}, {}

    # The untrained model (random weights, same seed as the trained one).
    methods["depthvlm-untrained"] = evaluate_model(model.to(device), processor, test_items, **ev)

    # Median depth: one constant map; numeric questions get the median training answer, "closer"
    # the first option (A).
    med = median_depth(train_items)
    prior = prior_answers(train_items)
    const = [np.full(tuple(it.depth.shape), med) for it in test_items]
    records = [(q, "A" if q["type"] == "closer" else f"{prior[q['type']]:.1f}")
               for it in test_items for q in it.questions]
    methods["baseline-median-depth"] = {**depth_scores(const, test_items, cfg.data.max_depth), **qa_scores(records)}

    # DepthVLM: stage 1 (head) then stage 2 (LLM + head, loss = text + w * depth).
    s = time.time()
    final = train(cfg)
    timing["depthvlm_train_s"] = time.time() - s
    model, processor = load_pretrained(final)
    model.to(device)
    ours_depth, ours_qa = run_depthvlm(model, processor, test_items, max_new_tokens=cfg.max_new_tokens)
    methods["depthvlm"] = {**depth_scores(ours_depth, test_items, cfg.data.max_depth), **qa_scores(ours_qa)}

    stage1, _ = load_pretrained(Path(cfg.out_dir) / "stage1" / "final")
    ablations["depthvlm-stage1-only"] = evaluate_model(stage1.to(device), processor, test_items, text=False, **ev)

    # Two models: a separate depth network (vision encoder + DPT head, all trained) on the same data.
    torch.manual_seed(cfg.seed)
    net = depthnet_from_vlm_config(model.config).to(device)
    # as many depth-supervised images as DepthVLM's head sees in both stages, in stage 1's batches
    s1, s2 = cfg.train.stage1, cfg.train.stage2
    steps = s1.steps + round(s2.steps * (s2.depth_images or s2.batch_size) / s1.batch_size)
    s = time.time()
    train_depthnet(net, processor, train_items, steps, cfg.train.stage1.lr, cfg.train.stage1.batch_size, cfg.seed,
                   lam=cfg.train.silog_lambda)
    timing["depthnet_train_s"] = time.time() - s
    net.save_pretrained(Path(cfg.out_dir) / "depthnet")
    net_depth = predict_depthnet(net, processor, test_items)
    methods["separate-depth-network"] = depth_scores(net_depth, test_items, cfg.data.max_depth)

    # The same VLM fine-tuned on the spatial questions without the depth head (stage 2, text only).
    text_model, _ = build_model(cfg.model, seed=cfg.seed)
    s = time.time()
    train_stage(text_model, processor, train_items, cfg.train.stage2, "text", Path(cfg.out_dir), cfg.seed,
                checkpoint_every=10**9, desc="text-only VLM", both_orders=cfg.data.train_both_orders)
    timing["text_only_train_s"] = time.time() - s
    _, text_qa = run_depthvlm(text_model.to(device), processor, test_items, max_new_tokens=cfg.max_new_tokens,
                              depth=False)
    methods["vlm-spatial-qa-no-depth-head"] = qa_scores(text_qa)

    # Does depth supervision help spatial reasoning? Paired bootstrap over the test questions
    # (both models answer the same questions, in the same order), overall and per question type.
    paired = paired_qa_tests(ours_qa, text_qa, seed=cfg.seed)

    # 95% bootstrap intervals of DepthVLM's per-image delta1 per domain.
    ci = {}
    for dom in ("indoor", "outdoor"):
        vals = [depth_metrics(p, it.depth.numpy(), max_depth=cfg.data.max_depth)["delta1"]
                for p, it in zip(ours_depth, test_items) if it.domain == dom and (it.depth > 1e-3).any()]
        if len(vals) > 1:
            lo, hi = bootstrap_ci(np.array(vals), seed=cfg.seed)
            ci[f"{dom}_delta1"] = [float(lo), float(hi)]

    results = {
        "paper": "depthvlm", "ours": "depthvlm",
        "data": {"name": cfg.data.source, "split": cfg.data.test_split, "generator_version": "1",
                 "scenes": len({it.scene_id for it in test_items}), "seed": cfg.seed,
                 "images": len(test_items), "questions": sum(len(it.questions) for it in test_items),
                 "train_images": len(train_items), "canonical_focal": cfg.data.focal},
        "metrics": METRICS,
        "methods": {k: {m: v for m, v in d.items() if m in METRICS} for k, d in methods.items()},
        "ablations": {k: {m: v for m, v in d.items() if m in METRICS} for k, d in ablations.items()},
        "ci95": {"depthvlm": ci},
        "paired_bootstrap": {"depthvlm - vlm-spatial-qa-no-depth-head": paired},
        "paper_reported": PAPER,
        "environment": {"device": device, "seconds": time.time() - t0, "git": git_commit(), **timing},
    }
    write_results(out / "results.json", results)
    table = markdown_table(results)
    save_pictures(out / "depth_maps.png", test_items, {"DepthVLM": ours_depth, "separate depth net": net_depth})
    test = "\n".join(f"| depthvlm - vlm-spatial-qa-no-depth-head | {m} | {t['difference']:+.4f} | "
                     f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | {t['p_value']:.3g} |" for m, t in paired.items())
    table += ("\n\nPaired bootstrap over the test questions (10,000 resamples):\n\n"
              "| comparison | metric | difference | 95% CI | p |\n|---|---|---|---|---|\n" + test)
    (out / "results.md").write_text(f"# DepthVLM on the synthetic benchmark\n\n{table}\n")
    print(table)
    print(f"wrote {out}/results.json, results.md, depth_maps.png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
