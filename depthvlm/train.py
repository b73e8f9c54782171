"""Two-stage DepthVLM training (official `train/train-stage1.sh`, `train-stage2.sh`).

Stage 1: the depth head alone; vision encoder, language model and LM head frozen; SILog only (the
official stage 1 has no text: labels all -100). Stage 2: language model, LM head and depth head
train, the vision encoder stays frozen; loss = text CE (answer tokens only) + w * SILog, w = 1.0.

    python -m depthvlm.train --config depthvlm/configs/tiny.yaml out_dir=runs/depthvlm seed=0 [--resume]

    torchrun --nproc_per_node 2 -m depthvlm.train ...             # 2 processes on a CPU (gloo)
    accelerate launch --num_processes 2 -m depthvlm.train ...     # GPUs

Runs through `accelerate` (CPU, one GPU or N processes). Step s's global batch is N x batch_size
examples drawn without replacement by a generator seeded by (seed, stage, s), and rank r takes its
r-th batch_size of them; the loss is the global batch's (text CE over all its answer tokens: each
rank's token sum over the global count; SILog averaged over its images) and DDP averages the
gradients, so N processes follow one process at N x batch_size. Only the main process writes.
Checkpoints are written atomically every `train.checkpoint_every` steps and at the end of each
stage (safetensors + JSON, no pickles); `--resume` continues from the last one (`checkpoint.old`
where a kill fell between a save's two renames) and reaches the same weights as an uninterrupted
run, because the batch of step s is a pure function of (seed, stage, s).
`metrics.jsonl` (one line per step, with its stage) is cut back to the checkpoint first, so no step
is logged twice.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from common.checkpoint import atomic_checkpoint, checkpoint_to_resume, load_safetensors
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.results import truncate_jsonl
from depthvlm.config import load_config, to_dict
from depthvlm.data import DEPTH_PROMPT, build_items, ensure_synthetic, swapped
from depthvlm.model import build_model, load_pretrained, save_pretrained


def freeze_for_stage(model, stage: int, train_vision: bool = False) -> list[str]:
    """Set requires_grad per stage; returns the names of the trainable parameters.

    stage 1: only `depth_head`; stage 2: everything but the vision encoder (`model.visual`), which
    `train_vision` adds; stage "text": stage 2 without the head (the text-only ablation)."""
    frozen_visual = not train_vision
    for name, p in model.named_parameters():
        if stage == 1:
            p.requires_grad = name.startswith("depth_head.")
        elif stage == 2:
            p.requires_grad = not (frozen_visual and name.startswith("model.visual."))
        elif stage == "text":
            p.requires_grad = not (frozen_visual and name.startswith("model.visual.")
                                   or name.startswith("depth_head."))
        else:
            raise ValueError(f"stage: expected 1, 2 or 'text', got {stage!r}")
    return [n for n, p in model.named_parameters() if p.requires_grad]


def training_examples(items, stage, both_orders: bool = False, kinds=None) -> list[tuple[int, str, str | None]]:
    """(item index, prompt, answer) triples: stage 1 pairs each image with the depth prompt and no
    answer; stage 2 and the text-only run use the spatial questions (of `kinds` only, if given) with
    their answers, and with `both_orders` each two-object question once more with its objects
    swapped (`data.swapped`: the same distance, the closer object under the other letter), so that
    the answer cannot be learned from the objects' order."""
    if stage == 1:
        return [(i, DEPTH_PROMPT, None) for i in range(len(items))]
    questions = [(i, q) for i, it in enumerate(items) for q in it.questions if kinds is None or q["type"] in kinds]
    if both_orders:
        questions += [(i, swapped(q)) for i, q in questions if len(q["names"]) == 2]
    out = [(i, q["question"], q["answer"]) for i, q in questions]
    if not out:
        what = "spatial questions" if kinds is None else f"questions of kind {', '.join(kinds)}"
        raise ValueError(f"training data: no {what} (stage 2 needs scenes with object annotations)")
    return out


def check_global_batch(n_examples: int, scfg, stage, world: int) -> None:
    """Under several processes every rank needs its full batch_size of distinct examples per step."""
    if world > 1 and scfg.steps > 0 and world * scfg.batch_size > n_examples:
        raise ValueError(f"stage {stage}: {world} processes x batch_size {scfg.batch_size} = "
                         f"{world * scfg.batch_size} examples per step, but the training data has "
                         f"{n_examples}; lower the stage's batch_size")


def stage_examples(items, scfg, stage, both_orders: bool, world: int = 1):
    """(every example, the examples of the first `scfg.closer_first` steps: the "closer" questions
    alone, or every example when there is no curriculum), checked for a full global batch."""
    examples = training_examples(items, stage, both_orders)
    first = training_examples(items, stage, both_orders, ("closer",)) if stage != 1 and scfg.closer_first else examples
    check_global_batch(len(first), scfg, stage, world)  # first: examples or a subset of them
    return examples, first


def make_batch(processor, items, examples, idx, with_depth: bool, device, depth_images: int = 0) -> dict:
    """The processor's inputs for examples `idx`; with depth, the labels of `depth_images` of them
    spread evenly (0: all; the others None, so the head skips them). Example j is labelled when
    (j * depth_images) % len(idx) < depth_images, so N processes at (B, k) label the same examples
    of the global batch as one process at (N * B, N * k)."""
    chosen = [examples[i] for i in idx]
    images = [items[i].image for i, _, _ in chosen]
    answers = None if chosen[0][2] is None else [a for _, _, a in chosen]
    batch = processor(images, [p for _, p, _ in chosen], answers)
    batch = {k: v.to(device) for k, v in batch.items()}
    if with_depth:
        n, B = depth_images or len(chosen), len(chosen)
        batch["depth_labels"] = [items[i].depth.to(device) if (j * n) % B < n else None
                                 for j, (i, _, _) in enumerate(chosen)]
    return batch


def _lr_lambda(warmup_steps: int, total: int):
    def f(step):  # linear warmup then cosine to 0
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total - warmup_steps)))
    return f


# -- checkpoints (safetensors + JSON, written atomically) ----------------------------------------

CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.safetensors", "state.json")


def save_checkpoint(path: Path, model, optimizer, step: int) -> None:
    """Atomic (`common.checkpoint.atomic_checkpoint`): a temporary folder, then renames."""
    with atomic_checkpoint(path) as tmp:
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, tmp / "trainable.safetensors")
        names = {id(p): n for n, p in model.named_parameters()}
        opt = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                for k, v in optimizer.state.get(p, {}).items():
                    v = v if torch.is_tensor(v) else torch.tensor(v)
                    opt[f"{names[id(p)]}::{k}"] = v.detach().cpu().contiguous()
        save_file(opt, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step}))


def resume_folder(path: Path) -> Path | None:
    """The folder to resume the checkpoint `path` from: `path`, or `path`.old where a save was killed
    between its renames (`common.checkpoint.checkpoint_to_resume`); None when there is none."""
    return checkpoint_to_resume(path, CHECKPOINT_FILES, missing_ok=True)


def checkpoint_step(path: Path) -> int:
    """The number of steps done at the checkpoint `path` (0 when there is none; see resume_folder)."""
    folder = resume_folder(path)
    return json.loads((folder / "state.json").read_text())["step"] if folder is not None else 0


def load_checkpoint(path: Path, model, optimizer) -> int:
    weights = load_safetensors(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    for n, t in weights.items():
        if n not in params or params[n].shape != t.shape:
            raise ValueError(f"{path / 'trainable.safetensors'}: {n} does not match the model")
        with torch.no_grad():
            params[n].copy_(t)
    opt = load_safetensors(path / "optimizer.safetensors")
    for n, t in opt.items():
        pname, key = n.split("::")
        optimizer.state[params[pname]][key] = t.to(params[pname].device)
    return json.loads((path / "state.json").read_text())["step"]


def train_stage(model, processor, items, scfg, stage, out_dir: Path, seed: int, resume: bool = False,
                checkpoint_every: int = 50, log=None, desc: str | None = None, both_orders: bool = False) -> dict:
    """Train one stage in place; returns {"loss", "depth_loss", "text_loss"} of the last step (the
    global batch's). Only the main process writes (`log` is None on the others)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # stage 2 without text leaves lm_head out of the loss; DDP must then look for unused parameters
    unused = stage == 2 and not scfg.with_text
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=unused)])
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    trainable = freeze_for_stage(model, stage, scfg.train_vision)  # stage 1: the head only
    examples, first = stage_examples(items, scfg, stage, both_orders, world)
    B = scfg.batch_size
    with_depth = stage != "text"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=scfg.lr, weight_decay=0.0)
    warmup = max(1, int(scfg.warmup * scfg.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, scfg.steps))
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt = out_dir / f"stage{stage}" / "checkpoint"
    start = 0
    folder = resume_folder(ckpt) if resume else None
    if folder is not None:
        start = load_checkpoint(folder, accelerator.unwrap_model(model), optimizer)
        with warnings.catch_warnings():  # fast-forward the schedule; no optimizer step is skipped
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start):
                scheduler.step()
    if start >= scfg.steps:
        return {"loss": None, "trainable": len(trainable)}
    model.train()
    stage_seed = {1: 1, 2: 2, "text": 3}[stage]
    last = {}
    mean = lambda x: None if x is None else accelerator.reduce(x.detach(), "mean").item()  # noqa: E731 ranks' mean
    bar = tqdm(range(start, scfg.steps), desc=desc or f"stage {stage}", unit="step",
               disable=None if main else True)
    for step in bar:
        rng = np.random.default_rng([seed, stage_seed, step])
        pool = first if step < scfg.closer_first else examples
        idx = rng.choice(len(pool), size=min(world * B, len(pool)), replace=False)  # the global batch
        idx = idx[rank * B:(rank + 1) * B]  # this rank's share
        batch = make_batch(processor, items, pool, idx, with_depth, accelerator.device,
                           scfg.depth_images if stage == 2 else 0)
        tokens = None  # the global batch's answer-token count (transformers shifts the labels)
        if world > 1 and "labels" in batch:
            tokens = accelerator.reduce((batch["labels"][:, 1:] != -100).sum(), "sum")
        if stage == "text":
            out = model(**batch, predict_depth=False, num_items_in_batch=tokens)
        else:
            out = model(**batch, num_items_in_batch=tokens)
        # each rank's text CE is its token sum / the global count: x world, as DDP averages gradients
        text = None if out.text_loss is None else out.text_loss * world
        if stage == 1 or not scfg.with_text:
            loss = out.depth_loss
        elif stage == 2:
            loss = text + scfg.depth_weight * out.depth_loss
        else:
            loss = text
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if scfg.grad_clip:
            accelerator.clip_grad_norm_(params, scfg.grad_clip)
        optimizer.step()
        scheduler.step()
        last = {"loss": mean(loss), "depth_loss": mean(out.depth_loss), "text_loss": mean(text)}
        bar.set_postfix(loss=f"{last['loss']:.3f}")
        if log is not None:
            log.write(json.dumps({"stage": stage, "step": step, "lr": scheduler.get_last_lr()[0], **last}) + "\n")
            log.flush()
        if (step + 1) % checkpoint_every == 0 or step + 1 == scfg.steps:
            accelerator.wait_for_everyone()
            if main:
                save_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, step + 1)
    return {**last, "trainable": len(trainable)}


def train(cfg, resume: bool = False, stages=(1, 2)) -> Path:
    """Both stages from the config; returns the folder of the final model (+ processor)."""
    from accelerate import PartialState

    t0 = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())
    main = state.is_main_process  # only the main process writes
    out_dir = Path(cfg.out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        ensure_synthetic(cfg.data, seed=cfg.seed)
    state.wait_for_everyone()
    torch.manual_seed(cfg.seed)
    model, processor = build_model(cfg.model, seed=cfg.seed)
    model.config.silog_lambda = cfg.train.silog_lambda
    items = build_items(cfg.data, cfg.data.train_split, processor.factor, cfg.data.max_train_views, cfg.seed)
    for stage in stages:  # before any training
        scfg = cfg.train.stage1 if stage == 1 else cfg.train.stage2
        stage_examples(items, scfg, stage, cfg.data.train_both_orders, state.num_processes)
    summary = {}
    log_path = out_dir / "metrics.jsonl"
    if main and not resume:
        log_path.write_text("")
    for stage in stages:
        final = out_dir / f"stage{stage}" / "final"
        if resume and (final / "config.json").is_file():  # stage already done: continue from it
            model, processor = load_pretrained(final)
            continue
        if resume and main:  # this stage's steps after its checkpoint are done again (steps logged from 0)
            done = checkpoint_step(out_dir / f"stage{stage}" / "checkpoint")
            truncate_jsonl(log_path, done - 1, stage=stage)
        scfg = cfg.train.stage1 if stage == 1 else cfg.train.stage2
        model.config.depth_loss_weight = scfg.depth_weight
        with open(log_path, "a") if main else nullcontext() as log:
            summary[f"stage{stage}"] = train_stage(model, processor, items, scfg, stage, out_dir, cfg.seed, resume,
                                                   cfg.train.checkpoint_every, log,
                                                   both_orders=cfg.data.train_both_orders)
        if main:
            save_pretrained(model, processor, final)
        state.wait_for_everyone()
    final = out_dir / f"stage{stages[-1]}" / "final"
    if main:
        (out_dir / "results.json").write_text(json.dumps({"final_model": str(final), "seconds": time.time() - t0,
                                                          "train_items": len(items), **summary}, indent=1))
    return final


def main(argv=None):
    ap = OneLineParser("depthvlm.train", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint under out_dir")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. train.stage1.steps=10 seed=1")
    args = ap.parse_args(argv)
    with one_line_errors("depthvlm.train"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        final = train(cfg, resume=args.resume)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(final)


if __name__ == "__main__":
    main()
