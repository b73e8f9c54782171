"""Train 3D-IDE (or one of its ablations) with Hugging Face accelerate.

    python -m ide3d.train --config ide3d/configs/tiny.yaml train.out_dir=runs/full [--resume]
    accelerate launch --num_processes 2 -m ide3d.train ...           # GPUs
    torchrun --nproc_per_node 2 -m ide3d.train ...                   # 2 processes on a CPU (gloo)

Batches: a step holds `train.scenes_per_batch` scenes per process, each with
`train.queries_per_scene` of its queries; the video encoder and the training-only losses run once
per scene. Sharding: step s fills scene slots s*G .. s*G + G - 1 (G = processes x scenes_per_batch)
from epoch-wise permutations of the scenes, each slot drawing its queries with its own generator (a
pure function of the seed), and rank r takes its own slots; every loss is a mean over samples and
DDP averages gradients, so N processes follow the loss curve of one process with N times the
scenes per batch. Only the main process writes:
the teacher, its feature cache, `metrics.jsonl`, checkpoints and the final model.

Checkpoints (`<out>/checkpoint`, every `train.checkpoint_every` steps and at the end; written to a
temporary folder and renamed) hold the model, the training-only modules, the AdamW state (all
safetensors) and the step (JSON). `--resume` continues from it (from `checkpoint.old` where a kill
fell between a save's two renames), cuts `metrics.jsonl` back to it and reaches the same weights as
an uninterrupted run. `<out>/final` is the inference model alone.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import save_file
from tqdm import tqdm

from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    load_safetensors,
    save_optimizer_state,
)
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.results import truncate_jsonl
from ide3d.config import Config, load_config, to_dict
from ide3d.consistency import neighbour_frames
from ide3d.data import collate, ensure_data, items, load_scenes
from ide3d.model import build_model, load_pretrained, save_pretrained
from ide3d.supervision import Supervision, Trainee
from ide3d.teacher import cached_features, load_teacher, teacher_id, train_teacher
from ide3d.verifier import Verifier, geometric_loss


def lr_at(step: int, cfg: Config, base: float) -> float:
    """Linear warm-up over `train.warmup` of the steps, then cosine decay to 0 (official schedule)."""
    total = cfg.train.steps
    warm = max(1, int(cfg.train.warmup * total))
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def global_batch(
    step: int, scenes: int, per_scene: int, pool: dict, seed: int
) -> list[list[tuple[int, int]]]:
    """The global batch of `step`: `scenes` scene slots, each with `per_scene` of its training
    queries. Scenes follow epoch-wise permutations of the scenes in `pool` ({scene: [(scene, query)]})
    and each slot draws its queries with its own generator: a pure function of (seed, step), so any
    number of processes, each taking its own slots, sees the same samples."""
    keys = sorted(pool)
    out, perms = [], {}
    for k in range(step * scenes, (step + 1) * scenes):
        epoch = k // len(keys)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, 11, epoch]).permutation(len(keys))
        own = pool[keys[perms[epoch][k % len(keys)]]]
        pick = np.random.default_rng([seed, 17, k]).choice(len(own), per_scene, replace=len(own) < per_scene)
        out.append([own[int(j)] for j in pick])
    return out


def teacher_features(cfg: Config, scenes, accelerator) -> tuple[list | None, int | None]:
    """Frozen teacher features per training scene (main process trains the builtin teacher when
    absent and fills the cache; the others wait and read it)."""
    s = cfg.supervision
    if s.global_weight <= 0:
        return None, None
    with accelerator.main_process_first():
        if s.teacher == "builtin" and not (Path(s.teacher_path) / "config.json").is_file():
            if accelerator.is_main_process:
                train_teacher(cfg, scenes, Path(s.teacher_path), progress=True)
        teacher = load_teacher(s)
        feats = cached_features(teacher, scenes, Path(s.teacher_path + "_features") / teacher_id(s))
    return feats, int(teacher.feature_dim)


def parameter_groups(trainee: Trainee, cfg: Config) -> list[dict]:
    """The vision tower and the verifier at train.vision_lr, everything else at train.lr."""
    vision, rest = [], []
    for name, p in trainee.named_parameters():
        (vision if name.startswith(("model.model.vision_tower.", "supervision.verifier.")) else rest).append(
            p
        )
    return [
        {"params": vision, "lr": cfg.train.vision_lr, "base_lr": cfg.train.vision_lr},
        {"params": rest, "lr": cfg.train.lr, "base_lr": cfg.train.lr},
    ]


CHECKPOINT_FILES = ("model/config.json", "model/ide3d_processor.json", "supervision.safetensors",
                    "optimizer.safetensors", "trainer_state.json")


def save_checkpoint(trainee: Trainee, processor, optimizer, step: int, out: Path) -> None:
    """Atomic (`common.checkpoint.atomic_checkpoint`): a temporary folder, then renames."""
    with atomic_checkpoint(out / "checkpoint") as tmp:
        save_pretrained(trainee.model, processor, tmp / "model")
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in trainee.supervision.state_dict().items()},
            str(tmp / "supervision.safetensors"),
        )
        save_optimizer_state(optimizer, tmp / "optimizer.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))


def train(cfg: Config, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> Path:
    """Train per `cfg`; returns `<out>/final`. `stop_at` ends the run after that step as a kill
    would (tests of --resume)."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    out = Path(cfg.train.out_dir)
    # checkpoint, or checkpoint.old where a save was killed between its renames; checked before any work
    ckpt = checkpoint_to_resume(out / "checkpoint", CHECKPOINT_FILES) if resume else None
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            ensure_data(cfg.data)
    model, processor = build_model(cfg.model, seed=cfg.train.seed)
    scenes = load_scenes(cfg.data, cfg.data.train_split, processor=processor)
    pool = {}
    for it in items(scenes, trainable=True):
        pool.setdefault(it[0], []).append(it)
    if not pool:
        raise ValueError(f"data ({cfg.data.source}): no training queries with labels")
    feats, teacher_dim = teacher_features(cfg, scenes, accelerator)
    start = 0
    if resume:
        model, processor = load_pretrained(ckpt / "model")
        start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    supervision = Supervision(
        cfg.supervision,
        model.config.vision_config.hidden_size,
        model.config.text_config.hidden_size,
        teacher_dim,
    )
    if resume:
        supervision.load_state_dict(load_safetensors(ckpt / "supervision.safetensors"))
    trainee = Trainee(model, supervision, processor.video_token_id)
    optimizer = torch.optim.AdamW(parameter_groups(trainee, cfg), weight_decay=cfg.train.weight_decay)
    if resume:
        load_optimizer_state(optimizer, ckpt / "optimizer.safetensors")
    trainee, optimizer = accelerator.prepare(trainee, optimizer)
    trainee.train()
    U, Q = cfg.train.scenes_per_batch, cfg.train.queries_per_scene
    world, rank = accelerator.num_processes, accelerator.process_index
    log = None
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        if resume:  # the steps after the checkpoint are done again: drop their lines
            truncate_jsonl(out / "metrics.jsonl", start)
        log = open(out / "metrics.jsonl", "a" if resume else "w")
    bar = tqdm(
        range(start, cfg.train.steps),
        desc=f"ide3d {out.name}",
        initial=start,
        total=cfg.train.steps,
        disable=not (progress and accelerator.is_main_process),
    )
    t0 = time.time()
    for step in bar:
        slots = global_batch(step, U * world, Q, pool, cfg.train.seed)
        mine = list(range(rank * U, (rank + 1) * U))  # this process's scene slots
        batch = collate(scenes, [it for k in mine for it in slots[k]], processor)
        frames = batch["depth"].shape[1]
        batch["neighbours"] = [
            neighbour_frames(
                frames, cfg.supervision.cross_view_range, np.random.default_rng([cfg.train.seed, 19, step, i])
            )
            for i in batch["scene_ids"]
        ]  # per scene of the batch
        if feats is not None:
            batch["teacher"] = torch.stack([feats[i] for i in batch["scene_ids"]])  # [U, F, h, w, D]
        batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch["membership"] = [m.to(accelerator.device) for m in batch["membership"]]
        batch["boxes"] = [b.to(accelerator.device) for b in batch["boxes"]]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg, group["base_lr"])
        total, parts = trainee(batch)
        loss = total.mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; lower train.lr")
        accelerator.backward(loss)
        if cfg.train.grad_clip > 0:
            accelerator.clip_grad_norm_(trainee.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logged = {
            k: accelerator.gather(v.detach()).mean().item() for k, v in [("loss", total), *parts.items()]
        }
        if log is not None:
            log.write(
                json.dumps(
                    {
                        "step": step + 1,
                        **logged,
                        "lr": lr_at(step, cfg, cfg.train.lr),
                        "seconds": round(time.time() - t0, 2),
                    }
                )
                + "\n"
            )
            log.flush()
        bar.set_postfix(loss=f"{logged['loss']:.3f}")
        if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == cfg.train.steps:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(accelerator.unwrap_model(trainee), processor, optimizer, step + 1, out)
        if stop_at is not None and step + 1 >= stop_at:
            break
    if log is not None:
        log.close()
    final = out / "final"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and (stop_at is None or stop_at >= cfg.train.steps):
        save_pretrained(accelerator.unwrap_model(trainee).model, processor, final)
    accelerator.wait_for_everyone()
    return final


def pretrain_verifier(cfg: Config, out: Path, progress: bool = True) -> Path:
    """The strong verifier: the same decoder trained to convergence on the train split's depth, on
    the features of the vision tower the VLM starts from (frozen), saved to `out` for
    `supervision.verifier_init`."""
    ensure_data(cfg.data)
    model, processor = build_model(cfg.model, seed=cfg.train.seed)  # the same initial encoder as train()
    tower = model.model.vision_tower.eval().requires_grad_(False)
    scenes = load_scenes(cfg.data, cfg.data.train_split, processor=processor)
    s = cfg.supervision
    verifier = Verifier(
        model.config.vision_config.hidden_size,
        s.verifier_dim,
        s.verifier_features,
        tuple(s.verifier_channels),
        tuple(s.verifier_layers),
    )
    opt = torch.optim.AdamW(verifier.parameters(), lr=cfg.train.lr, weight_decay=0.0)
    g, S = model.grid, processor.image_size
    steps = cfg.train.verifier_steps
    for step in tqdm(range(steps), desc="ide3d strong verifier", disable=not progress):
        idx = np.random.default_rng([cfg.train.seed, 13, step]).choice(
            len(scenes), size=min(2, len(scenes)), replace=False
        )
        pixels = torch.cat([scenes[i].inputs.pixel_values for i in idx])  # [2F, 3, S, S]
        gt = torch.cat([scenes[i].inputs.depth for i in idx])  # [2F, S, S]
        with torch.no_grad():
            hidden = tower(pixels, output_hidden_states=True).hidden_states
        depth, conf = verifier(hidden, g, S)
        loss = geometric_loss(depth, conf, gt, s.conf_alpha, s.grad_scales, s.quantile)
        for group in opt.param_groups:
            group["lr"] = cfg.train.lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    verifier.save_pretrained(out)
    (out / "pretraining.json").write_text(json.dumps({"steps": steps, "final_loss": loss.item()}, indent=1))
    return out


def main(argv=None) -> None:
    ap = OneLineParser("ide3d.train", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/checkpoint")
    ap.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    add_threads_flag(ap)
    ap.add_argument(
        "overrides", nargs="*", help="key=value, e.g. train.steps=200 supervision.global_weight=0"
    )
    args = ap.parse_args(argv)
    with one_line_errors("ide3d.train"):
        set_threads(args.threads)
        overrides = list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else [])
        cfg = load_config(args.config, overrides)
        final = train(cfg, resume=args.resume)
    print(final)


if __name__ == "__main__":
    main()
