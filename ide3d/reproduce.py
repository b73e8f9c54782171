"""`make reproduce-ide3d`: the frozen teacher and the strong verifier, the paper's ablation rows and
the 3D-input variant, each trained the same way, evaluated on the held-out synthetic scenes beside
the untrained model and trivial baselines, with bootstrap intervals, paired tests and the
emergence probe; writes results/ide3d/ (results.json, results.md, plots, a grounding picture).

    python -m ide3d.reproduce                    # tiny.yaml; the budget is 45 minutes on 2 CPU cores
    python -m ide3d.reproduce --jobs 1           # one training at a time (default 2, side by side)
    python -m ide3d.reproduce train.steps=300    # a shortened run (say so when quoting it)
    python -m ide3d.reproduce --reuse            # re-evaluate finished runs of an unchanged config

Variants (only the named settings change; `VARIANTS`):
- no-aux-loss: L_task alone = Video-3D LLM* with RGB inputs (the paper's baseline row);
- +global; +global+geometry-weak (the verifier from scratch); +global+geometry-strong (the verifier
  starts from a depth decoder trained to convergence on the train split);
- ide3d: + cross-view, the full method;
- video3dllm-3d-inputs: no auxiliary loss, the 3D position encoding of each visual token added to it
  (trained with depth and poses as inputs), evaluated with and without them ("crutches").
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from common.cli import (OneLineParser, add_threads_flag, check_out_dir, check_synthetic_root, one_line_errors,
                        set_threads)
from common.datasets.io import read_json
from common.metrics import bootstrap_ci, paired_bootstrap_test
from common.results import git_commit, markdown_table, write_results
from ide3d.config import Config, load_config, to_dict
from ide3d.data import ensure_data, load_scenes
from ide3d.evaluate import METRICS, largest_box, majority_answer, predict, random_candidate, score
from ide3d.model import build_model, load_pretrained
from ide3d.probe import depth_probe

OUT = Path("results/ide3d")
OURS = "ide3d"
BASELINE = "no-aux-loss"
ALL_METRICS = {**METRICS, "probe_delta1": True, "probe_abs_rel": False}

VARIANTS = {  # name: overrides of the run config
    BASELINE: {
        "supervision.geometry_weight": 0.0,
        "supervision.cross_view_weight": 0.0,
        "supervision.global_weight": 0.0,
    },
    "+global": {"supervision.geometry_weight": 0.0, "supervision.cross_view_weight": 0.0},
    "+global+geometry-weak": {"supervision.cross_view_weight": 0.0},
    "+global+geometry-strong": {
        "supervision.cross_view_weight": 0.0,
        "supervision.verifier_init": "<strong>",
    },
    OURS: {},
    "video3dllm-3d-inputs": {
        "model.token_pe": True,
        "supervision.geometry_weight": 0.0,
        "supervision.cross_view_weight": 0.0,
        "supervision.global_weight": 0.0,
    },
}

# The paper's numbers (notes/anchors-vlm.md 1.4), as fractions, with the data they were measured on.
PAPER = {
    "acc@0.25": {"value": 0.609, "dataset": "ScanRefer val, Mask3D proposals (3D-IDE, RGB only)"},
    "acc@0.5": {"value": 0.545, "dataset": "ScanRefer val (3D-IDE)"},
    "f1@0.25": {"value": 0.598, "dataset": "Multi3DRefer val (3D-IDE)"},
    "f1@0.5": {"value": 0.549, "dataset": "Multi3DRefer val (3D-IDE)"},
    "qa_em": {"value": 0.298, "dataset": "ScanQA val EM (3D-IDE)"},
}
PAPER_ABLATION = {  # ScanRefer Acc@0.25 / Multi3DRefer F1@0.25, ScanRefer val / Multi3DRefer val
    BASELINE: [0.537, 0.460],
    "+global": [0.569, 0.556],
    "+global+geometry-weak": [0.598, 0.587],
    OURS: [0.609, 0.598],
    "video3dllm-3d-inputs": [0.581, 0.580],
}


def variant_config(cfg: Config, name: str) -> Config:
    out = copy.deepcopy(cfg)
    for key, value in VARIANTS[name].items():
        section, field = key.split(".")
        if value == "<strong>":
            value = str(OUT / "strong_verifier")
        setattr(getattr(out, section), field, value)
    out.train.out_dir = str(OUT / name)
    return out


def finished(cfg: Config) -> bool:
    """A final model of exactly this run configuration exists."""
    out = Path(cfg.train.out_dir)
    if not ((out / "final" / "config.json").is_file() and (out / "config.json").is_file()):
        return False
    saved, now = read_json(out / "config.json"), json.loads(json.dumps(to_dict(cfg)))
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)):
        raise ValueError(f"{out / 'config.json'}: expected the run's config (an object with a 'train' section)")
    for c in (saved, now):  # evaluation settings do not change the weights (nor threads, in older runs' configs)
        c.pop("eval", None)
        c.pop("threads", None)
        c["train"].pop("checkpoint_every", None)
    return saved == now


def check_inputs(cfg: Config, reuse: bool) -> None:
    """Before any work: the output folders can be written, the data root (synthetic splits are
    generated when absent) or the real data's files are there, and with `reuse` the finished runs'
    config.json files are readable."""
    check_out_dir("output folder", OUT)
    check_out_dir("supervision.teacher_path", cfg.supervision.teacher_path)
    d = cfg.data
    if d.source == "synthetic":
        check_synthetic_root("data.root", d.root, (d.train_split, d.test_split))
    for key in ("scannet_root", "scanrefer", "multi3drefer", "scanqa", "sqa3d_questions",
                "sqa3d_annotations", "records", "boxes", "gt_boxes"):
        if d.source != "synthetic" and getattr(d, key) and not Path(getattr(d, key)).exists():
            raise ValueError(f"data.{key} {getattr(d, key)}: not found")
    for name in VARIANTS if reuse else ():
        finished(variant_config(cfg, name))


def evaluate_model(model, processor, cfg: Config, train_scenes, test_scenes, use_3d_inputs=True) -> dict:
    preds = predict(
        model,
        processor,
        test_scenes,
        cfg.eval.batch_size,
        cfg.eval.max_new_tokens,
        cfg.eval.multi_threshold,
        use_3d_inputs,
    )
    metrics, per = score(test_scenes, preds)
    probe, probe_per = depth_probe(model, train_scenes[: cfg.eval.probe_scenes], test_scenes)
    return {
        "metrics": {**metrics, **probe},
        "per": {k: v.tolist() for k, v in {**per, **probe_per}.items()},
        "answers": {f"{k[0]}-{k[1]}": v for k, v in preds.answers.items()},
    }


def run_variant(name: str, cfg: Config, reuse: bool, threads: int = 0) -> dict:
    """Train (or reuse) one variant, evaluate it on `threads` torch threads (0: torch's default); a
    pure function of `cfg` (runs in a worker process)."""
    from ide3d.train import train

    set_threads(threads)
    t0 = time.time()
    out = Path(cfg.train.out_dir)
    if not (reuse and finished(cfg)):
        train(cfg, progress=False)
    seconds = time.time() - t0
    model, processor = load_pretrained(out / "final")
    train_scenes = load_scenes(cfg.data, cfg.data.train_split, processor=processor)
    test_scenes = load_scenes(cfg.data, cfg.data.test_split, processor=processor)
    result = {name: evaluate_model(model, processor, cfg, train_scenes, test_scenes)}
    if cfg.model.token_pe:
        result[name + "-evaluated-without"] = evaluate_model(
            model, processor, cfg, train_scenes, test_scenes, use_3d_inputs=False
        )
    for r in result.values():
        r["train_seconds"] = round(seconds, 1)
    print(
        f"{name}: trained in {seconds:.0f} s, total {time.time() - t0:.0f} s: "
        f"{json.dumps({k: round(v, 3) for k, v in result[name]['metrics'].items() if v is not None})}",
        flush=True,
    )
    return result


def prerequisites(cfg: Config, reuse: bool, jobs: int, threads: int = 0) -> None:
    """The builtin teacher and the strong verifier, side by side when jobs > 1."""
    tasks = []
    if not (reuse and (Path(cfg.supervision.teacher_path) / "config.json").is_file()):
        tasks.append("teacher")
    if not (reuse and (OUT / "strong_verifier" / "config.json").is_file()):
        tasks.append("verifier")
    if not tasks:
        return
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
        for f in [pool.submit(_prerequisite, kind, cfg, threads) for kind in tasks]:
            f.result()


def _prerequisite(kind: str, cfg: Config, threads: int) -> None:
    from ide3d.teacher import train_teacher
    from ide3d.train import pretrain_verifier

    set_threads(threads)
    if kind == "teacher":
        train_teacher(
            cfg,
            load_scenes(cfg.data, cfg.data.train_split),
            Path(cfg.supervision.teacher_path),
            progress=False,
        )
    else:
        pretrain_verifier(cfg, OUT / "strong_verifier", progress=False)


def intervals(runs: dict, seed: int, n: int) -> dict:
    return {
        name: {
            m: list(bootstrap_ci(np.array(v), n_resamples=n, seed=seed))
            for m, v in r["per"].items()
            if len(v)
        }
        for name, r in runs.items()
    }


def paired(runs: dict, a: str, b: str, n: int) -> dict:
    out = {}
    for m, va in runs[a]["per"].items():
        vb = runs[b]["per"].get(m, [])
        if len(va) and len(va) == len(vb):
            out[m] = paired_bootstrap_test(np.array(va), np.array(vb), n_resamples=n, seed=0)
    return out


def paired_table(results: dict) -> str:
    """The paired bootstrap comparisons as Markdown: difference, its 95% interval, two-sided p."""
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
    names = [n for n in rows if rows[n].get("acc@0.25") is not None or rows[n].get("qa_em") is not None]
    panels = [
        ("acc@0.25", "ScanRefer-style Acc@0.25"),
        ("f1@0.25", "Multi3DRefer-style F1@0.25"),
        ("qa_em", "QA exact match"),
        ("probe_delta1", "linear depth probe delta1"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    for ax, (metric, title) in zip(axes, panels):
        shown = [n for n in names if rows[n].get(metric) is not None]
        vals = [rows[n][metric] for n in shown]
        ci = [results["ci95"].get(n, {}).get(metric, [v, v]) for n, v in zip(shown, vals)]
        err = np.array([[v - lo for v, (lo, _) in zip(vals, ci)], [hi - v for v, (_, hi) in zip(vals, ci)]])
        ax.barh(range(len(shown)), vals, xerr=err, color=["C3" if n == OURS else "C0" for n in shown])
        ax.set_yticks(range(len(shown)), shown, fontsize=8)
        ax.set_title(title)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = OneLineParser("ide3d.reproduce", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config of every variant (default: configs/tiny.yaml)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="trainings side by side, each on --threads threads (default: torch's default / jobs)")
    ap.add_argument("--reuse", action="store_true", help="keep finished runs of an unchanged config")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, applied to every variant")
    args = ap.parse_args(argv)
    t0 = time.time()
    with one_line_errors("ide3d.reproduce"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        if args.jobs < 1:
            raise ValueError(f"--jobs: expected >= 1, got {args.jobs}")
        check_inputs(cfg, args.reuse)
        # each of the side-by-side trainings gets its share of the cores (spinning threads of
        # several processes on the same cores wait on each other)
        per_job = args.threads or max(1, torch.get_num_threads() // args.jobs)
        ensure_data(cfg.data)
        OUT.mkdir(parents=True, exist_ok=True)
        prerequisites(cfg, args.reuse, args.jobs, per_job)
        configs = {name: variant_config(cfg, name) for name in VARIANTS}
        ctx = multiprocessing.get_context("spawn")
        runs = {}
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = [pool.submit(run_variant, name, c, args.reuse, per_job) for name, c in configs.items()]
            for f in futures:
                runs.update(f.result())
        # The untrained model and the trivial baselines, on the same scenes and metric code.
        model, processor = build_model(cfg.model, seed=cfg.train.seed)
        train_scenes = load_scenes(cfg.data, cfg.data.train_split, processor=processor)
        test_scenes = load_scenes(cfg.data, cfg.data.test_split, processor=processor)
        runs["ide3d-untrained"] = evaluate_model(model, processor, cfg, train_scenes, test_scenes)
        for name, preds in (
            ("baseline-random-candidate", random_candidate(test_scenes)),
            ("baseline-largest-box", largest_box(test_scenes)),
            ("baseline-majority-answer", majority_answer(train_scenes, test_scenes)),
            ("baseline-majority-answer-per-type", majority_answer(train_scenes, test_scenes, True)),
        ):
            metrics, per = score(test_scenes, preds)
            runs[name] = {"metrics": metrics, "per": {k: v.tolist() for k, v in per.items()}}
    ablations = [BASELINE, "+global", "+global+geometry-weak", "+global+geometry-strong"]
    n = cfg.eval.bootstrap
    results = {
        "paper": "ide3d",
        "ours": OURS,
        "data": {
            "name": "synthetic",
            "split": cfg.data.test_split,
            "generator_version": "1",
            "scenes": len(test_scenes),
            "seed": 0,
            "queries": {k: len(v) for k, v in runs[OURS]["per"].items()},
        },
        "metrics": {m: {"higher_is_better": h} for m, h in ALL_METRICS.items()},
        "methods": {k: r["metrics"] for k, r in runs.items() if k not in ablations},
        "ablations": {k: runs[k]["metrics"] for k in ablations},
        "ci95": intervals(runs, 0, n),
        "paired_bootstrap": {
            f"{OURS} vs {b}": paired(runs, OURS, b, 10 * n)
            for b in (BASELINE, "ide3d-untrained", "video3dllm-3d-inputs")
        },
        "paper_reported": PAPER,
        "paper_ablation_acc25_f1_25": PAPER_ABLATION,
        "environment": {
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "seconds": round(time.time() - t0),
            "git": git_commit(),
            "jobs": args.jobs,
            "train_seconds": {k: r.get("train_seconds") for k, r in runs.items() if "train_seconds" in r},
        },
        "config": to_dict(cfg),
    }
    for section in ("methods", "ablations"):
        for row in results[section].values():
            for m in ALL_METRICS:
                row.setdefault(m, None)
    write_results(OUT / "results.json", results)
    (OUT / "answers.json").write_text(
        json.dumps({k: r.get("answers", {}) for k, r in runs.items()}, indent=0)
    )
    plot(results, OUT / "metrics.png")
    from ide3d.demo import grounding_picture

    grounding_picture(load_pretrained(OUT / OURS / "final"), cfg, OUT / "grounding_example.png")
    table = markdown_table(results)
    (OUT / "results.md").write_text(
        f"# 3D-IDE on the synthetic benchmark\n\n{table}\n\n{paired_table(results)}\n"
    )
    print(table)
    print(f"results: {OUT / 'results.json'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
