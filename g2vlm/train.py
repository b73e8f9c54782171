"""Train G2VLM in two stages with Hugging Face accelerate (G2VLM text, "Training Stages").

    python -m g2vlm.train --config g2vlm/configs/tiny.yaml train.out_dir=runs/g2vlm [--resume]
    torchrun --nproc_per_node 2 -m g2vlm.train ... train.stage2.scenes_per_batch=1   # 2 CPU processes
    python -m g2vlm.train ... --stages 2 --init runs/stage1/stage1/final             # from a stage-1 model

Stage 1 (geometry pre-training): the depth head and the RGB-only reconstruction network, on
L_depth + L_normal + L_smooth + L_recon; nothing else changes. Stage 2 (joint): every parameter, on
all losses (`objective.py`). A step holds `scenes_per_batch` scenes per process, each with
`queries_per_scene` of its queries; scene slots follow epoch-wise permutations of the scenes and each
slot draws its queries from its own generator (a pure function of the seed), rank r taking its own
slots, so N processes follow one process with N times the scenes. Only the main process writes.
Checkpoints: `<out>/stage<n>/checkpoint` (model, AdamW state as safetensors, step as JSON), written
atomically every `train.checkpoint_every` steps and at the end; `--resume` continues the unfinished
stage, cuts `metrics.jsonl` back and reaches the same weights. `<out>/stage<n>/final` is the model.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from tqdm import tqdm

from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    save_optimizer_state,
)
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.results import truncate_jsonl
from g2vlm.config import Config, load_config, to_dict
from g2vlm.data import ensure_data, load_scenes
from g2vlm.model import G2VLM, build_model
from g2vlm.objective import Trainee

STAGE1_MODULES = ("geometry.depth_head.", "geometry.recon.")


def set_trainable(model: G2VLM, stage: int) -> list:
    """Stage 1: the depth head and the reconstruction network; stage 2: everything. -> trainable params."""
    for name, p in model.named_parameters():
        p.requires_grad = stage == 2 or name.startswith(STAGE1_MODULES)
    return [p for p in model.parameters() if p.requires_grad]


def lr_at(step: int, total: int, base: float, warmup: float) -> float:
    warm = max(1, int(warmup * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def global_batch(
    step: int, slots: int, per_scene: int, scenes: list, seed: int
) -> list[tuple[int, list[int]]]:
    """Step `step`'s scene slots: (scene index, indices of `per_scene` of its queries) each."""
    out, perms = [], {}
    for k in range(step * slots, (step + 1) * slots):
        epoch = k // len(scenes)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(len(scenes))
        i = int(perms[epoch][k % len(scenes)])
        n = len(scenes[i].queries)
        pick = np.random.default_rng([seed, 17, k]).choice(n, per_scene, replace=n < per_scene) if n else []
        out.append((i, [int(j) for j in pick]))
    return out


CHECKPOINT_FILES = ("model/g2vlm.json", "optimizer.safetensors", "trainer_state.json")


def save_checkpoint(model: G2VLM, optimizer, step: int, folder: Path) -> None:
    """Atomic (`common.checkpoint.atomic_checkpoint`): a temporary folder, then renames."""
    with atomic_checkpoint(folder / "checkpoint") as tmp:
        model.save_pretrained(tmp / "model")
        save_optimizer_state(optimizer, tmp / "optimizer.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))


def resume_folder(folder: Path) -> Path | None:
    """The stage folder's checkpoint to resume from: checkpoint, or checkpoint.old where a save was
    killed between its renames (`common.checkpoint.checkpoint_to_resume`); None when there is none."""
    return checkpoint_to_resume(folder / "checkpoint", CHECKPOINT_FILES, missing_ok=True)


def train_stage(
    model: G2VLM,
    scenes,
    cfg: Config,
    stage: int,
    accelerator,
    log,
    resume: bool,
    progress: bool,
    stop_at: int | None,
) -> bool:
    """One stage in place; returns False when stopped early by `stop_at`."""
    s = cfg.train.stage1 if stage == 1 else cfg.train.stage2
    folder = Path(cfg.train.out_dir) / f"stage{stage}"
    params = set_trainable(model, stage)
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
    start = 0
    ckpt = resume_folder(folder) if resume else None
    if ckpt is not None:
        start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
        load_optimizer_state(optimizer, ckpt / "optimizer.safetensors")
    trainee, optimizer = accelerator.prepare(Trainee(model, cfg.train, stage), optimizer)
    trainee.train()
    world, rank = accelerator.num_processes, accelerator.process_index
    U = s.scenes_per_batch
    bar = tqdm(
        range(start, s.steps),
        desc=f"g2vlm stage {stage}",
        initial=start,
        total=s.steps,
        disable=not (progress and accelerator.is_main_process),
    )
    t0 = time.time()
    for step in bar:
        slots = global_batch(step, U * world, s.queries_per_scene, scenes, cfg.train.seed)[
            rank * U : (rank + 1) * U
        ]
        batch_scenes = [scenes[i].to(accelerator.device) for i, _ in slots]
        queries = [[scenes[i].queries[j] for j in picks] for i, picks in slots]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, s.steps, s.lr, s.warmup)
        total, parts = trainee(batch_scenes, queries)
        loss = total.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"stage {stage} step {step}: loss is {loss.item()}; lower the learning rate"
            )
        accelerator.backward(loss)
        if cfg.train.grad_clip > 0:
            accelerator.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logged = {
            k: accelerator.gather(v.detach()).mean().item() for k, v in [("loss", total), *parts.items()]
        }
        if log is not None:
            log.write(
                json.dumps(
                    {"stage": stage, "step": step + 1, **logged, "seconds": round(time.time() - t0, 2)}
                )
                + "\n"
            )
            log.flush()
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == s.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(accelerator.unwrap_model(trainee).model, optimizer, step + 1, folder)
        if stop_at is not None and step + 1 >= stop_at:
            return False
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save_pretrained(folder / "final")
    accelerator.wait_for_everyone()
    return True


def train(
    cfg: Config,
    resume: bool = False,
    stages=(1, 2),
    init: str | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> Path:
    """Train the stages in `stages` (from `init`, a saved model, when given); returns the last stage's
    final folder."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    out = Path(cfg.train.out_dir)
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_data(cfg.data)
    scenes = load_scenes(cfg, cfg.data.train_split)
    model = build_model(cfg.model, seed=cfg.train.seed)
    if init:  # weights of a saved model (e.g. stage 1) under this run's settings (e.g. an ablation's)
        model.load_state_dict(G2VLM.from_pretrained(init).state_dict())
    log = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        log = open(out / "metrics.jsonl", "a" if resume else "w")  # noqa: SIM115 (closed below)
    try:
        for stage in stages:
            folder = out / f"stage{stage}"
            if resume and (folder / "final" / "g2vlm.json").is_file():
                model = G2VLM.from_pretrained(folder / "final")
                continue
            ckpt = resume_folder(folder) if resume else None
            start = 0
            if ckpt is not None:
                model = G2VLM.from_pretrained(ckpt / "model")
                start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
            if resume and log is not None:  # this stage's steps after its checkpoint are done again
                log.close()
                truncate_jsonl(out / "metrics.jsonl", start, stage=stage)
                log = open(out / "metrics.jsonl", "a")  # noqa: SIM115
            if not train_stage(model, scenes, cfg, stage, accelerator, log, resume, progress, stop_at):
                break
    finally:
        if log is not None:
            log.close()
    return out / f"stage{stages[-1]}" / "final"


def main(argv=None) -> None:
    ap = OneLineParser(
        "g2vlm.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="a YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the unfinished stage from its checkpoint in train.out_dir")
    ap.add_argument("--stages", default="1,2", help="which stages to run, e.g. 1 or 2 or 1,2")
    ap.add_argument("--init", default=None, help="start from this saved G2VLM folder")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. train.stage2.steps=200")
    args = ap.parse_args(argv)
    with one_line_errors("g2vlm.train"):
        set_threads(args.threads)
        stages = tuple(int(s) for s in args.stages.split(","))
        if not stages or any(s not in (1, 2) for s in stages):
            raise ValueError(f"--stages: expected 1, 2 or 1,2, got {args.stages!r}")
        cfg = load_config(args.config, args.overrides)
        print(train(cfg, resume=args.resume, stages=stages, init=args.init))


if __name__ == "__main__":
    main()
