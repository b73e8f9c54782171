"""`make benchmark`: every method on every shared task, the same held-out items for all, one leaderboard.

    python -m benchmarks.run                                # all tasks, all methods with an adapter
    python -m benchmarks.run --tasks depth,pose --methods ivgt,g2vlm
    python -m benchmarks.run --scenes 4 --out /tmp/lb       # a quick look on the first 4 test scenes
    python -m benchmarks.run --train-missing                # train a method's tiny run when none exists

Per task: each participant's adapter is loaded (a method without a trained run, or without an
adapter yet, is listed with the reason instead of numbers), answers every item, and the task scores
each answer; the task's trivial baselines answer the same items. Per method and metric: the mean
over items, a 95% bootstrap interval, and a paired bootstrap p-value against the best method on the
items both answered. Writes `<out>.json`, `<out>.md` and `<out>.html` (see `benchmarks.leaderboard`).
"""

from __future__ import annotations

import base64
import importlib
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import leaderboard
from benchmarks.methods import ADAPTERS, Unavailable, build
from benchmarks.tasks import TASKS
from benchmarks.tasks.base import DATA_ROOT, SPLIT, TRAIN_SPLIT, load_split
from common.cli import (OneLineParser, add_threads_flag, check_out_prefix, check_synthetic_root, one_line_errors,
                        set_threads)
from common.datasets.scene_format import read_index
from common.metrics import bootstrap_ci, paired_bootstrap_test
from common.results import git_commit

PERF_DIR = Path("results/perf")  # where `make perf` writes <paper>.json


def _adapter_class(name: str):
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _names(text: str | None, known, what: str) -> list[str]:
    if text is None:
        return list(known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"--{what}: unknown {unknown or text!r}; expected a comma list of {', '.join(known)}"
        )
    return names


def summarise(task, per_item: dict[str, list[dict]], n_boot: int) -> dict:
    """{metric: {method: {"value", "ci95", "n", "p_vs_best"}}, "best": {metric: method}}."""
    out: dict = {"metrics": {}, "best": {}}
    for metric in task.metrics:
        rows = {}
        for method, items in per_item.items():
            vals = np.array(
                [np.nan if it.get(metric.name) is None else it[metric.name] for it in items], float
            )
            ok = np.isfinite(vals)
            if ok.any():
                rows[method] = {
                    "values": vals,
                    "value": float(vals[ok].mean()),
                    "n": int(ok.sum()),
                    "ci95": [float(x) for x in bootstrap_ci(vals[ok], n_resamples=n_boot, seed=0)],
                }
        if not rows:
            continue
        sign = 1 if metric.higher_is_better else -1
        best = max(rows, key=lambda m: sign * rows[m]["value"])
        for method, r in rows.items():
            both = np.isfinite(r["values"]) & np.isfinite(rows[best]["values"])
            r["p_vs_best"] = None
            if method != best and both.sum() >= 2:
                t = paired_bootstrap_test(
                    r["values"][both], rows[best]["values"][both], n_resamples=n_boot, seed=0
                )
                r["p_vs_best"] = float(t["p_value"])
        for r in rows.values():
            del r["values"]
        out["metrics"][metric.name] = rows
        out["best"][metric.name] = best
    return out


def corpus_rows(task, items, answers: list, n_boot: int) -> dict[str, dict]:
    """{metric: {"value", "ci95", "n", "p_vs_best": None}} of the task's corpus metrics; the interval
    resamples items (at most 200 resamples: each recomputes the corpus metric)."""
    full = task.corpus(items, answers)
    if not full:
        return {}
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(min(n_boot, 200)):
        idx = rng.integers(0, len(items), len(items))
        draws.append(task.corpus([items[i] for i in idx], [answers[i] for i in idx]))
    return {
        m: {
            "value": float(v),
            "n": len(items),
            "p_vs_best": None,
            "ci95": [float(np.percentile([d[m] for d in draws], q)) for q in (2.5, 97.5)],
        }
        for m, v in full.items()
    }


def run_task(task, methods: dict, test, train, n_boot: int, log=print) -> dict:
    items = task.items(test)
    per_item: dict[str, list[dict]] = {}
    corpus: dict[str, dict] = {}
    kept: dict[str, list] = {}  # every row's answers, for the task's figures
    status: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    answerers = {}
    for p in task.participants:
        if p.method not in methods:
            continue
        m = methods[p.method]
        if isinstance(m, str):
            status[p.method] = {"kind": "method", "status": m, "note": p.note}
            continue
        answerers[p.method] = (m.answer, "method", p.note)
    for name, fn in task.baselines(test, train).items():
        answerers[name] = (lambda kind, qs, fn=fn: [fn(q) for q in qs], "baseline", "")
    for name, (answer, kind, note) in answerers.items():
        t0 = time.time()
        answers = answer(task.name, [it.query for it in items])
        seconds[name] = round(time.time() - t0, 2)  # answering only, not scoring
        per_item[name] = [task.score(it, a) for it, a in zip(items, answers)]
        corpus[name] = corpus_rows(task, items, answers, n_boot)
        kept[name] = answers
        status[name] = {
            "kind": kind,
            "status": "ok",
            "note": note,
            "seconds_per_item": seconds[name] / max(1, len(items)),
        }
        log(f"  {task.name}: {name} answered {len(items)} items in {seconds[name]:.1f} s")
    summary = summarise(task, per_item, n_boot)
    for name, rows in corpus.items():
        for metric, row in rows.items():
            summary["metrics"].setdefault(metric, {})[name] = row
    for metric, rows in summary["metrics"].items():  # the best of each corpus metric, too
        if metric not in summary["best"] and rows:
            sign = 1 if task.metric(metric).higher_is_better else -1
            summary["best"][metric] = max(rows, key=lambda m: sign * rows[m]["value"])
    figures = [{"title": t, "png": base64.b64encode(png).decode()} for t, png in task.figures(items, kept)]
    return {
        "title": task.title,
        "figures": figures,
        "protocol": task.protocol,
        "data": task.data_note or "the held-out split",
        "items": len(items),
        "metric_specs": {
            m.name: {"higher_is_better": m.higher_is_better, "protocol": m.protocol} for m in task.metrics
        },
        "methods": status,
        **summary,
    }


def paper_scale_notes(perf_dir: Path, papers) -> dict[str, list[str]]:
    """{paper: the "paper scale ..." notes of `perf_dir/<paper>.json`} for the papers that have that
    file; a file that is not a perf report (`make perf`) is one error naming it."""
    from common.datasets.io import read_json

    notes = {}
    for paper in papers:
        path = Path(perf_dir) / f"{paper}.json"
        if not path.exists():
            continue
        report = read_json(path)
        listed = report.get("notes", []) if isinstance(report, dict) else None
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise ValueError(f"{path}: field 'notes': expected a list of strings (a `make perf` report)")
        notes[paper] = [n for n in listed if n.startswith("paper scale")]
    return notes


def cost_table(methods: dict, tasks: dict, notes: dict[str, list[str]] | None = None) -> dict:
    """Per method: parameters of the loaded model, CPU seconds per item of each task in this run, and
    the paper-scale counts (parameters, FLOPs of one inference on the `meta` device) that
    `make perf` measured, quoted from `results/perf/<paper>.json` (`paper_scale_notes`)."""
    notes = notes or {}
    out = {}
    for name, m in methods.items():
        if isinstance(m, str):
            continue
        out[name] = {
            "parameters": m.parameters(),
            "seconds_per_item": {
                t: round(task["methods"][name]["seconds_per_item"], 4)
                for t, task in tasks.items()
                if task["methods"].get(name, {}).get("status") == "ok"
            },
            "paper_scale": notes.get(m.paper, []),
        }
    return out


def main(argv=None) -> int:
    ap = OneLineParser(
        "benchmarks.run",
        description=__doc__,
    )
    ap.add_argument("--tasks", help=f"comma list (default all): {', '.join(TASKS)}")
    ap.add_argument(
        "--methods", help="comma list of adapters (default all; baselines always run): " + ", ".join(ADAPTERS)
    )
    ap.add_argument("--data", default=str(DATA_ROOT), help="the synthetic benchmark root (make data)")
    ap.add_argument("--scenes", type=int, default=0, help="only the first N test scenes (0: all)")
    ap.add_argument("--train-missing", action="store_true", help="train a method's tiny run when none exists")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--out", default="results/leaderboard", help="output path without suffix")
    add_threads_flag(ap)
    args = ap.parse_args(argv)
    t0 = time.time()
    with one_line_errors("benchmarks.run"):
        tasks = _names(args.tasks, TASKS, "tasks")
        wanted = _names(args.methods, ADAPTERS, "methods")
        if args.scenes < 0:
            raise ValueError(f"--scenes: expected >= 0, got {args.scenes}")
        if args.bootstrap < 100:
            raise ValueError(f"--bootstrap: expected >= 100, got {args.bootstrap}")
        set_threads(args.threads)
        out = check_out_prefix("--out", args.out)
        data = check_synthetic_root("--data", args.data, (SPLIT, TRAIN_SPLIT), generate=False)
        available = len(read_index(data / SPLIT)["scenes"])
        if args.scenes > available:
            raise ValueError(f"--scenes: expected at most the {available} scenes of {data / SPLIT}, got {args.scenes}")
        notes = paper_scale_notes(PERF_DIR, sorted({_adapter_class(n).paper for n in wanted}))
        test = load_split(data, SPLIT, args.scenes)
        train = load_split(data, TRAIN_SPLIT, 0, load=("depth",))
        task_objs = [TASKS[t]() for t in tasks]
        needed = {p.method for t in task_objs for p in t.participants}
        methods: dict = {}
        for name in sorted(needed):
            if name not in ADAPTERS:
                methods[name] = "not yet (no adapter)"
            elif name not in wanted:
                methods[name] = "not selected"
            else:
                m = build(name, train_missing=args.train_missing)
                try:
                    m.load()
                    methods[name] = m
                except Unavailable as exc:
                    methods[name] = f"unavailable: {exc}"
                print(f"{name}: {methods[name] if isinstance(methods[name], str) else 'loaded'}", flush=True)
        board = {"data": test.data, "tasks": {}}
        for task in task_objs:
            board["tasks"][task.name] = run_task(task, methods, test, train, args.bootstrap)
        board["cost"] = cost_table(methods, board["tasks"], notes)
        board["environment"] = {"seconds": round(time.time() - t0), "git": git_commit(), "device": "cpu"}
        paths = leaderboard.write(board, out)
    print(leaderboard.summary_markdown(board))
    print("written " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
