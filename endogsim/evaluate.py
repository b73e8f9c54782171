"""Held-out evaluation of a 4DGS reconstruction:
`python -m endogsim.evaluate --model OUT/model --data DIR [--config ...] [--split test] [--out FILE] [--renders DIR]`.

Metrics from `common.metrics` on the held-out frames (EndoNeRF split: frame i iff (i - 1) % 8 == 0),
over tissue pixels (not tool), as EndoGaussian's `metrics.py` reports them:

- `psnr`, `ssim`: the mean over tissue pixels (MSE divided by the tissue area; SSIM map averaged
  over tissue pixels away from the 5-px border) — EndoGaussian's PSNR* form;
- `psnr_zeroed_tool`, `ssim_zeroed_tool`: both images with tool pixels set to 0 and averaged over
  the whole frame — EndoGaussian's headline form, which the zeroed pixels inflate;
- `depth_rmse`: RMSE of the rendered depth over tissue pixels with valid ground-truth depth, in
  the clip's depth units after `depth_scale` (metres for the synthetic clip), pooled over frames.

LPIPS is not reported: its AlexNet/VGG weights are not available offline here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.datasets import io
from common.datasets.endonerf import endonerf_split
from common.metrics import depth_metrics, psnr, ssim

from .config import DEFAULT_CONFIG, ReconConfig, load_config
from .gaussians import GaussianModel
from .clip import load_clip

__all__ = ["evaluate_reconstruction", "evaluate_static_baseline", "main"]

METRICS = ("psnr", "ssim", "psnr_zeroed_tool", "ssim_zeroed_tool", "depth_rmse")


def _scores(pred: torch.Tensor, gt: torch.Tensor, depth: torch.Tensor, gt_depth: torch.Tensor,
            tissue: torch.Tensor, valid: torch.Tensor) -> dict:
    """Per-frame metrics of predicted [V, 3, H, W] images and [V, H, W] depths (depth may be None)."""
    m = tissue[:, None].to(pred.dtype)  # [V, 1, H, W]
    out = {
        "psnr": psnr(pred, gt, mask=tissue, reduce="none"),
        "ssim": ssim(pred, gt, mask=tissue, reduce="none"),
        "psnr_zeroed_tool": psnr(pred * m, gt * m, reduce="none"),
        "ssim_zeroed_tool": ssim(pred * m, gt * m, reduce="none"),
    }
    if depth is not None:
        dmask = tissue & valid  # [V, H, W]
        out["depth_rmse"] = [depth_metrics(depth[v], gt_depth[v], mask=dmask[v])["rmse"] for v in range(len(pred))]
        out["depth_rmse_pooled"] = depth_metrics(depth, gt_depth, mask=dmask)["rmse"]
    return out


def _summary(frames: list[int], scores: dict) -> dict:
    per_frame = [{"frame": f, **{k: float(v[j]) for k, v in scores.items() if k != "depth_rmse_pooled"}}
                 for j, f in enumerate(frames)]
    summary = {k: float(sum(float(x) for x in v) / len(v)) for k, v in scores.items()
               if k in METRICS and k != "depth_rmse"}
    if "depth_rmse_pooled" in scores:
        summary["depth_rmse"] = float(scores["depth_rmse_pooled"])
    return {**summary, "frames": frames, "per_frame": per_frame}


@torch.no_grad()
def evaluate_reconstruction(model: GaussianModel, data_dir, rc: ReconConfig | None = None, split: str = "test",
                            renders_dir=None) -> dict:
    """Metrics (module docstring) of `model` on the `split` frames of the clip in `data_dir`, read with
    rc's depth_scale and mask polarity. Returns {metric: mean over frames, "frames": [...],
    "per_frame": [{frame, metric...}]}; depth_rmse pools all frames' pixels. With renders_dir, writes
    the rendered RGB and depth PNGs of those frames there."""
    rc = rc or ReconConfig()
    sample = load_clip(data_dir, rc)
    frames = endonerf_split(sample.num_views, split)
    if not frames:
        raise ValueError(f"{data_dir}: the clip has no {split!r} frame ({sample.num_views} frames)")
    H, W = sample.image_size
    model = model.eval()
    dev = model.means.device
    preds, depths = [], []
    for i in frames:
        out = model.render(float(sample.times[i]), sample.w2c[i].to(dev), sample.K[i].to(dev), W, H)
        preds.append(out.rgb.permute(2, 0, 1).clamp(0, 1).cpu())  # [3, H, W]
        depths.append(out.depth.cpu())  # [H, W]
        if renders_dir is not None:
            io.write_rgb(Path(renders_dir) / f"{sample.view_names[i]}.png", preds[-1])
            io.write_depth_png(Path(renders_dir) / "depth" / f"{sample.view_names[i]}.png", depths[-1].clamp(min=0),
                               rc.depth_scale)
    tissue = ~sample.masks["tool"][frames]  # [V, H, W]
    scores = _scores(torch.stack(preds), sample.images[frames], torch.stack(depths), sample.depth[frames],
                     tissue, sample.valid[frames])
    return _summary(frames, scores)


def evaluate_static_baseline(data_dir, rc: ReconConfig | None = None, split: str = "test") -> dict:
    """A trivial baseline: the first training frame (image and depth) predicted for every held-out
    frame, i.e. a scene that never moves; same metrics as `evaluate_reconstruction`."""
    rc = rc or ReconConfig()
    sample = load_clip(data_dir, rc)
    frames = endonerf_split(sample.num_views, split)
    first = endonerf_split(sample.num_views, "train")[0]
    V = len(frames)
    scores = _scores(sample.images[first].expand(V, -1, -1, -1), sample.images[frames],
                     sample.depth[first].expand(V, -1, -1), sample.depth[frames],
                     ~sample.masks["tool"][frames], sample.valid[frames])
    return _summary(frames, scores)


def main(argv=None):
    parser = OneLineParser("endogsim.evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="a GaussianModel folder (OUT/model or OUT/checkpoint)")
    parser.add_argument("--data", required=True, help="EndoNeRF-layout clip folder")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="for depth_scale and the mask polarity")
    parser.add_argument("--split", default="test", choices=("test", "train", "all"),
                        help="frames to score (EndoNeRF split; default: test)")
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    parser.add_argument("--renders", default=None, help="write the rendered frames here")
    parser.add_argument("--seed", type=int, default=0, help="unused by the metrics (rendering is deterministic)")
    add_threads_flag(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    with one_line_errors("endogsim.evaluate"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        model_dir = Path(args.model)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir}: not a GaussianModel folder (no config.json); "
                                    "pass OUT/model or OUT/checkpoint of endogsim.train")
        load_clip(args.data, cfg.recon)  # every file checked before the model is loaded
        model = GaussianModel.from_pretrained(model_dir, use_safetensors=True)
        result = {"model": str(model_dir), "data": str(args.data), "split": args.split,
                  **evaluate_reconstruction(model, args.data, cfg.recon, args.split, args.renders),
                  "static_baseline": {k: v for k, v in evaluate_static_baseline(args.data, cfg.recon,
                                                                                 args.split).items()
                                      if k in METRICS}}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}, indent=1))


if __name__ == "__main__":
    main()
