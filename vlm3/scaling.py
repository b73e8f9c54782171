"""Data scaling (VLM3 Sec. 3.3): train at several data sizes and plot every metric against the number of
distinct training questions.

    python -m vlm3.scaling --sizes 250,1000,4000,16000 train.steps=800

Each run trains the same number of steps on a mixture whose tasks hold `size * weight / sum(weights)`
distinct questions (so only the amount of data changes), then answers the same held-out questions.
Writes results/vlm3/scaling/scaling.json and scaling.png (one panel per metric, log x axis).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.cli import OneLineParser, add_threads_flag, set_threads
from vlm3.config import load_config
from vlm3.evaluate import METRICS, answer_all, held_out_questions, score
from vlm3.train import build_mixture, ensure_data, scene_cache, train


def plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METRICS if m != "parse_failure_rate"]
    cols = 4
    fig, axes = plt.subplots(
        (len(names) + cols - 1) // cols, cols, figsize=(3.2 * cols, 2.6 * ((len(names) + 3) // 4))
    )
    sizes = [r["samples"] for r in rows]
    for ax, name in zip(axes.flat, names):
        ax.plot(sizes, [r["metrics"].get(name) for r in rows], "o-")
        ax.set_xscale("log")
        ax.set_title(f"{name} {'↑' if METRICS[name] else '↓'}", fontsize=9)
        ax.set_xlabel("training questions", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.scaling", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument(
        "--sizes", default="250,1000,4000,16000", help="total distinct training questions per run"
    )
    ap.add_argument("--out", default="results/vlm3/scaling", help="folder of scaling.json and scaling.png")
    ap.add_argument("--seed", type=int, default=0, help="sets train.seed (default 0)")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (train.steps=300)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s < 1 for s in sizes):
        raise ValueError(f"--sizes {args.sizes!r}: expected positive integers")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, list(args.overrides) + [f"train.seed={args.seed}"])
    ensure_data(cfg)
    train_cache = scene_cache(cfg)
    test_cache = scene_cache(cfg, "test")
    questions = held_out_questions(cfg, test_cache)
    total = sum(cfg.data.mixture.values())
    rows = []
    for size in sizes:
        t0 = time.time()
        cfg.data.samples = {t: max(1, round(size * w / total)) for t, w in cfg.data.mixture.items()}
        cfg.train.out_dir = str(out / f"n{size}")
        vlm = train(cfg, mixture=build_mixture(cfg, train_cache))
        answers = answer_all(vlm, questions, cfg.eval.batch_size, cfg.eval.max_new_tokens)
        rows.append(
            {
                "samples": size,
                "per_task": dict(cfg.data.samples),
                "metrics": score(questions, answers),
                "seconds": round(time.time() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]))
        (out / "scaling.json").write_text(
            json.dumps({"steps": cfg.train.steps, "batch_size": cfg.train.batch_size, "rows": rows}, indent=1)
        )
    plot(rows, out / "scaling.png")
    print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")


if __name__ == "__main__":
    main()
