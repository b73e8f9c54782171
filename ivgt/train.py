"""Train IVGT: `python -m ivgt.train --config ivgt/configs/tiny.yaml [--resume] [key=value ...]`.

Each step draws `train.batch_size` scenes per process from the mixture (synthetic indoor /
outdoor by default); for each it picks `input_views` views for the model and `target_views` extra
views, and renders random rays of all of them. Stage 1 (steps < stage2_start): RGB, depth and
normal rendering losses, the camera loss and the depth-head loss; stage 2 adds the eikonal term
(IVGT's two stages). The loss is the mean over the step's scenes.

Processes (`torchrun --nproc_per_node N -m ivgt.train ...` on a CPU, `accelerate launch
--num_processes N` on GPUs): step s's global batch is mixture items s*G .. s*G+G-1 (G = N x
batch_size) and rank r takes its r-th batch_size of them. Every random choice for item i comes
from a generator seeded by (seed, i), so the global batch is a function of the seed and the step
whichever rank draws it, and N processes follow one process at N x batch_size. The training step
calls the model's methods beyond forward (the scene, its rendering), which a DDP wrapper would not
see, so gradients are averaged over the processes by hand before the (identical) AdamW step; only
the main process writes. `--resume` from a checkpoint reaches the weights of an uninterrupted run
(and `metrics.jsonl`, cut back to the checkpoint's step first, the log).

Checkpoint (`<output_dir>/checkpoint`, written atomically every `train.checkpoint_every` steps and
at the end): the model (config.json + diffusion_pytorch_model.safetensors), the AdamW state
(optimizer.safetensors, `common.checkpoint`) and trainer_state.json (the step and torch's CPU RNG
state as a list of bytes). No pickle: nothing is written with torch.save. A kill between the save's
two renames leaves `checkpoint.old`, which `--resume` continues from (`checkpoint_to_resume`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from tqdm import tqdm

from common.cameras import pixel_rays
from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    load_safetensors,
    save_optimizer_state,
)
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.errors import CheckpointError
from common.results import truncate_jsonl
from ivgt.config import Config, load_config
from ivgt.data import build_mixture, canonical_views
from ivgt.losses import camera_loss, confidence_depth_loss, normal_loss
from ivgt.model import IVGT
from ivgt.render import eikonal_loss




def step_losses(model: IVGT, batch: dict, cfg: Config, step: int, gen: torch.Generator) -> dict:
    """All losses of one training step on one canonical batch (`canonical_views` output)."""
    tc = cfg.train
    n_in = tc.input_views
    images = batch["images"]  # [V, 3, H, W]
    V, _, H, W = images.shape
    out = model(images[None, :n_in])
    losses = {"camera": camera_loss([p[0] for p in out["pose_enc_list"]], batch["w2c"][:n_in], batch["K"][:n_in], H, W)}
    losses["depth_head"] = confidence_depth_loss(out["depth"][0], out["depth_conf"][0], batch["depth"][:n_in], tc.conf_alpha)
    use_gt = bool(torch.rand((), generator=gen) < tc.gt_camera_prob)
    scene = model.scene_from_outputs(images[None, :n_in], out, K=batch["K"][:n_in] if use_gt else None,
                                     w2c=batch["w2c"][:n_in] if use_gt else None)
    # Random rays of every view (inputs and novel targets), with ground-truth cameras.
    origins, dirs = pixel_rays(batch["K"], batch["w2c"], H, W)  # [V, H, W, 3]
    pick = torch.stack([torch.randperm(H * W, generator=gen)[: tc.rays_per_view] for _ in range(V)])  # [V, r]
    take = lambda x: torch.stack([x[v].reshape(H * W, -1)[pick[v]] for v in range(V)])  # noqa: E731 [V, r, C]
    o, d = take(origins).reshape(-1, 3), take(dirs).reshape(-1, 3)
    rgb_gt = take(images.permute(0, 2, 3, 1)).reshape(-1, 3)
    depth_gt = take(batch["depth"][..., None]).reshape(-1)
    R = batch["w2c"][:, :3, :3]  # [V, 3, 3]
    r = model.render_train = scene.render_rays(o, d, create_graph=True)
    view = torch.arange(V).repeat_interleave(tc.rays_per_view)  # [V*r]
    z = r["distance"] * (d * R[view, 2]).sum(-1)  # rendered z-depth
    valid = depth_gt > 0
    losses["rgb"] = (r["rgb"] - rgb_gt).abs().mean()
    losses["depth"] = (z - depth_gt).abs()[valid].mean() if valid.any() else z.sum() * 0
    if batch["normals"] is not None:
        n_cam = (R[view] @ r["normal"][..., None])[..., 0]  # [V*r, 3] camera frame
        losses["normal"] = normal_loss(n_cam, take(batch["normals"].permute(0, 2, 3, 1)).reshape(-1, 3))
    stage2 = step >= tc.stage2_start
    losses["eikonal"] = eikonal_loss(r["gradients"]) if stage2 else torch.zeros(())
    weights = {"camera": tc.w_camera, "depth_head": tc.w_depth_head, "rgb": tc.w_rgb, "depth": tc.w_depth,
               "normal": tc.w_normal, "eikonal": tc.w_eikonal if stage2 else 0.0}
    losses["total"] = sum(weights[k] * v for k, v in losses.items())
    return losses


def draw_batch(mixture, cfg: Config, index: int, gen: torch.Generator, size) -> dict:
    """The canonical views of mixture item `index`: its scene, views at random."""
    _, sample = mixture[index]
    n = cfg.train.input_views + cfg.train.target_views
    if sample.num_views < n:
        raise ValueError(f"scene {sample.scene_id}: {sample.num_views} views, the config needs {n}")
    views = torch.randperm(sample.num_views, generator=gen)[:n].tolist()
    return canonical_views(sample, views, size)


def average_gradients(params, accelerator) -> None:
    """Each gradient's mean over the processes, in one all-reduce. A parameter that no process
    reached keeps grad None (AdamW then leaves it alone, as in one process)."""
    params = list(params)
    reached = torch.tensor([float(p.grad is not None) for p in params], device=accelerator.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params] + [reached])
    flat = accelerator.reduce(flat, "sum")
    grads, reached = flat[: -len(params)].split([p.numel() for p in params]), flat[-len(params):]
    for p, g, n in zip(params, grads, reached.tolist()):
        p.grad = (g / accelerator.num_processes).view_as(p) if n > 0 else None


TRAINER_STATE = "trainer_state.json"
CHECKPOINT_FILES = ("diffusion_pytorch_model.safetensors", "optimizer.safetensors", TRAINER_STATE)


def _load_checkpoint(model, optimizer, ck: Path) -> int:
    """Restore what `_save_checkpoint` wrote into `model` and `optimizer` (and torch's CPU RNG);
    return the step. A missing or unreadable file is a one-line error naming it."""
    state_file = ck / TRAINER_STATE
    if not state_file.is_file():
        raise CheckpointError(ck, f"no {TRAINER_STATE} (a checkpoint of an older version holds a pickled "
                                  "trainer_state.pt, which is not loaded; remove the folder to start over)")
    try:
        state = json.loads(state_file.read_text())
        step, rng = int(state["step"]), torch.tensor(state["torch_rng"], dtype=torch.uint8)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(state_file, f"expected JSON with 'step' and 'torch_rng' ({exc})") from None
    model.load_state_dict(load_safetensors(ck / "diffusion_pytorch_model.safetensors"))
    load_optimizer_state(optimizer, ck / "optimizer.safetensors")
    torch.set_rng_state(rng)
    return step


def _save_checkpoint(model, optimizer, step: int, out_dir: Path) -> None:
    """Atomic (`common.checkpoint.atomic_checkpoint`): a temporary folder, then renames."""
    with atomic_checkpoint(out_dir / "checkpoint") as tmp:
        model.save_pretrained(tmp)
        save_optimizer_state(optimizer, tmp / "optimizer.safetensors")
        state = {"step": step, "torch_rng": torch.get_rng_state().tolist()}
        (tmp / TRAINER_STATE).write_text(json.dumps(state))


def train(cfg: Config, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> IVGT:
    """Train from scratch (or from the last checkpoint with resume); stop_at ends the run early
    after that step, as an interruption would (tests of --resume)."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    out_dir = Path(tc.output_dir)
    model = IVGT.from_model_config(cfg.model).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = 0
    ck = checkpoint_to_resume(out_dir / "checkpoint", CHECKPOINT_FILES, missing_ok=True) if resume else None
    if ck is not None:  # checkpoint, or checkpoint.old where a save was killed between its renames
        start = _load_checkpoint(model, optimizer, ck)
    optimizer = accelerator.prepare(optimizer)  # no DDP wrapper on the model: gradients averaged below
    schedule = lambda s: min(1.0, (s + 1) / max(1, tc.warmup)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / tc.steps)))  # noqa: E731
    B = tc.batch_size
    mixture = build_mixture(tc.sources, length=tc.steps * world * B, seed=tc.seed)
    size = tuple(cfg.model.image_size)
    log = None
    if main:  # only the main process writes
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=list))
        if start:  # the steps after the checkpoint are done again: drop their lines
            truncate_jsonl(out_dir / "metrics.jsonl", start)
        log = open(out_dir / "metrics.jsonl", "a" if start else "w")
    bar = tqdm(range(start, tc.steps), initial=start, total=tc.steps, disable=not (progress and main),
               desc="ivgt train")
    t0 = time.time()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = tc.lr * schedule(step)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = {}
        first = (step * world + rank) * B  # this rank's first item of the step's global batch
        for i in range(first, first + B):  # one graph at a time: gradients accumulate
            gen = torch.Generator().manual_seed(tc.seed * 1_000_003 + i)
            batch = {k: (v.to(accelerator.device) if torch.is_tensor(v) else v)
                     for k, v in draw_batch(mixture, cfg, i, gen, size).items()}
            item = step_losses(model, batch, cfg, step, gen)
            if not torch.isfinite(item["total"]):
                parts = ", ".join(f"{k}: {float(v):.3g}" for k, v in item.items())
                raise FloatingPointError(f"step {step}, item {i}: non-finite loss {{{parts}}}")
            (item["total"] / B).backward()
            for k, v in item.items():
                losses[k] = losses.get(k, 0.0) + float(v.detach()) / B
        if world > 1:  # the global batch's mean gradient and losses
            average_gradients(model.parameters(), accelerator)
            means = accelerator.reduce(torch.tensor(list(losses.values()), dtype=torch.float64,
                                                    device=accelerator.device), "mean")
            losses = dict(zip(losses, means.tolist()))
        accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        if log is not None:
            record = {"step": step + 1, "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
                      **{k: round(v, 6) for k, v in losses.items()}}
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{record['total']:.3f}")
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == tc.steps:
            accelerator.wait_for_everyone()
            if main:
                _save_checkpoint(model, optimizer, step + 1, out_dir)
        if stop_at is not None and step + 1 >= stop_at:
            break
    if main:
        log.close()
        model.save_pretrained(out_dir / "model")
    accelerator.wait_for_everyone()
    return model.eval()


def main(argv=None):
    parser = OneLineParser("ivgt.train", description=__doc__)
    parser.add_argument("--config", default=str(Path(__file__).parent / "configs" / "tiny.yaml"),
                        help="YAML config with sections model and train (default: configs/tiny.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from <train.output_dir>/checkpoint (same weights as an uninterrupted run)")
    parser.add_argument("--seed", type=int, default=None, help="sets train.seed")
    add_threads_flag(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (train.steps=50)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    with one_line_errors("ivgt.train"):
        set_threads(args.threads)
        cfg = load_config(args.config, overrides)
        train(cfg, resume=args.resume)
    if PartialState().is_main_process:
        print(f"wrote {cfg.train.output_dir}/model")


if __name__ == "__main__":
    main()
