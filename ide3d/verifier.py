"""The auxiliary geometric verifier (Sec. 3, design 1): a DPT decoder on four SigLIP layers that
predicts depth and a confidence, trained only to put pressure on the encoder and dropped at
inference.

Official design (notes 0 and the 3D-IDE code): SigLIP layers 6 / 12 / 18 / last, each through one
shared MLP projector (Linear 1152 -> 2304, GELU, Linear -> 2048, LayerNorm), then VGGT's DPT head
(per level a 1x1 projection and a resampling x4 / x2 / x1 / x0.5, RefineNet fusion, output at
the input size) with depth = exp(c0) and confidence = 1 + exp(c1). "Weak" means this decoder
starts from random weights; the "strong" ablation starts it from a depth network trained to
convergence (`ide3d.train.pretrain_verifier`).

Loss (VGGT-style, official `geometric_loss.py`), on pixels with ground-truth depth > 0:
conf * |D - D*| - alpha * log(conf)  +  |D - D*|  +  multi-scale gradient term, where the two
per-pixel terms drop residuals above the 0.98 quantile. The paper writes the gradient term
confidence-weighted; the official code, which we follow, does not weight it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config


class _ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fusion(nn.Module):
    """RefineNet fusion: add the refined skip map, refine, upsample to `size`, 1x1 projection."""

    def __init__(self, features: int, has_skip: bool):
        super().__init__()
        self.skip_unit = _ResidualConvUnit(features) if has_skip else None
        self.unit = _ResidualConvUnit(features)
        self.out = nn.Conv2d(features, features, 1)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        return self.out(x)


class Verifier(ModelMixin, ConfigMixin):
    """Four SigLIP token maps -> depth [N, S, S] (metres, > 0) and confidence [N, S, S] (> 1)."""

    @register_to_config
    def __init__(
        self,
        vision_hidden: int = 1152,
        dim: int = 2048,
        features: int = 256,
        channels: tuple = (256, 512, 1024, 1024),
        layers: tuple = (6, 12, 18, -1),
        head_hidden: int = 32,
    ):
        super().__init__()
        self.projector = nn.Sequential(
            nn.Linear(vision_hidden, 2 * vision_hidden),
            nn.GELU(),
            nn.Linear(2 * vision_hidden, dim),
            nn.LayerNorm(dim),
        )
        self.projects = nn.ModuleList([nn.Conv2d(dim, c, 1) for c in channels])
        self.resize = nn.ModuleList(
            [  # VGGT's DPT: x4, x2, x1, x0.5 of the patch grid
                nn.ConvTranspose2d(channels[0], channels[0], 4, stride=4),
                nn.ConvTranspose2d(channels[1], channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(channels[3], channels[3], 3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList([nn.Conv2d(c, features, 3, padding=1, bias=False) for c in channels])
        self.fusion = nn.ModuleList([_Fusion(features, has_skip=i < 3) for i in range(4)])
        self.head1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.head2 = nn.Sequential(
            nn.Conv2d(features // 2, head_hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(head_hidden, 2, 1)
        )

    def forward(self, hidden_states: tuple, grid: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states: SigLIP's (embeddings, layer 1, ..., layer L), each [N, g*g, Cv];
        -> depth, conf [N, out_size, out_size]."""
        feats = []
        for i, layer in enumerate(self.config.layers):
            x = self.projector(hidden_states[layer])  # [N, g*g, D]
            x = x.transpose(1, 2).unflatten(2, (grid, grid))  # [N, D, g, g]
            x = self.resize[i](self.projects[i](x))  # [N, c_i, 4g | 2g | g | g/2, .]
            feats.append(self.layer_rn[i](x))  # [N, features, ., .]
        path = self.fusion[3](feats[3], size=feats[2].shape[-2:])  # [N, F, g, g]
        path = self.fusion[2](path, feats[2], size=feats[1].shape[-2:])  # [N, F, 2g, 2g]
        path = self.fusion[1](path, feats[1], size=feats[0].shape[-2:])  # [N, F, 4g, 4g]
        path = self.fusion[0](path, feats[0])  # [N, F, 8g, 8g]
        x = F.interpolate(
            self.head1(path), size=(out_size, out_size), mode="bilinear", align_corners=True
        )  # [N, F/2, S, S]
        out = self.head2(x)  # [N, 2, S, S]
        depth = torch.exp(out[:, 0].clamp(max=10.0))  # official activation "exp" (clamped: no inf)
        conf = 1.0 + torch.exp(out[:, 1].clamp(max=10.0))  # "expp1"
        return depth, conf


def _drop_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """Mean of values [N] after dropping those at or above their `quantile` (when more than 1000
    remain, as the official code) and clamping to 100."""
    values = values.clamp(max=100.0)
    if values.numel() > 1000 and quantile < 1.0:
        sample = values.detach()[:: max(1, values.numel() // 1_000_000)].float()
        kept = values[values < torch.quantile(sample, quantile)]
        if kept.numel() > 1000:
            return kept.mean()
    return values.mean()


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale gradient matching on the residual r = (pred - gt) on valid pixels (gt > 0):
    sum of |r(x+1) - r(x)| over horizontally / vertically adjacent valid pixels, divided by the
    number of valid pixels, at strides 1, 2, 4, ...; averaged over scales. pred, gt [F, H, W]."""
    total = pred.new_zeros(())
    for s in range(scales):
        p, g = pred[:, :: 2**s, :: 2**s], gt[:, :: 2**s, :: 2**s]  # [F, h, w]
        m = (g > 0).to(p)
        r = (p - g) * m
        dx = (r[:, :, 1:] - r[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
        dy = (r[:, 1:] - r[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
        total = total + (dx.clamp(max=100).sum() + dy.clamp(max=100).sum()) / m.sum().clamp_min(1.0)
    return total / scales


def geometric_loss(
    depth: torch.Tensor,
    conf: torch.Tensor,
    gt: torch.Tensor,
    alpha: float = 0.2,
    scales: int = 4,
    quantile: float = 0.98,
) -> torch.Tensor:
    """The verifier's loss for one sample: depth, conf, gt [F, H, W] (gt 0 = invalid) -> scalar
    (the terms are averaged over the sample's valid pixels; module docstring)."""
    valid = gt > 0  # [F, H, W]
    if not bool(valid.any()):
        return depth.sum() * 0.0
    err = (depth - gt).abs()[valid]  # [M]
    c = conf[valid]
    loss_conf = _drop_quantile(c * err - alpha * torch.log(c.clamp_min(1e-6)), quantile)
    loss_reg = _drop_quantile(err, quantile)
    loss_grad = gradient_loss(depth, gt, scales)
    return loss_conf + loss_reg + loss_grad
