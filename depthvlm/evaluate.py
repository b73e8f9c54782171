"""Evaluation on the unified benchmark: metric depth per domain (delta1, AbsRel, RMSE; no scale
alignment: metric depth stays metric) and spatial-QA accuracy, all with `common.metrics`.

    python -m depthvlm.evaluate --model runs/depthvlm/tiny/stage2/final --config depthvlm/configs/tiny.yaml

Depth follows DepthVLM's dense protocol: the full predicted map against the ground truth at the
canonical focal length, metrics per image then averaged over images (DepthVLM aggregates per
sample). QA: "closer" by normalised exact match of the option's letter; numeric answers (how far,
how far apart) by VSI-Bench's mean relative accuracy (MRA) of the parsed number; unparsable answers
score 0. spatial-QA accuracy = mean over all questions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.metrics import (
    depth_metrics,
    exact_match,
    mean_relative_accuracy,
    paired_bootstrap_test,
    parse_number,
)
from depthvlm.config import load_config
from depthvlm.data import DEPTH_PROMPT, build_items

DEPTH_KEYS = ("delta1", "abs_rel", "rmse")


def depth_scores(preds, items, max_depth=None) -> dict:
    """{f"{domain}_{metric}"} for delta1 / abs_rel / rmse, per image then averaged, no alignment."""
    per = {}
    for pred, item in zip(preds, items):
        gt = item.depth.numpy()
        if not (gt > 1e-3).any():
            continue
        m = depth_metrics(np.asarray(pred, dtype=np.float64), gt, align=None, max_depth=max_depth)
        per.setdefault(item.domain, []).append(m)
    return {f"{dom}_{k}": float(np.mean([m[k] for m in ms])) for dom, ms in per.items() for k in DEPTH_KEYS}


def score_answer(question: dict, text) -> float:
    if question["type"] == "closer":
        return exact_match(text or "", question["answer"])  # the option's letter
    return mean_relative_accuracy(parse_number(text), question["value"])


def qa_scores(records) -> dict:
    """records: [(question dict, answer text)] -> overall and per-type accuracy."""
    if not records:
        return {}
    scores = {}
    for q, text in records:
        scores.setdefault(q["type"], []).append(score_answer(q, text))
    out = {f"qa_{t}": float(np.mean(s)) for t, s in scores.items()}
    out["qa_accuracy"] = float(np.mean([v for s in scores.values() for v in s]))
    return out


def paired_qa_tests(ours, other, seed: int = 0) -> dict:
    """Paired bootstrap of two models' QA records [(question, answer text)] on the same questions in
    the same order: {"qa_accuracy" and "qa_<type>" per question type: paired_bootstrap_test (ours
    minus other)}. ValueError if the questions differ."""
    if len(ours) != len(other) or any(q is not q2 for (q, _), (q2, _) in zip(ours, other)):
        raise ValueError(f"paired_qa_tests: {len(ours)} and {len(other)} records, expected the same questions")
    out = {}
    for metric, kind in [("qa_accuracy", None)] + [(f"qa_{t}", t) for t in sorted({q["type"] for q, _ in ours})]:
        pairs = [(score_answer(q, a), score_answer(q, b)) for (q, a), (_, b) in zip(ours, other)
                 if kind is None or q["type"] == kind]
        a, b = np.array(pairs).T  # [2, N]
        out[metric] = paired_bootstrap_test(a, b, seed=seed)
    return out


@torch.no_grad()
def run_depthvlm(model, processor, items, batch_size: int = 16, max_new_tokens: int = 10, text: bool = True,
                 depth: bool = True):
    """(depth maps, QA records) of DepthVLM: for each image, its first question (or the depth
    prompt) runs through `generate_with_depth`, which returns the answer and the depth map from
    the same prefill; further questions of the image are answered by `generate`."""
    model.eval()
    device = next(model.parameters()).device
    preds, records = [None] * len(items), []
    first = [(i, it.questions[0] if (text and it.questions) else None) for i, it in enumerate(items)]
    rest = [(i, q) for i, it in enumerate(items) if text for q in it.questions[1:]]
    for s in tqdm(range(0, len(first), batch_size), desc="eval", unit="batch", disable=None):
        chunk = first[s:s + batch_size]
        batch = processor([items[i].image for i, _ in chunk],
                          [q["question"] if q else DEPTH_PROMPT for _, q in chunk])
        batch = {k: v.to(device) for k, v in batch.items()}
        if depth:
            ids, maps = model.generate_with_depth(batch, max_new_tokens=max_new_tokens)
            for (i, _), d in zip(chunk, maps):
                preds[i] = d.float().cpu().numpy()
        elif text:
            batch.pop("image_sizes")
            ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, predict_depth=False)
            ids = ids[:, batch["input_ids"].shape[1]:]
        if text:
            records += [(q, t) for (_, q), t in zip(chunk, processor.decode(ids)) if q is not None]
    for s in range(0, len(rest), batch_size):
        chunk = rest[s:s + batch_size]
        batch = processor([items[i].image for i, _ in chunk], [q["question"] for _, q in chunk])
        batch.pop("image_sizes")
        batch = {k: v.to(device) for k, v in batch.items()}
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, predict_depth=False)
        records += list(zip([q for _, q in chunk], processor.decode(ids[:, batch["input_ids"].shape[1]:])))
    return preds, records


def evaluate_model(model, processor, items, max_new_tokens=10, max_depth=None, text=True, depth=True) -> dict:
    preds, records = run_depthvlm(model, processor, items, max_new_tokens=max_new_tokens, text=text, depth=depth)
    out = depth_scores(preds, items, max_depth) if depth else {}
    out.update(qa_scores(records))
    return out


def main(argv=None):
    from depthvlm.model import load_pretrained

    ap = OneLineParser("depthvlm.evaluate", description=__doc__)
    ap.add_argument("--model", required=True, help="folder written by depthvlm.train")
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config of the data and evaluation settings (default: configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="write the metrics as JSON here")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (data.max_test_views=4)")
    args = ap.parse_args(argv)
    with one_line_errors("depthvlm.evaluate"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        torch.manual_seed(cfg.seed)
        model, processor = load_pretrained(args.model)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        data = cfg.data
        items = build_items(data, data.test_split, processor.factor, data.max_test_views, cfg.seed)
        metrics = evaluate_model(model, processor, items, cfg.max_new_tokens, cfg.data.max_depth)
        print(json.dumps(metrics, indent=1))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
