"""4DGS reconstruction of an endoscopic clip:
`python -m endogsim.train --data DIR --out OUT [--config endogsim/configs/tiny.yaml] [--resume] [key=value ...]`.

DIR is an EndoNeRF-layout clip (images/, depth/, masks/ with white = tool, poses_bounds.npy; read by
`common.datasets.read_endonerf`). Training follows EndoGaussian / Endo-4DGS:

- initialisation from the first training frame's depth (EndoGaussian's holistic initialisation,
  `GaussianModel.from_depth`) on its tissue pixels;
- `recon.frames_per_step` training frames per step (1, as EndoGaussian; EndoNeRF split: frame i is
  held out iff (i - 1) % 8 == 0);
- loss over tissue pixels only (the anchors multiply by the tissue mask `1 - tool`): L1 on RGB,
  1 - SSIM of the images with tool pixels zeroed, L1 on depth normalised by the frame's largest
  depth (`ReconConfig` says the weights);
- a coarse stage with the deformation off, then canonical Gaussians and HexPlane trained together;
- Adam with 3DGS's per-attribute learning rates, exponentially decayed for positions and the field.

Processes (`torchrun --nproc_per_node N -m endogsim.train ...` on a CPU, `accelerate launch
--num_processes N` on GPUs): step s draws N x frames_per_step frames from a generator seeded by
(seed, s) and rank r renders its own; the renders are not the module's forward, so gradients are
averaged over the processes by hand before the (identical) Adam step; only the main process
writes. The frames of step s are a function of (seed, s), and checkpoints hold the model and
the Adam state (safetensors), so `--resume` reaches the weights of an uninterrupted run (and its
metrics.jsonl, which is cut back to the checkpoint's step before the resumed run appends). The
Gaussian count is fixed by the initialisation (no densification or pruning; see the README).

Writes OUT/metrics.jsonl (one line per step), OUT/checkpoint/ (atomically, every
`checkpoint_every` steps and at the end; a kill between the save's two renames leaves
OUT/checkpoint.old, which `--resume` continues from), OUT/model/ (final,
`GaussianModel.from_pretrained`), OUT/config.yaml and OUT/results.json (held-out metrics of the
final model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from tqdm import tqdm

from common.checkpoint import (
    atomic_checkpoint,
    checkpoint_to_resume,
    load_optimizer_state,
    save_optimizer_state,
)
from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.config import save_config
from common.datasets.endonerf import endonerf_split
from common.datasets.sample import Sample
from common.errors import DatasetError
from common.results import truncate_jsonl

from .clip import load_clip
from .config import DEFAULT_CONFIG, ReconConfig, check_recon_config, load_config, model_kwargs
from .gaussians import GaussianModel
from .render import RenderOutput, render

__all__ = ["init_reconstruction", "render_frame", "frame_losses", "ssim_loss",
           "train_reconstruction", "main"]


def init_reconstruction(rc: ReconConfig, sample: Sample) -> GaussianModel:
    """The untrained model: Gaussians back-projected from the first training frame's depth on its
    tissue pixels, identity deformation (seeded by rc.seed: the HexPlane's random init)."""
    first = endonerf_split(sample.num_views, "train")[0]
    torch.manual_seed(rc.seed)
    tissue = ~sample.masks["tool"][first] & sample.valid[first]  # [H, W]
    if not tissue.any():
        raise DatasetError(sample.scene_id, f"frame {first}: no tissue pixel with valid depth to initialise from")
    return GaussianModel.from_depth(sample.images[first].permute(1, 2, 0), sample.depth[first], sample.K[first],
                                    sample.w2c[first], mask=tissue, stride=rc.init_stride,
                                    opacity=rc.init_opacity, **model_kwargs(rc))


def render_frame(model: GaussianModel, t: float, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int,
                 deform: bool = True) -> RenderOutput:
    """Render the model at normalised time t; deform=False renders the canonical Gaussians
    (the coarse stage)."""
    if deform:
        g = model.deform(t)
    else:
        g = {"means": model.means, "quats": model.quats, "scales": torch.exp(model.log_scales),
             "opacities": torch.sigmoid(model.opacity_logits)}
    return render(g["means"], g["quats"], g["scales"], g["opacities"], model.colors(g["means"], w2c),
                  w2c, K, width, height)


def ssim_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Differentiable mean SSIM of two [3, H, W] images (11x11 Gaussian window, sigma 1.5, zero
    padding: 3DGS's training SSIM). The reported metric is `common.metrics.ssim`."""
    r = torch.arange(11, dtype=pred.dtype, device=pred.device) - 5
    g = torch.exp(-r**2 / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :]).expand(3, 1, 11, 11)  # [3, 1, 11, 11]
    x, y = pred[None], gt[None]  # [1, 3, H, W]
    blur = lambda z: F.conv2d(z, win, padding=5, groups=3)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean()


def frame_losses(model: GaussianModel, sample: Sample, i: int, rc: ReconConfig, deform: bool = True) -> dict:
    """The losses of frame i (see `ReconConfig`)."""
    H, W = sample.image_size
    out = render_frame(model, float(sample.times[i]), sample.w2c[i], sample.K[i], W, H, deform)
    pred = out.rgb.permute(2, 0, 1)  # [3, H, W]
    gt = sample.images[i]  # [3, H, W]
    tissue = ~sample.masks["tool"][i]  # [H, W]
    losses = {}
    losses["l1"] = (pred - gt).abs()[:, tissue].mean() if tissue.any() else pred.sum() * 0
    m = tissue.to(pred.dtype)  # [H, W]
    losses["ssim"] = 1 - ssim_loss(pred * m, gt * m)
    dmask = tissue & sample.valid[i] & (out.alpha > 0)  # [H, W]
    if dmask.any():
        scale = sample.depth[i][dmask].max()
        losses["depth"] = ((out.depth - sample.depth[i]).abs()[dmask] / scale).mean()
    else:
        losses["depth"] = pred.sum() * 0
    losses["total"] = rc.w_l1 * losses["l1"] + rc.w_ssim * losses["ssim"] + rc.w_depth * losses["depth"]
    return losses


def _param_groups(model: GaussianModel, rc: ReconConfig) -> list[dict]:
    # the diagonal of the model's (fixed, saved) bounding box, so a resumed run gets the same rate
    extent = float((model.bounds[1] - model.bounds[0]).norm())
    field = [p for n, p in model.named_parameters() if n.startswith(("mlp.", "heads."))]
    return [
        {"name": "means", "params": [model.means], "lr": rc.lr_means * extent, "decay": True},
        {"name": "sh", "params": [model.sh], "lr": rc.lr_sh, "decay": False},
        {"name": "opacity", "params": [model.opacity_logits], "lr": rc.lr_opacity, "decay": False},
        {"name": "scales", "params": [model.log_scales], "lr": rc.lr_scales, "decay": False},
        {"name": "quats", "params": [model.quats], "lr": rc.lr_quats, "decay": False},
        {"name": "grid", "params": list(model.grid.parameters()), "lr": rc.lr_grid, "decay": True},
        {"name": "mlp", "params": field, "lr": rc.lr_mlp, "decay": True},
    ]


def _set_lr(optimizer, step: int, rc: ReconConfig) -> None:
    """3DGS's exponential decay from lr to lr * lr_final_ratio over the run, for the decaying groups."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * (rc.lr_final_ratio ** (step / rc.steps) if g["decay"] else 1.0)


CHECKPOINT_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "optimizer.safetensors",
                    "trainer_state.json")


def _save_checkpoint(model: GaussianModel, optimizer, step: int, out_dir: Path) -> None:
    """Atomic (`common.checkpoint.atomic_checkpoint`): a temporary folder, then renames. The Adam state
    goes to safetensors (one entry per parameter index and field) plus the step in JSON: no pickle."""
    with atomic_checkpoint(out_dir / "checkpoint") as tmp:
        model.save_pretrained(tmp)
        save_optimizer_state(optimizer, tmp / "optimizer.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))


def _load_checkpoint(ck: Path, optimizer) -> int:
    """Restore the Adam state saved by `_save_checkpoint`; returns the step it was written at."""
    load_optimizer_state(optimizer, ck / "optimizer.safetensors")
    return int(json.loads((ck / "trainer_state.json").read_text())["step"])


def train_reconstruction(rc: ReconConfig, data_dir, out_dir, resume: bool = False, progress: bool = True,
                         stop_at: int | None = None, skip_frames=()) -> GaussianModel:
    """Train a `GaussianModel` on the training frames of the clip in `data_dir`; write `out_dir`
    (see the module docstring) and return the final model in eval mode. resume=True continues from
    out_dir/checkpoint when there is one (or checkpoint.old: `common.checkpoint.checkpoint_to_resume`);
    stop_at ends the run after that step, as an interruption would (the tests of resume use it);
    skip_frames are training frames left out."""
    check_recon_config(rc)
    out_dir = Path(out_dir)
    sample = load_clip(data_dir, rc)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    # checkpoint, or checkpoint.old where a save was killed between its renames; None: from step 0
    ck = checkpoint_to_resume(out_dir / "checkpoint", CHECKPOINT_FILES, missing_ok=True) if resume else None
    start = 0
    if ck is not None:
        model = GaussianModel.from_pretrained(ck, use_safetensors=True)
    else:
        model = init_reconstruction(rc, sample)
    optimizer = torch.optim.Adam(_param_groups(model, rc), eps=1e-15)
    for g in optimizer.param_groups:
        g["base_lr"] = g["lr"]
    if ck is not None:
        start = _load_checkpoint(ck, optimizer)
    world, rank, main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(rc, out_dir / "config.yaml")
    # the renders are not the module's forward, so gradients are averaged over the processes by hand
    # (below) rather than by a DDP wrapper; every process applies the same Adam step to the same grads
    optimizer = accelerator.prepare(optimizer)
    model = model.to(accelerator.device)
    dev = accelerator.device
    sample = Sample(images=sample.images.to(dev), K=sample.K.to(dev), w2c=sample.w2c.to(dev),
                    depth=sample.depth.to(dev), valid=sample.valid.to(dev),
                    masks={"tool": sample.masks["tool"].to(dev)}, times=sample.times, scene_id=sample.scene_id,
                    view_names=sample.view_names)
    train_frames = [f for f in endonerf_split(sample.num_views, "train") if f not in set(skip_frames)]
    log = None
    if main:  # only the main process writes
        if start:  # the steps after the checkpoint are done again: drop their lines
            truncate_jsonl(out_dir / "metrics.jsonl", start)
        log = open(out_dir / "metrics.jsonl", "a" if start else "w")
    bar = tqdm(range(start, rc.steps), initial=start, total=rc.steps, disable=not (progress and main),
               desc="endogsim recon")
    B = rc.frames_per_step
    t0 = time.time()
    for step in bar:
        # the step's frames: world x B draws of a generator seeded by the step; rank r takes its B
        gen = torch.Generator().manual_seed(rc.seed * 1_000_003 + step)
        frames = [train_frames[int(k)] for k in torch.randint(len(train_frames), (world * B,), generator=gen)]
        _set_lr(optimizer, step, rc)
        parts = [frame_losses(model, sample, i, rc, deform=step >= rc.coarse_steps)
                 for i in frames[rank * B:(rank + 1) * B]]
        losses = {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]}
        if not torch.isfinite(losses["total"]):
            raise FloatingPointError(f"step {step}, frames {frames}: non-finite loss "
                                     f"{ {k: float(v) for k, v in losses.items()} }")
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        if world > 1:  # the mean gradient over the processes' frames
            for p in model.parameters():
                if p.grad is not None:
                    p.grad = accelerator.reduce(p.grad, "mean")
            losses = {k: accelerator.reduce(v.detach(), "mean") for k, v in losses.items()}
        if rc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
        optimizer.step()
        if log is not None:
            seen = {"frame": frames[0]} if len(frames) == 1 else {"frames": frames}
            record = {"step": step + 1, **seen, "seconds": round(time.time() - t0, 3),
                      **{k: round(float(v.detach()), 6) for k, v in losses.items()}}
            log.write(json.dumps(record) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{record['total']:.4f}")
        if (step + 1) % rc.checkpoint_every == 0 or step + 1 == rc.steps:
            accelerator.wait_for_everyone()
            if main:
                _save_checkpoint(model, optimizer, step + 1, out_dir)
        if stop_at is not None and step + 1 >= stop_at:
            break
    if log is not None:
        log.close()
        model.save_pretrained(out_dir / "model")
    accelerator.wait_for_everyone()
    return model.eval()


def main(argv=None):
    parser = OneLineParser("endogsim.train", description=__doc__)
    parser.add_argument("--data", required=True, help="EndoNeRF-layout clip folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config with sections data and recon (default: configs/tiny.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--seed", type=int, default=None, help="overrides recon.seed")
    add_threads_flag(parser)
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. recon.steps=200")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"recon.seed={args.seed}"] if args.seed is not None else [])
    with one_line_errors("endogsim.train"):
        set_threads(args.threads)
        cfg = load_config(args.config, overrides)
        t0 = time.time()
        model = train_reconstruction(cfg.recon, args.data, args.out, resume=args.resume)
    seconds = time.time() - t0
    from .evaluate import evaluate_reconstruction

    metrics = evaluate_reconstruction(model, args.data, cfg.recon)
    result = {"data": str(args.data), "split": "test", "steps": cfg.recon.steps, "train_seconds": round(seconds, 1),
              "num_gaussians": model.config.num_points, **{k: v for k, v in metrics.items() if k != "per_frame"},
              "per_frame": metrics["per_frame"]}
    (Path(args.out) / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}))


if __name__ == "__main__":
    main()
