"""`make reproduce-g2vlm`: stage 1 once, then stage 2 of the full model, its two ablations and the
geometry-free VLM from it; every model and the trivial baselines evaluated on the held-out synthetic
scenes (reconstruction with sensor depth and RGB-only, grounding, retrieval, scene graph, spatial QA),
with 95% bootstrap intervals and paired bootstrap tests of the full model against each ablation and
baseline; writes results/g2vlm/ (results.json, results.md, metrics.png, scene.ply, scene_mesh.glb,
scene_graph.json).

    python -m g2vlm.reproduce                   # tiny.yaml; the budget is 45 minutes on 2 CPU cores
    python -m g2vlm.reproduce --jobs 1          # one stage-2 training at a time (default 2)
    python -m g2vlm.reproduce --reuse           # keep finished runs of an unchanged configuration
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from common.cli import (
    OneLineParser,
    add_threads_flag,
    check_out_dir,
    check_synthetic_root,
    one_line_errors,
    set_threads,
)
from common.datasets.io import read_json
from common.metrics import bootstrap_ci, paired_bootstrap_test
from common.results import git_commit, markdown_table, write_results
from g2vlm.config import Config, load_config, to_dict
from g2vlm.data import ensure_data, load_scenes
from g2vlm.evaluate import (
    METRICS,
    evaluate_scene,
    majority_relation_baseline,
    mean_depth_baseline,
    nearest_centre_baseline,
    pool,
)
from g2vlm.model import G2VLM, build_model

OUT = Path("results/g2vlm")
OURS = "g2vlm"
VARIANTS = {  # stage-2 runs from the shared stage-1 model: name -> overrides
    OURS: {},
    "no-geometry-grounding": {"model.geometry_bias": False},
    "no-language-alignment": {"train.align_weight": 0.0},
    "geometry-free-vlm": {"model.geometry_free": True},
}
ABLATIONS = ("no-geometry-grounding", "no-language-alignment")
PAPER = {  # the official model's numbers with their datasets (notes/anchors-3dide-g2vlm.md 2, issue #13)
    "rgb_acc": {"value": 0.046, "dataset": "7-Scenes (G2VLM-2B, official Acc, metres)"},
    "rgb_comp": {"value": 0.029, "dataset": "7-Scenes (G2VLM-2B, official Comp, metres)"},
}
PAPER_OTHER = {"ETH3D Acc / Comp": [0.414, 0.309]}


def variant_config(cfg: Config, name: str) -> Config:
    out = copy.deepcopy(cfg)
    for key, value in VARIANTS[name].items():
        section, field = key.split(".")
        setattr(getattr(out, section), field, value)
    out.train.out_dir = str(OUT / name)
    return out


def finished(cfg: Config, folder: Path) -> bool:
    out = Path(cfg.train.out_dir)
    if not ((folder / "g2vlm.json").is_file() and (out / "config.json").is_file()):
        return False
    saved, now = read_json(out / "config.json"), json.loads(json.dumps(to_dict(cfg)))
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)):
        raise ValueError(f"{out / 'config.json'}: expected the run's config (an object with a 'train' section)")
    for c in (saved, now):
        c.pop("eval", None)
        c.pop("threads", None)  # configs saved before --threads replaced the key
        c["train"].pop("checkpoint_every", None)
    return saved == now


def check_inputs(cfg: Config, reuse: bool) -> None:
    """Before any work: the output folder can be written, the data root is absent (generated) or
    holds readable splits, and with `reuse` the finished runs' config.json files are readable."""
    check_out_dir("output folder", OUT)
    check_synthetic_root("data.root", cfg.data.root, (cfg.data.train_split, cfg.data.test_split))
    if reuse:
        base = copy.deepcopy(cfg)
        base.train.out_dir = str(OUT / "stage1")
        finished(base, OUT / "stage1" / "stage1" / "final")
        for name in VARIANTS:
            v = variant_config(cfg, name)
            finished(v, Path(v.train.out_dir) / "stage2" / "final")


def evaluate_model(model, cfg: Config, test_scenes) -> dict:
    per_scene = [evaluate_scene(model, s, cfg.eval) for s in test_scenes]
    metrics, per = pool(per_scene)
    return {"metrics": metrics, "per": {k: v.tolist() for k, v in per.items()}}


def run_variant(name: str, cfg: Config, stage1: str, reuse: bool, threads: int) -> dict:
    from g2vlm.train import train

    set_threads(threads)
    t0 = time.time()
    final = Path(cfg.train.out_dir) / "stage2" / "final"
    if not (reuse and finished(cfg, final)):
        train(cfg, stages=(2,), init=stage1, progress=False)
    seconds = time.time() - t0
    result = evaluate_model(G2VLM.from_pretrained(final), cfg, load_scenes(cfg, cfg.data.test_split))
    result["train_seconds"] = round(seconds, 1)
    shown = {k: round(v, 3) for k, v in result["metrics"].items() if v is not None}
    print(
        f"{name}: trained in {seconds:.0f} s, total {time.time() - t0:.0f} s: {json.dumps(shown)}", flush=True
    )
    return {name: result}


def paired(runs: dict, a: str, b: str, n: int) -> dict:
    out = {}
    for m, va in runs[a]["per"].items():
        vb = runs[b]["per"].get(m, [])
        if len(va) and len(va) == len(vb):
            out[m] = paired_bootstrap_test(np.array(va), np.array(vb), n_resamples=n, seed=0)
    return out


def paired_table(results: dict) -> str:
    lines = ["| comparison | metric | difference | 95% CI | p |", "|---|---|---|---|---|"]
    for name, tests in results["paired_bootstrap"].items():
        for metric, t in tests.items():
            lines.append(
                f"| {name} | {metric} | {t['difference']:+.4f} | [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] "
                f"| {t['p_value']:.3g} |"
            )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {**results["methods"], **results["ablations"]}
    panels = [
        ("sensor_fscore", "F-score@5cm, sensor depth"),
        ("rgb_fscore", "F-score@5cm, RGB only"),
        ("acc@0.25", "referring Acc@0.25"),
        ("sg_f1", "scene-graph triplet F1"),
        ("qa_accuracy", "spatial QA"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2))
    for ax, (metric, title) in zip(axes, panels):
        shown = [n for n in rows if rows[n].get(metric) is not None]
        vals = [rows[n][metric] for n in shown]
        ci = [results["ci95"].get(n, {}).get(metric, [v, v]) for n, v in zip(shown, vals)]
        err = np.array([[v - lo for v, (lo, _) in zip(vals, ci)], [hi - v for v, (_, hi) in zip(vals, ci)]])
        ax.barh(range(len(shown)), vals, xerr=err, color=["C3" if n == OURS else "C0" for n in shown])
        ax.set_yticks(range(len(shown)), shown, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_outputs(model: G2VLM, cfg: Config, scene) -> None:
    """The first indoor test scene as a coloured point cloud, a TSDF mesh and its scene graph."""
    from g2vlm.evaluate import reconstruct, scene_graph
    from g2vlm.tsdf import colored_points, save_point_cloud, tsdf_mesh

    depth, _ = reconstruct(model, scene, "sensor")
    points, colors = colored_points(depth, scene.K, scene.w2c, scene.rgb)
    save_point_cloud(OUT / "scene.ply", points, colors)
    mesh = tsdf_mesh(depth, scene.K, scene.w2c, scene.rgb, cfg.eval.tsdf_voxel)
    if mesh is not None:
        mesh.export(str(OUT / "scene_mesh.glb"))
    with torch.no_grad():
        tokens = model.geometry.tokens(scene.rgb, scene.sensor, scene.K, scene.w2c, "sensor")
        feats, objectness = model.geometry.object_features(tokens, scene.boxes)
        graph = scene_graph(model, scene.boxes, scene.w2c[0], feats, objectness, cfg.eval.relation_threshold)
    (OUT / "scene_graph.json").write_text(json.dumps({"scene": scene.scene_id, **graph}, indent=1))


def main(argv=None) -> None:
    ap = OneLineParser(
        "g2vlm.reproduce", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="a YAML config (default: configs/tiny.yaml)")
    ap.add_argument(
        "--jobs", type=int, default=2,
        help="stage-2 trainings side by side (each gets --threads, or torch's default / jobs threads)"
    )
    ap.add_argument("--reuse", action="store_true", help="keep finished runs of an unchanged configuration")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, applied to every run")
    args = ap.parse_args(argv)
    t0 = time.time()
    with one_line_errors("g2vlm.reproduce"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        if args.jobs < 1:
            raise ValueError(f"--jobs: expected >= 1, got {args.jobs}")
        check_inputs(cfg, args.reuse)
        per_job = args.threads or max(1, torch.get_num_threads() // args.jobs)
        ensure_data(cfg.data)
        OUT.mkdir(parents=True, exist_ok=True)
        from g2vlm.train import train

        base = copy.deepcopy(cfg)
        base.train.out_dir = str(OUT / "stage1")
        stage1 = OUT / "stage1" / "stage1" / "final"
        if not (args.reuse and finished(base, stage1)):
            train(base, stages=(1,), progress=False)
        runs = {}
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool_:
            futures = [
                pool_.submit(run_variant, n, variant_config(cfg, n), str(stage1), args.reuse, per_job)
                for n in VARIANTS
            ]
            for f in futures:
                runs.update(f.result())
        test_scenes = load_scenes(cfg, cfg.data.test_split)
        train_scenes = load_scenes(cfg, cfg.data.train_split)
        runs["g2vlm-stage1-only"] = evaluate_model(G2VLM.from_pretrained(stage1), cfg, test_scenes)
        runs["g2vlm-untrained"] = evaluate_model(
            build_model(cfg.model, seed=cfg.train.seed), cfg, test_scenes
        )
        for name, values in (
            ("baseline-mean-depth", mean_depth_baseline(train_scenes, test_scenes, cfg.eval)),
            ("baseline-nearest-centre-box", nearest_centre_baseline(test_scenes)),
            ("baseline-majority-relation", majority_relation_baseline(train_scenes, test_scenes)),
        ):
            metrics, per = pool([values])
            runs[name] = {"metrics": metrics, "per": {k: v.tolist() for k, v in per.items()}}
        example_outputs(
            G2VLM.from_pretrained(OUT / OURS / "stage2" / "final"),
            cfg,
            next(s for s in test_scenes if s.domain == "indoor"),
        )
    n = cfg.eval.bootstrap
    results = {
        "paper": "g2vlm",
        "ours": OURS,
        "data": {
            "name": "synthetic",
            "split": cfg.data.test_split,
            "generator_version": "1",
            "scenes": len(test_scenes),
            "seed": 0,
            "views": cfg.data.views,
            "reconstruction_scenes": sum(s.domain == "indoor" for s in test_scenes),
        },
        "metrics": {m: {"higher_is_better": h} for m, h in METRICS.items()},
        "methods": {k: r["metrics"] for k, r in runs.items() if k not in ABLATIONS},
        "ablations": {k: runs[k]["metrics"] for k in ABLATIONS},
        "ci95": {
            name: {
                m: list(bootstrap_ci(np.array(v), n_resamples=n, seed=0))
                for m, v in r["per"].items()
                if len(v)
            }
            for name, r in runs.items()
        },
        "paired_bootstrap": {f"{OURS} vs {b}": paired(runs, OURS, b, 10 * n) for b in runs if b != OURS},
        "paper_reported": PAPER,
        "paper_other": PAPER_OTHER,
        "environment": {
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "seconds": round(time.time() - t0),
            "git": git_commit(),
            "jobs": args.jobs,
            "train_seconds": {k: r.get("train_seconds") for k, r in runs.items() if "train_seconds" in r},
        },
        "config": to_dict(cfg),
    }
    write_results(OUT / "results.json", results)
    plot(results, OUT / "metrics.png")
    table = markdown_table(results)
    (OUT / "results.md").write_text(
        f"# G2VLM on the synthetic benchmark\n\n{table}\n\n{paired_table(results)}\n"
    )
    print(table)
    print(f"results: {OUT / 'results.json'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
