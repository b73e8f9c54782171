"""DPT-style depth head of DepthVLM (official `qwen3_vl/dpt_depth_head.py` in hanxunyu/DepthVLM,
described in notes/anchors-vlm.md 1.2), written from its description; `official_key_map` maps the
official parameter names onto these, so the released weights load (`model.load_official_head`).

Inputs: four token maps at the image-token positions, each [h, w, C] on the merged patch grid
(h = H / (patch * merge)): the three DeepStack features of the vision encoder (shallow to deep)
and the language model's last hidden states. Per map: LayerNorm (one per map here, one shared by
the four in the official head) -> 1x1 conv to out_channels[i] -> resample x8, x4, x2, x1
(transposed convs) -> 3x3 conv to `features` -> RefineNet fusion from the coarsest map up
(residual conv units, bilinear x2 per step) -> conv features -> features/2 -> bilinear to the
image size -> conv -> 32 -> ReLU -> conv 32 -> 1 -> Softplus (metres, > 0).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResidualConvUnit(nn.Module):
    """x -> skip + conv(relu(conv(relu(x)))), skip = x, or relu(x) with `relu_skip`: the official
    head's units apply an in-place ReLU to their input, so what they add back is relu(x)."""

    def __init__(self, features: int, relu_skip: bool = False):
        super().__init__()
        self.relu_skip = relu_skip
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        r = F.relu(x)
        return (r if self.relu_skip else x) + self.conv2(F.relu(self.conv1(r)))


class FusionBlock(nn.Module):
    """RefineNet fusion: add the (refined) skip map, refine, upsample x2, 1x1 projection."""

    def __init__(self, features: int, has_skip: bool, relu_skip: bool = False):
        super().__init__()
        self.skip_unit = ResidualConvUnit(features, relu_skip) if has_skip else None
        self.unit = ResidualConvUnit(features, relu_skip)
        self.out = nn.Conv2d(features, features, 1)

    def forward(self, x, skip=None, size=None):
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, scale_factor=None if size else 2, mode="bilinear", align_corners=True)
        return self.out(x)


class DPTDepthHead(nn.Module):
    """`relu_skip`: the residual units add relu(x) back, as the official head computes (its ReLUs
    are in place); off, they add x (what tiny.yaml's results were trained with)."""

    def __init__(self, in_dim: int, features: int = 256, out_channels=(256, 512, 1024, 1024), relu_skip: bool = False):
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
        self.fusion = nn.ModuleList([FusionBlock(features, has_skip=i < 3, relu_skip=relu_skip) for i in range(4)])
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


def official_key_map() -> dict[str, list[str]]:
    """Parameter names of the official head (DepthVLM's `qwen3_vl/dpt_depth_head.py`, stored under
    `depth_head.` in DepthVLM-4B / 8B) -> ours, key by key. The official head normalises the four
    maps with one shared LayerNorm (`norm`); ours has one per map, so that one goes to all four
    (`norms.0-3`, equal at load, free to differ when trained further). The rest is a renaming:
    `resize_layers.i` -> `resize.i`, `scratch.layer{i+1}_rn` -> `layer_rn.i`, `scratch.refinenet{i+1}`
    -> `fusion.i` (`resConfUnit1` -> `skip_unit`, `resConfUnit2` -> `unit`, `out_conv` -> `out`),
    `scratch.output_conv1/2` -> `output_conv1/2`."""
    keys = {f"norm.{p}": [f"norms.{i}.{p}" for i in range(4)] for p in ("weight", "bias")}
    for i in range(4):
        keys[f"scratch.layer{i + 1}_rn.weight"] = [f"layer_rn.{i}.weight"]  # bias=False
        for p in ("weight", "bias"):
            keys[f"projects.{i}.{p}"] = [f"projects.{i}.{p}"]
            if i < 3:  # the fourth (LLM) map keeps the token grid: Identity, no weights
                keys[f"resize_layers.{i}.{p}"] = [f"resize.{i}.{p}"]
            fusion = f"scratch.refinenet{i + 1}"
            keys[f"{fusion}.out_conv.{p}"] = [f"fusion.{i}.out.{p}"]
            for j in (1, 2):
                if i < 3:  # refinenet4 starts the path: no skip input
                    keys[f"{fusion}.resConfUnit1.conv{j}.{p}"] = [f"fusion.{i}.skip_unit.conv{j}.{p}"]
                keys[f"{fusion}.resConfUnit2.conv{j}.{p}"] = [f"fusion.{i}.unit.conv{j}.{p}"]
    for p in ("weight", "bias"):
        keys[f"scratch.output_conv1.{p}"] = [f"output_conv1.{p}"]
        for j in (0, 2):  # conv 3x3 -> ReLU -> conv 1x1 -> Softplus
            keys[f"scratch.output_conv2.{j}.{p}"] = [f"output_conv2.{j}.{p}"]
    return keys
