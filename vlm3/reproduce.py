"""`make reproduce-vlm3`: train the tiny VLM3 on the synthetic task mixture, evaluate it on held-out
scenes beside the untrained model and the trivial baselines, train and evaluate the two ablations,
and write results/vlm3/ (results.json, results.md, parse failures, pictures).

    python -m vlm3.reproduce                      # tiny.yaml, about 28 minutes on 2 CPU cores
    python -m vlm3.reproduce --jobs 1             # the three trainings in turn (default: side by side)
    python -m vlm3.reproduce train.steps=300      # a shortened run (say so when quoting it)
    python -m vlm3.reproduce --reuse              # re-evaluate finished runs of an unchanged training config
    python -m vlm3.reproduce --profile long       # configs/long.yaml: a run per two-view task, about 1.7 h

The long profile trains one model per two-view task (as the paper trains one checkpoint per task),
each far longer than the 30-minute mixture affords, and reports each on its own task's held-out
questions beside identity and the training prior, with a paired bootstrap against identity
(results/vlm3/long/).

Ablations (each trained exactly as the main run, only the named setting changed):
- `no-focal-unification`: images enter at their captured focal length (the test views have varied
  focal lengths: each scene's camera is zoomed by a factor in data.zoom);
- `red-arrow-marker`: depth questions mark the point with DepthLM's red arrow drawn into the image
  instead of VLM3's text coordinates (the other tasks are unchanged).
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import multiprocessing
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from common.cli import (OneLineParser, add_threads_flag, check_out_dir, check_synthetic_root, one_line_errors,
                        set_threads)
from common.datasets.io import read_json
from common.metrics import bootstrap_ci, paired_bootstrap_test
from common.results import git_commit, markdown_table, write_results
from vlm3.config import MOVED, Config, load_config, load_profile, to_dict
from vlm3.evaluate import (METRICS, answer_all, baseline_answers, held_out_questions, item_scenes, score,
                           train_statistics)
from vlm3.model import VLM3
from vlm3.train import build_mixture, ensure_data, scene_cache, test_root, train

OUT = Path("results/vlm3")

# The paper's numbers, with the data they were measured on (notes/anchors-vlm.md Sec. 1.3).
PAPER = {
    "depth_delta1": {
        "value": 0.904,
        "dataset": "avg of 8 depth benchmarks (Argoverse2, DDAD, nuScenes, ETH3D, "
        "ScanNet++, SUN-RGBD, iBims-1, NYUv2; third-party summary of the paper)",
    },
    "pose_auc30": {"value": 94.0, "dataset": "ETH3D + ScanNet++ (third-party summary)"},
    "object_accuracy": {"value": 0.9135, "dataset": "SpatialRGPT-Bench (third-party summary)"},
}


# Train settings that change how a run executes, not the weights it ends with (resuming is exact).
RUN_ONLY = ("threads", "workers", "checkpoint_every")  # threads: in older runs' configs


def finished_checkpoint(cfg: Config) -> Path | None:
    """out_dir/checkpoint if a finished run with this exact model, data and train config wrote it."""
    out = Path(cfg.train.out_dir)
    ckpt = out / "checkpoint"
    if not ((ckpt / "trainer_state.json").is_file() and (out / "config.json").is_file()):
        return None
    saved = read_json(out / "config.json")
    if not isinstance(saved, dict):
        raise ValueError(f"{out / 'config.json'}: expected the run's config (a JSON object)")
    now = json.loads(json.dumps(to_dict(cfg)))  # as train() wrote it
    for c in (saved, now):  # eval settings may differ, and how the run was executed does not matter
        c.pop("eval", None)
        data = c.get("data", {})  # where the held-out scenes are, and how many
        data.pop("test_root", None)
        if isinstance(data.get("generate_scenes"), dict):
            data["generate_scenes"].pop(data.get("test_split", "test"), None)
        for k in RUN_ONLY:
            c.get("train", {}).pop(k, None)
    asked = {t for t, w in (saved.get("data", {}).get("mixture") or {}).items() if w}
    for key, (_, tasks) in MOVED.items():  # older runs' configs hold the moved experiment settings
        section, name = key.split(".")
        held = saved.get(section) if isinstance(saved.get(section), dict) else {}
        if name in held and (held[name] == 0 or not asked & set(tasks)):  # it changed nothing
            held.pop(name)
    same = saved == now
    state = read_json(ckpt / "trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{ckpt / 'trainer_state.json'}: field 'step': expected the step count of the checkpoint")
    return ckpt if (same and state["step"] == cfg.train.steps) else None


def trained_questions(cfg: Config, cache) -> dict:
    """The held-out questions of the tasks a run was trained on (those of its mixture)."""
    trained = {t for t, w in cfg.data.mixture.items() if w > 0}
    return {t: q for t, q in held_out_questions(cfg, cache).items() if t in trained}


def run_variant(name: str, cfg: Config, reuse: bool = False, threads: int = 0) -> dict:
    """Train (or reuse) one variant and answer the held-out questions on `threads` torch threads
    (0: as they are); a pure function of `cfg`, so variants can run in separate processes. Returns
    what the report needs (no images)."""
    set_threads(threads)
    t0 = time.time()
    train_cache = scene_cache(cfg)
    test_cache = scene_cache(cfg, "test")
    ckpt = finished_checkpoint(cfg) if reuse else None
    if reuse and ckpt is None:
        print(f"{name}: no finished checkpoint of this configuration in {cfg.train.out_dir}; training")
    vlm = (
        VLM3.from_pretrained(ckpt)
        if ckpt is not None
        else train(cfg, mixture=build_mixture(cfg, train_cache), progress=False)
    )
    questions = trained_questions(cfg, test_cache)
    answers = answer_all(vlm, questions, cfg.eval.batch_size, cfg.eval.max_new_tokens)
    failures, items = [], {}
    metrics = score(questions, answers, failures, items)
    print(f"{name} ({time.time() - t0:.0f} s): {json.dumps(metrics)}", flush=True)
    return {
        "metrics": metrics,
        "seconds": round(time.time() - t0, 1),
        "reused_checkpoint": ckpt is not None,
        "failures": [asdict(f) for f in failures],
        "items": items,
        "answers": answers,
    }


def run_variants(variants: dict, reuse: bool, jobs: int, threads: int = 0) -> dict:
    """{name: run_variant(...)}; with jobs > 1 the variants run in parallel processes, each on
    `threads` torch threads, or by default on its share of this process's (at least one: the three
    single-threaded runs share two cores and finish in about 2/3 of the serial time)."""
    if jobs <= 1:
        return {name: run_variant(name, v, reuse) for name, v in variants.items()}
    jobs = min(jobs, len(variants))
    per_job = threads or max(1, torch.get_num_threads() // jobs)  # spinning threads on shared cores wait
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per run: no forked torch state
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {name: pool.submit(run_variant, name, v, reuse, per_job) for name, v in variants.items()}
        return {name: f.result() for name, f in futures.items()}


def plot_curves(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, out_dir in runs.items():
        rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")  # [n - k + 1]
        ax.plot(steps[k - 1 :], smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_examples(questions: dict, answers: dict, path: Path, n: int = 6) -> None:
    """Depth questions of the test split: the queried point, the truth and the model's answer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exs, said = questions["depth"][:n], answers["depth"][:n]
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.6))
    for ax, ex, ans in zip(axes, exs, said):
        img = ex.images[0].permute(1, 2, 0).numpy()  # [H, W, 3]
        ax.imshow(img)
        u, v = ex.target["uv"][0]
        ax.plot([u], [v], "r+", ms=12, mew=2)
        ax.set_title(f"gt {ex.target['depth'][0]:.2f} m\nsaid {ans.strip()[:22]}", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment(start: float, variants: dict, log: dict, **extra) -> dict:
    """results.json's environment: device, seconds since `start`, commit, reused runs, and `extra`."""
    return {"device": "cuda" if torch.cuda.is_available() else "cpu",
            "seconds": round(time.time() - start, 1),
            "git": git_commit(),
            "reused_checkpoints": [n for n in variants if log[n]["reused_checkpoint"]],
            **extra}


# The long profile's runs: the task each is trained on and the metric it is judged by against identity.
LONG_HEADLINE = {"pose": "pose_rot_err_deg", "correspondence": "corr_epe_mean"}


def scene_means(name: str, questions: dict, values) -> np.ndarray:
    """[S] the run's per-item headline values (`score`'s per_item of task `name`) averaged per test
    scene, scenes in sorted order. Pairs of one scene are not independent (an orbit's pairs share its
    turn)."""
    scenes, values = item_scenes(name, questions), np.asarray(values, dtype=float)
    if len(scenes) != len(values):
        raise ValueError(f"{name}: {len(values)} per-item values for {len(scenes)} items")
    return np.array([values[scenes == s].mean() for s in np.unique(scenes)])


def paired_per_item_and_scene(task: str, questions: dict, ours, base, seed: int = 0) -> dict:
    """`paired_bootstrap_test` of the per-item values `ours` - `base` of `task`'s questions, plus
    "per_scene": the same on their per-scene means (`scene_means`) and the number of scenes."""
    a, b = scene_means(task, questions, ours), scene_means(task, questions, base)
    return {**paired_bootstrap_test(ours, base, seed=seed),
            "per_scene": {"scenes": len(a), **paired_bootstrap_test(a, b, seed=seed)}}


def report_long(variants: dict, log: dict, out: Path, args, start: float) -> None:
    """results.json / results.md of the long profile: each per-task run beside identity and the training
    prior on its own task's held-out questions, and a paired bootstrap of its headline metric against
    identity (per question for correspondence, per pair for rotation, and both per test scene)."""
    methods, tests, data, steps = {}, {}, {}, {}
    for name, cfg in variants.items():
        cache = scene_cache(cfg, "test")
        questions = trained_questions(cfg, cache)
        stats = train_statistics(cfg)
        identity_items = {}
        identity = score(questions, baseline_answers(questions, stats), per_item=identity_items)
        prior = score(questions, baseline_answers(questions, stats, prior=True))
        methods[f"vlm3-long-{name}"] = log[name]["metrics"]
        methods[f"baseline-identity-{name}"] = identity
        methods[f"baseline-training-prior-{name}"] = prior
        key = LONG_HEADLINE.get(name)
        if key in log[name]["items"]:
            test = paired_per_item_and_scene(name, questions, log[name]["items"][key], identity_items[key],
                                             seed=args.seed)
            tests[name] = {"metric": key, **test}
        data[name] = {"root": str(test_root(cfg)), "split": cfg.data.test_split, "scenes": len(cache),
                      "questions": {t: len(q) for t, q in questions.items()}}
        rows = (Path(cfg.train.out_dir) / "metrics.jsonl").read_text().splitlines()
        steps[name] = {"steps": cfg.train.steps, "batch_size": cfg.train.batch_size,
                       "train_seconds": json.loads(rows[-1]).get("seconds") if rows else None}
    used = {k for m in methods.values() for k in m}
    first = data[next(iter(variants))]  # every run's held-out split is the benchmark's (long.yaml)
    ci95 = {f"vlm3-long-{n}": {k: list(bootstrap_ci(v, seed=args.seed)) for k, v in log[n]["items"].items()}
            for n in variants}
    results = {
        "paper": "vlm3",
        "ours": "vlm3-long-pose",
        "data": {"name": "synthetic", "split": first["split"], "generator_version": "1",
                 "scenes": first["scenes"], "seed": args.seed, "runs": data},
        "metrics": {k: {"higher_is_better": v} for k, v in METRICS.items() if k in used},
        "methods": methods,
        "ci95": ci95,
        "paired_bootstrap_vs_identity": tests,
        "environment": environment(start, variants, log, runs=steps),
    }
    write_results(out / "results.json", results)
    plot_curves({n: Path(v.train.out_dir) for n, v in variants.items()}, out / "loss_curves.png")
    table = markdown_table(results)
    lines = [f"- {n}: {t['metric']} {t['difference']:+.2f} against identity, 95% [{t['ci_low']:.2f}, "
             f"{t['ci_high']:.2f}], p = {t['p_value']:.3g}; averaged per scene ({t['per_scene']['scenes']} "
             f"scenes) {t['per_scene']['difference']:+.2f}, 95% [{t['per_scene']['ci_low']:.2f}, "
             f"{t['per_scene']['ci_high']:.2f}], p = {t['per_scene']['p_value']:.3g}" for n, t in tests.items()]
    command = " ".join(["python -m vlm3.reproduce --profile long"] + (["--reuse"] if args.reuse else [])
                       + list(args.overrides))
    (out / "results.md").write_text(
        f"# VLM3, the long profile (one run per two-view task)\n\nCommand: `{command}` "
        f"({results['environment']['seconds']:.0f} s on {results['environment']['device']}).\n\n{table}\n\n"
        "Paired bootstrap (the run minus identity on the same questions; lower is better):\n\n"
        + "\n".join(lines) + "\n"
    )
    print(table)
    print("\n".join(lines))
    print(f"wrote {out / 'results.json'} in {time.time() - start:.0f} s")


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.reproduce", description=__doc__)
    ap.add_argument("--profile", choices=("tiny", "long"), default="tiny",
                    help="tiny: the main run and its two ablations (about 28 minutes on 2 CPU cores); long: "
                    "configs/long.yaml, one run per two-view task (about 1.7 hours)")
    ap.add_argument("--config", default=None,
                    help="YAML config of every variant (default: configs/tiny.yaml; not with --profile long)")
    ap.add_argument("--out", default=None,
                    help=f"folder of results.json, results.md and plots (default: {OUT}; --profile long: "
                    f"{OUT}/long)")
    ap.add_argument("--seed", type=int, default=0, help="sets train.seed of every variant (default 0)")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate a run's finished checkpoint when its model/data/train config is unchanged "
        "(e.g. after changing only eval settings) instead of training it again",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=3,
        help="variants trained at once, each in its own process on its share of the threads (default 3: "
        "all of them, also on 2 cores, one thread each); 1 runs them one after another in this process",
    )
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value for every run, e.g. train.steps=300")
    args = ap.parse_args(argv)
    start = time.time()
    with one_line_errors("vlm3.reproduce"):  # bad settings, paths and data: one line, before any work
        set_threads(args.threads)
        if args.jobs < 1:
            raise ValueError(f"--jobs: expected an int >= 1, got {args.jobs}")
        if args.seed < 0:
            raise ValueError(f"--seed: expected an int >= 0, got {args.seed}")
        overrides = list(args.overrides) + [f"train.seed={args.seed}"]
        if args.profile == "long":
            if args.config is not None:
                raise ValueError("--config: not with --profile long (its runs are configs/long.yaml)")
            variants = load_profile(Path(__file__).parent / "configs" / "long.yaml", overrides)
            out = check_out_dir("--out", args.out or str(OUT / "long"))
        else:
            cfg = load_config(args.config or Path(__file__).parent / "configs" / "tiny.yaml", overrides)
            out = check_out_dir("--out", args.out or str(OUT))
            variants = {"vlm3": cfg}
            for name, change in (
                ("no-focal-unification", {"unify_focal": False}),
                ("red-arrow-marker", {"marker": True}),
            ):
                v = copy.deepcopy(cfg)
                for k, val in change.items():
                    setattr(v.data, k, val)
                variants[name] = v
        for name, v in variants.items():
            check_synthetic_root("data.root", v.data.root, (v.data.train_split,))
            check_synthetic_root("data.test_root" if v.data.test_root else "data.root", test_root(v),
                                 (v.data.test_split,))
            v.train.out_dir = str(out / name)
            check_out_dir("--out", v.train.out_dir)
            if args.reuse:
                finished_checkpoint(v)  # --reuse reads the run's config.json and trainer_state.json
    out.mkdir(parents=True, exist_ok=True)
    for v in variants.values():
        ensure_data(v)
    torch.manual_seed(args.seed)
    if args.profile == "long":
        report_long(variants, run_variants(variants, args.reuse, args.jobs, args.threads), out, args, start)
        return
    cfg = variants["vlm3"]
    test_cache = scene_cache(cfg, "test")
    log = run_variants(variants, args.reuse, args.jobs, args.threads)

    # The untrained model and the trivial baselines answer the main run's questions.
    questions = held_out_questions(cfg, test_cache)  # the same questions the main run answered
    untrained = VLM3.build(cfg.model, seed=cfg.train.seed)
    answers = answer_all(untrained, questions, cfg.eval.batch_size, cfg.eval.max_new_tokens)
    untrained_metrics = score(questions, answers)
    stats = train_statistics(cfg)
    base = score(questions, baseline_answers(questions, stats))
    prior = score(questions, baseline_answers(questions, stats, prior=True))
    per_task = {
        "baseline-median-depth": ("depth_delta1", "depth_abs_rel"),
        "baseline-identity-correspondence": ("corr_epe_mean", "corr_epe_median"),
        "baseline-identity-pose": (
            "pose_rot_err_deg",
            "pose_trans_err_deg",
            "pose_auc30",
            "pose_angle_err_deg",
            "pose_distance_abs_rel",
        ),
        "baseline-majority-answer": ("object_accuracy",),
    }
    methods = {"vlm3": log["vlm3"]["metrics"], "vlm3-untrained": untrained_metrics}
    for name, keys in per_task.items():
        methods[name] = {k: base[k] for k in keys}
    # What a model scores that learned the training answers of the two-view tasks but not to compare
    # the images: the bar below which a two-view "win" over identity is the answer prior.
    methods["baseline-training-prior"] = {
        k: prior[k] for k in per_task["baseline-identity-correspondence"] + per_task["baseline-identity-pose"]
    }
    ci95 = {"vlm3": {k: list(bootstrap_ci(v, seed=args.seed)) for k, v in log["vlm3"]["items"].items()}}

    results = {
        "paper": "vlm3",
        "ours": "vlm3",
        "data": {
            "name": "synthetic",
            "split": cfg.data.test_split,
            "generator_version": "1",
            "scenes": len(test_cache),
            "seed": args.seed,
            "questions": {t: len(q) for t, q in questions.items()},
        },
        "metrics": {k: {"higher_is_better": v} for k, v in METRICS.items()},
        "methods": methods,
        "ablations": {n: log[n]["metrics"] for n in variants if n != "vlm3"},
        "ci95": ci95,
        "paper_reported": PAPER,
        "environment": environment(start, variants, log, train_steps=cfg.train.steps,
                                   batch_size=cfg.train.batch_size, baseline_statistics=stats),
    }
    write_results(out / "results.json", results)
    plot_curves({n: out / n for n in variants}, out / "loss_curves.png")
    plot_examples(questions, log["vlm3"]["answers"], out / "depth_examples.png")
    with open(out / "parse_failures.jsonl", "w") as f:
        for name, entry in log.items():
            for fail in entry["failures"]:
                f.write(json.dumps({"run": name, **fail}) + "\n")
    table = markdown_table(results)
    command = " ".join(
        ["python -m vlm3.reproduce"] + (["--reuse"] if args.reuse else []) + list(args.overrides)
    )
    (out / "results.md").write_text(
        f"# VLM3 on the synthetic benchmark\n\nCommand: `{command}`"
        f" ({cfg.train.steps} steps x {cfg.train.batch_size}, {results['environment']['seconds']:.0f} s on "
        f"{results['environment']['device']}).\n\n{table}\n"
    )
    print(table)
    print(f"wrote {out / 'results.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
