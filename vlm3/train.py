"""Train VLM3: next-token cross-entropy on the answers of a task mixture, with Hugging Face accelerate.

    python -m vlm3.train --config vlm3/configs/tiny.yaml train.steps=2000 data.unify_focal=false
    python -m vlm3.train --config vlm3/configs/tiny.yaml --resume      # continue from the checkpoint
    accelerate launch --num_processes 2 -m vlm3.train ...              # GPUs
    torchrun --nproc_per_node 2 -m vlm3.train ...                      # 2 processes on a CPU (gloo)

Step s's global batch holds mixture items s*G .. s*G+G-1 (G = processes x train.batch_size;
`common.datasets.MixtureDataset`: a pure function of the seed and the index) and rank r takes its
r-th B of them; the loss is the mean over the global batch's answer tokens (each rank's token sum
over the global count) and DDP averages gradients, so N processes follow one process with N times
the batch. Only the main process writes. The learning rate is a function of the step and the model
has no dropout, so `--resume` reaches the same weights as an uninterrupted run. Checkpoints (model,
tokenizer, image processor, AdamW state as safetensors, step) are written atomically every
`train.checkpoint_every` steps and at the end (a kill between a save's two renames leaves
`checkpoint.old`, which `--resume` continues from); `metrics.jsonl` gets one line per step
(`--resume` cuts it back to the checkpoint's step first, so no step is logged twice).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    save_optimizer_state,
)
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.datasets import MixtureDataset
from common.results import truncate_jsonl
from common.synthetic import generate_split
from vlm3.config import Config, load_config, to_dict
from vlm3.data import TASKS, QuestionBuilder, TaskDataset, TaskSettings
from vlm3.model import VLM3
from vlm3.scenes import SceneCache

SETTINGS_FILE = "vlm3_settings.json"  # read by vlm3.demo.Predictor


def test_root(cfg: Config) -> Path:
    """The root of the held-out split: data.test_root, or data.root when that is None."""
    return Path(cfg.data.test_root or cfg.data.root)


def ensure_data(cfg: Config) -> None:
    """Generate the synthetic splits (as `make data` does) when they are absent."""
    for root, split in ((Path(cfg.data.root), cfg.data.train_split), (test_root(cfg), cfg.data.test_split)):
        if not (root / split / "index.json").is_file():
            n = cfg.data.generate_scenes.get(split)
            if n is None:
                raise ValueError(
                    f"{root / split}: no index.json, and data.generate_scenes has no entry for {split!r}"
                )
            generate_split(root, split, scenes=int(n), views=cfg.data.views, size=cfg.data.size, seed=0)


def task_settings(cfg: Config, training: bool = True) -> TaskSettings:
    """Question settings; held-out questions (`training=False`) ask one pixel per question, one
    question per sample."""
    d = cfg.data
    return TaskSettings(
        focal_depth=d.focal_depth,
        focal_pose=d.focal_pose,
        unify_focal=d.unify_focal,
        depth_target=d.depth_target,
        depth_max_points=d.depth_max_points,
        think=d.think,
        marker=d.marker,
        min_object_pixels=d.min_object_pixels,
        corr_max_points=d.corr_max_points if training else 1,
        turns=dict(d.turns) if training else {},
    )


def scene_cache(cfg: Config, split: str = "train") -> SceneCache:
    """The scenes of the training split (seeded by train.seed, at most data.max_train_scenes) or of
    the test split (seeded by eval.seed: the held-out questions' zooms)."""
    if split == "train":
        return SceneCache(
            cfg.data.root,
            cfg.data.train_split,
            zoom=cfg.data.zoom,
            seed=cfg.train.seed,
            max_scenes=cfg.data.max_train_scenes,
        )
    if split == "test":
        return SceneCache(test_root(cfg), cfg.data.test_split, zoom=cfg.data.zoom, seed=cfg.eval.seed)
    raise ValueError(f"scene_cache: split {split!r}; expected 'train' or 'test'")


def build_mixture(
    cfg: Config, cache: SceneCache | None = None, processes: int = 1, builder: QuestionBuilder | None = None
) -> MixtureDataset:
    """The training mixture over tasks (VLM3 Sec. 3.3: data mixture and scaling), long enough for
    `processes` ranks of train.batch_size items per step; its questions come from `builder`
    (default: a `QuestionBuilder` on `cache` with `task_settings(cfg)`)."""
    for task in cfg.data.mixture:
        if task not in TASKS:
            raise ValueError(f"data.mixture: unknown task {task!r}; expected some of {TASKS}")
    builder = builder or QuestionBuilder(cache or scene_cache(cfg), task_settings(cfg))
    for task, n in cfg.data.turns.items():
        if task not in TASKS or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"data.turns: expected {{task: questions per sample >= 1}} for tasks of {TASKS}, "
                f"got {task!r}: {n!r}"
            )
    weights = {t: float(w) for t, w in cfg.data.mixture.items()}
    datasets = {}
    for t in weights:
        if t not in cfg.data.samples:
            raise ValueError(f"data.samples: no entry for task {t!r} of data.mixture")
        datasets[t] = TaskDataset(
            builder, t, int(cfg.data.samples[t]), seed=cfg.train.seed, turns=int(cfg.data.turns.get(t, 1))
        )
    length = cfg.train.steps * cfg.train.batch_size * processes
    return MixtureDataset(datasets, weights, length=length, seed=cfg.train.seed)


def batches(mixture: MixtureDataset, cfg: Config, start: int = 0, world: int = 1, rank: int = 0):
    """This rank's training batches of steps start .. train.steps - 1: lists of (task, Example).
    Step s's global batch is items s * G .. (s + 1) * G - 1 of the mixture (G = world x B); rank r
    takes its r-th B of them. Built in `train.workers` processes if > 0."""
    B, workers = cfg.train.batch_size, cfg.train.workers
    if workers < 0:
        raise ValueError(f"train.workers = {workers}: expected 0 (no worker processes) or more")
    if len(mixture) < cfg.train.steps * B * world:
        raise ValueError(f"mixture: {len(mixture)} items, expected train.steps x train.batch_size x processes "
                         f"= {cfg.train.steps * B * world}")
    first = lambda s: (s * world + rank) * B  # noqa: E731  this rank's first item of step s
    if workers == 0:
        return ([mixture[first(s) + b] for b in range(B)] for s in range(start, cfg.train.steps))
    loader = torch.utils.data.DataLoader(
        mixture,
        batch_size=B,
        sampler=[first(s) + b for s in range(start, cfg.train.steps) for b in range(B)],
        num_workers=workers,
        collate_fn=list,  # a batch stays a list of (task, Example)
    )
    return iter(loader)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up, then cosine decay to 10% (a function of the step, so resuming is exact)."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    progress = (step - t.warmup) / max(1, t.steps - t.warmup)
    return t.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def settings_dict(cfg: Config) -> dict:
    """The data settings inference needs, saved beside the weights (`vlm3.demo.SETTINGS_FILE`)."""
    d = cfg.data
    return {
        "focal_depth": d.focal_depth,
        "focal_pose": d.focal_pose,
        "unify_focal": d.unify_focal,
        "depth_target": d.depth_target,
        "think": d.think,
        "marker": d.marker,
    }


CHECKPOINT_FILES = ("config.json", "preprocessor_config.json", "optimizer.safetensors", "trainer_state.json")


def save_checkpoint(vlm: VLM3, opt, step: int, out_dir: Path, settings: dict | None = None) -> Path:
    """Write out_dir/checkpoint atomically (`common.checkpoint.atomic_checkpoint`): a temporary
    folder, then renames."""
    with atomic_checkpoint(out_dir / "checkpoint") as tmp:
        vlm.save_pretrained(tmp)
        save_optimizer_state(opt, tmp / "optimizer.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        (tmp / SETTINGS_FILE).write_text(json.dumps(settings or {}, indent=1))
    return out_dir / "checkpoint"


def train(
    cfg: Config,
    resume: bool = False,
    progress: bool = True,
    mixture: MixtureDataset | None = None,
    stop_at: int | None = None,
) -> VLM3:
    """Train (or resume) per `cfg`; `stop_at` ends the run early after that step, as a kill would
    (after its checkpoint, if one falls there), to test resuming."""
    out = Path(cfg.train.out_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        ensure_data(cfg)
    accelerator.wait_for_everyone()
    mixture = mixture or build_mixture(cfg, processes=world)
    start = 0
    if resume:  # checkpoint, or checkpoint.old where a save was killed between its renames
        ckpt = checkpoint_to_resume(out / "checkpoint", CHECKPOINT_FILES)
        vlm = VLM3.from_pretrained(ckpt)
        start = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    else:
        vlm = VLM3.build(cfg.model, seed=cfg.train.seed)
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    if resume:
        load_optimizer_state(opt, ckpt / "optimizer.safetensors")
    vlm.model, opt = accelerator.prepare(vlm.model, opt)
    vlm.model.train()
    log = None
    if main:  # only the main process writes
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
        if resume:  # the steps after the checkpoint are done again: drop their lines
            truncate_jsonl(out / "metrics.jsonl", start)
        log = open(out / "metrics.jsonl", "a" if resume else "w")
    bar = tqdm(
        range(start, cfg.train.steps),
        desc="vlm3 train",
        disable=not (progress and main),
        initial=start,
        total=cfg.train.steps,
    )
    t0 = time.time()
    for step, items in zip(bar, batches(mixture, cfg, start, world, rank)):
        examples = [ex for _, ex in items]
        batch = vlm.encode(
            [e.images for e in examples],
            [e.prompt for e in examples],
            [e.answer for e in examples],
            [e.turns for e in examples],
        )
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        # the mean over the global batch's answer tokens: each rank divides its token sum by the
        # global count, times the world size (DDP averages gradients over the ranks)
        tokens = accelerator.reduce((batch["labels"][:, 1:] != -100).sum().to(accelerator.device), "sum")
        loss = vlm.loss(batch, num_items_in_batch=tokens) * world
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; lower train.lr")
        accelerator.backward(loss)
        loss = accelerator.reduce(loss.detach(), "sum") / world  # the global batch's mean
        if cfg.train.grad_clip > 0:
            accelerator.clip_grad_norm_(vlm.model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        counts = torch.tensor([sum(1 for n, _ in items if n == t) for t in cfg.data.mixture])
        counts = accelerator.reduce(counts.to(accelerator.device), "sum").tolist()  # over the global batch
        if log is not None:
            log.write(
                json.dumps(
                    {
                        "step": step + 1,
                        "loss": loss.item(),
                        "lr": lr_at(step, cfg),
                        "tasks": dict(zip(cfg.data.mixture, counts)),
                        "seconds": round(time.time() - t0, 2),
                    }
                )
                + "\n"
            )
            log.flush()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.train.checkpoint_every == 0 or step + 1 == cfg.train.steps:
            accelerator.wait_for_everyone()
            if main:  # save the bare model; training goes on through the wrapper
                wrapped, vlm.model = vlm.model, accelerator.unwrap_model(vlm.model)
                save_checkpoint(vlm, opt, step + 1, out, settings_dict(cfg))
                vlm.model = wrapped
        if stop_at is not None and step + 1 >= stop_at:
            break
    if log is not None:
        log.close()
    vlm.model = accelerator.unwrap_model(vlm.model)
    vlm.model.eval()
    return vlm


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.train", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                    help="YAML config (default: configs/tiny.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/checkpoint")
    ap.add_argument("--seed", type=int, default=None, help="overrides train.seed")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. train.steps=200")
    args = ap.parse_args(argv)
    overrides = list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    with one_line_errors("vlm3.train"):
        set_threads(args.threads)
        cfg = load_config(args.config, overrides)
        train(cfg, resume=args.resume)
    print(f"checkpoint: {Path(cfg.train.out_dir) / 'checkpoint'}")


if __name__ == "__main__":
    main()
