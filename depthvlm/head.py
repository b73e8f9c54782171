"""DPT-style depth head of DepthVLM (official `model/dpt_depth_head.py`, described in
notes/anchors-vlm.md 1.2), written from that description.

Inputs: four token maps at the image-token positions, each [h, w, C] on the merged patch grid
(h = H / (patch * merge)): the three DeepStack features of the vision encoder (shallow to deep)
and the language model's last hidden states. Per map: LayerNorm -> 1x1 conv to out_channels[i]
-> resample x8, x4, x2, x1 (transposed convs) -> 3x3 conv to `features` -> RefineNet fusion from
the coarsest map up (residual conv units, bilinear x2 per step) -> conv features -> features/2
-> bilinear to the image size -> conv -> 32 -> ReLU -> conv 32 -> 1 -> Softplus (metres, > 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet fusion: add the (refined) skip map, refine, upsample x2, 1x1 projection."""

    def __init__(self, features: int, has_skip: bool):
        super().__init__()
        self.skip_unit = ResidualConvUnit(features) if has_skip else None
        self.unit = ResidualConvUnit(features)
        self.out = nn.Conv2d(features, features, 1)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        return self.out(x)


class DPTDepthHead(nn.Module):
    def __init__(self, in_dim: int, features: int = 256, out_channels=(256, 512, 1024, 1024)):
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(in_dim) for _ in out_channels])
        self.projects = nn.ModuleList([nn.Conv2d(in_dim, c, 1) for c in out_channels])
        # Tokens sit at 1/(patch * merge) of the image; the four maps are brought to x8, x4, x2, x1.
        self.resize = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 8, stride=8),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 4, stride=4),
            nn.ConvTranspose2d(out_channels[2], out_channels[2], 2, stride=2),
            nn.Identity(),
        ])
        self.layer_rn = nn.ModuleList([nn.Conv2d(c, features, 3, padding=1, bias=False) for c in out_channels])
        self.fusion = nn.ModuleList([FusionBlock(features, has_skip=i < 3) for i in range(4)])
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(32, 1, 1), nn.Softplus())

    def forward(self, maps: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        """maps: four [h, w, C] token maps of one image -> depth [H, W] in metres (> 0)."""
        if len(maps) != 4:
            raise ValueError(f"maps: expected 4 token maps (3 DeepStack + LLM), got {len(maps)}")
        feats = []
        for i, x in enumerate(maps):
            x = self.norms[i](x).permute(2, 0, 1)[None]  # [1, C, h, w]
            x = self.resize[i](self.projects[i](x))  # [1, c_i, h * 8/4/2/1, w * ...]
            feats.append(self.layer_rn[i](x))  # [1, features, ., .]
        path = self.fusion[3](feats[3], size=feats[2].shape[-2:])  # [1, F, 2h, 2w]
        path = self.fusion[2](path, feats[2], size=feats[1].shape[-2:])  # [1, F, 4h, 4w]
        path = self.fusion[1](path, feats[1], size=feats[0].shape[-2:])  # [1, F, 8h, 8w]
        path = self.fusion[0](path, feats[0])  # [1, F, 16h, 16w]
        x = self.output_conv1(path)  # [1, F/2, 16h, 16w]
        x = F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=True)  # [1, F/2, H, W]
        return self.output_conv2(x)[0, 0]  # [H, W]
