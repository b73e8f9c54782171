"""Short stage-2 runs that choose the tiny recipe: the text-only VLM (or DepthVLM from a stage-1
model) trained on the spatial questions with one setting changed, then scored on a fixed subset of
the test questions, with how its "closer" answers are spread (the share answering the first option
against the share whose first option is the closer object). One process, no checkpoints.

    python -m depthvlm.diagnostics.stage2_recipe --steps 3000 --lr 2e-3 train.stage2.closer_first=0
    python -m depthvlm.diagnostics.stage2_recipe --depth-from results/depthvlm/run/stage1/final --steps 3000 \
        --lr 2e-3 train.stage2.depth_images=2 data.train_questions_per_view=9 data.train_both_orders=true
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, set_threads
from depthvlm.config import load_config
from depthvlm.data import build_items
from depthvlm.evaluate import depth_scores, qa_scores, run_depthvlm
from depthvlm.model import build_model, load_pretrained
from depthvlm.train import _lr_lambda, freeze_for_stage, make_batch, stage_examples, training_examples


def closer_answers(records) -> dict:
    """How the "closer" answers are spread: the share answering the first option (A), against the
    share of questions whose first option is the closer object, and the commonest answers."""
    closer = [(q, t.strip()) for q, t in records if q["type"] == "closer"]
    return {"answered_a": float(np.mean([t == "A" for _, t in closer])),
            "a_is_closer": float(np.mean([q["answer"] == "A" for q, _ in closer])),
            "most_common": Counter(t for _, t in closer).most_common(3)}


def main(argv=None):
    ap = OneLineParser("depthvlm.diagnostics.stage2_recipe", description=__doc__)
    ap.add_argument("--config", default="depthvlm/configs/tiny.yaml")
    ap.add_argument("--depth-from", default="", help="a stage-1 model: train DepthVLM's stage 2 from it "
                    "(default: the text-only VLM from random weights)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--curriculum", type=int, default=0, help="first N steps on one-object questions only")
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--eval-questions", type=int, default=400)
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    model, proc = load_pretrained(args.depth_from) if args.depth_from else build_model(cfg.model, seed=cfg.seed)
    stage = 2 if args.depth_from else "text"
    train_items = build_items(cfg.data, cfg.data.train_split, proc.factor, 0, cfg.seed)
    test_items = build_items(cfg.data, cfg.data.test_split, proc.factor, 0, cfg.seed)
    examples, closer = stage_examples(train_items, cfg.train.stage2, 2, cfg.data.train_both_orders)
    one_object = training_examples(train_items, 2, cfg.data.train_both_orders, ("how_far",))
    # A fixed subset of the test questions, each asked of its own image.
    questions = [(i, q) for i, it in enumerate(test_items) for q in it.questions]
    pick = sorted(np.random.default_rng(0).choice(len(questions), min(args.eval_questions, len(questions)), False))
    subset = [replace(test_items[questions[j][0]], questions=[questions[j][1]]) for j in pick]

    def evaluate(step):
        _, records = run_depthvlm(model, proc, subset, batch_size=32, max_new_tokens=8, depth=False)
        model.train()
        print(step, {k: round(v, 3) for k, v in qa_scores(records).items()}, closer_answers(records), flush=True)

    freeze_for_stage(model, stage, cfg.train.stage2.train_vision)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(max(1, int(0.05 * args.steps)), args.steps))
    scfg, t0 = cfg.train.stage2, time.time()
    model.train()
    for step in range(args.steps):
        pool = one_object if step < args.curriculum else closer if step < cfg.train.stage2.closer_first else examples
        idx = np.random.default_rng([cfg.seed, 2, step]).choice(len(pool), scfg.batch_size, replace=False)
        batch = make_batch(proc, train_items, pool, idx, stage == 2, "cpu", scfg.depth_images)
        if stage == "text":
            batch.pop("image_sizes")
            out = model(**batch, predict_depth=False)
            loss = out.text_loss
        else:
            out = model(**batch)
            loss = out.text_loss + scfg.depth_weight * out.depth_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, scfg.grad_clip)
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step} {time.time() - t0:.0f} s text loss {out.text_loss.item():.3f}", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0:
            evaluate(step + 1)
    print(f"{(time.time() - t0) / max(1, args.steps):.3f} s per step")
    evaluate(args.steps)
    if stage == 2:
        preds, _ = run_depthvlm(model, proc, test_items, text=False)
        print({k: round(v, 3) for k, v in depth_scores(preds, test_items, cfg.data.max_depth).items()})


if __name__ == "__main__":
    main()
