"""Proposal-based 3D grounding as Video-3D LLM does it, which 3D-IDE keeps (notes 1.1, 3).

A query's `<ground>` hidden state is scored against every candidate box: the box's object feature
is the mean of the visual patch features (after the projector, before 2x2 pooling) whose pixels'
world points lie inside the box, a patch counting when at least half of its pixels do, plus a
sin-cos encoding of the box centre. Both sides pass a small MLP; the score is their cosine; a
learned "no target" vector is scored like one more candidate. InfoNCE at temperature 0.07.

Boxes are axis-aligned [cx, cy, cz, dx, dy, dz] in metres, world frame. World points come from
z-depth and OpenCV cameras (`common.cameras.depth_to_points`). This is why "RGB only" in the
paper means "no 3D position encoding and no 3D encoder": proposals and their pooling still use
depth and poses, in the official code and here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cameras import depth_to_points


def sincos_3d(xyz: torch.Tensor, dim: int, lo, hi, voxel: float) -> torch.Tensor:
    """Video-3D LLM's 3D position encoding: xyz [..., 3] metres -> [..., dim].

    Coordinates are clamped to [lo, hi], voxelised (round((p - lo) / voxel)), and each axis gets
    dim // 3 features: sin on even, cos on odd indices of v / 10000^(2 floor(i / 2) / (dim // 3));
    the three axes are concatenated (x | y | z) and zero-padded to dim.
    """
    lo = torch.as_tensor(lo, dtype=xyz.dtype, device=xyz.device)
    hi = torch.as_tensor(hi, dtype=xyz.dtype, device=xyz.device)
    v = torch.round((torch.minimum(torch.maximum(xyz, lo), hi) - lo) / voxel)  # [..., 3]
    n = dim // 3
    i = torch.arange(n, device=xyz.device, dtype=xyz.dtype)
    freq = 10000.0 ** (2 * torch.div(i, 2, rounding_mode="floor") / n)  # [n]
    angle = v[..., None] / freq  # [..., 3, n]
    enc = torch.where(i.long() % 2 == 0, angle.sin(), angle.cos())  # [..., 3, n]
    enc = enc.flatten(-2)  # [..., 3n]
    return F.pad(enc, (0, dim - 3 * n))  # [..., dim]


def world_points(depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
    """depth [F, H, W] z-depth, K [F, 3, 3], w2c [F, 4, 4] -> world points [F, H, W, 3]."""
    return depth_to_points(depth, K, w2c)


def patch_membership(
    points: torch.Tensor, valid: torch.Tensor, boxes: torch.Tensor, patch: int, min_fraction: float = 0.5
) -> torch.Tensor:
    """Which patches belong to which box.

    points [F, S, S, 3] world points at the model's input size, valid [F, S, S], boxes [N, 6] ->
    [N, F, g, g] bool, g = S // patch: a patch belongs to a box when at least `min_fraction` of its
    patch * patch pixels have a valid world point inside the box (faces included).
    """
    g = points.shape[1] // patch
    pts = points[:, : g * patch, : g * patch]  # [F, g*p, g*p, 3]
    ok = valid[:, : g * patch, : g * patch]  # [F, g*p, g*p]
    out = []
    for box in boxes:
        inside = ((pts - box[:3]).abs() <= box[3:] / 2).all(-1) & ok  # [F, g*p, g*p]
        frac = F.avg_pool2d(inside[:, None].float(), patch)[:, 0]  # [F, g, g]
        out.append(frac >= min_fraction)
    if not out:
        return torch.zeros((0, points.shape[0], g, g), dtype=torch.bool, device=points.device)
    return torch.stack(out)  # [N, F, g, g]


def token_world_points(points: torch.Tensor, valid: torch.Tensor, patch: int, pooled: int) -> tuple:
    """Mean valid world point of each pooled visual token (Video-3D LLM's "avg" 3D input).

    points [F, S, S, 3], valid [F, S, S] -> (xyz [F, pooled, pooled, 3], has_points [F, pooled, pooled]).
    The region g * patch is split into pooled x pooled blocks (LLaVA-Video: 378 px into 14 x 14).
    """
    g = points.shape[1] // patch
    pts = points[:, : g * patch, : g * patch].permute(0, 3, 1, 2)  # [F, 3, g*p, g*p]
    ok = valid[:, None, : g * patch, : g * patch].float()  # [F, 1, g*p, g*p]
    total = F.adaptive_avg_pool2d(pts * ok, pooled)  # [F, 3, pooled, pooled]
    count = F.adaptive_avg_pool2d(ok, pooled)  # [F, 1, pooled, pooled]
    xyz = (total / count.clamp_min(1e-9)).permute(0, 2, 3, 1)  # [F, pooled, pooled, 3]
    return xyz, count[:, 0] > 0


def pool_object_features(patch_features: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """patch_features [F, g, g, C], membership [N, F, g, g] -> mean feature per box [N, C] (zeros
    for a box that owns no patch, as Video-3D LLM)."""
    m = membership.to(patch_features.dtype)  # [N, F, g, g]
    total = torch.einsum("nfhw,fhwc->nc", m, patch_features)  # [N, C]
    return total / m.flatten(1).sum(1, keepdim=True).clamp_min(1.0)


class GroundingHead(nn.Module):
    """Video-3D LLM's InfoNCE head: two MLPs (Linear, ReLU, LayerNorm, Linear) and a learned
    "no target" vector appended to the candidates."""

    def __init__(self, hidden: int):
        super().__init__()

        def mlp():
            return nn.Sequential(
                nn.Linear(hidden, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Linear(hidden, hidden)
            )

        self.obj_mlp = mlp()
        self.query_mlp = mlp()
        self.zero_target = nn.Parameter(torch.randn(hidden) / math.sqrt(hidden))

    def forward(self, query: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """query [C], objects [N, C] -> cosine scores [N + 1] (last: no target)."""
        cand = torch.cat([objects, self.zero_target[None].to(objects)], 0)  # [N+1, C]
        o = F.normalize(self.obj_mlp(cand), dim=-1)  # [N+1, C]
        q = F.normalize(self.query_mlp(query), dim=-1)  # [C]
        return o @ q  # [N+1]


def infonce_loss(scores: torch.Tensor, targets: list[int], temperature: float = 0.07) -> torch.Tensor:
    """-log(sum_{i in targets} e^{s_i / t} / sum_all e^{s_j / t}); no targets: the last entry (no target)."""
    logits = scores / temperature  # [N+1]
    pos = list(targets) if len(targets) else [scores.shape[0] - 1]
    return torch.logsumexp(logits, 0) - torch.logsumexp(logits[pos], 0)


def predict_single(scores: torch.Tensor) -> int:
    """ScanRefer: the best candidate (the no-target entry is never the answer)."""
    return int(scores[:-1].argmax())


def predict_multi(scores: torch.Tensor, temperature: float = 0.07, threshold: float = 0.4) -> list[int]:
    """Multi3DRefer (Video-3D LLM's eval): nothing if "no target" scores highest; otherwise the
    candidates by descending softmax(s / t) until their cumulative probability reaches `threshold`."""
    if int(scores.argmax()) == scores.shape[0] - 1:
        return []
    prob = torch.softmax(scores / temperature, 0)[:-1]  # [N]
    order = torch.argsort(prob, descending=True)
    cum = torch.cumsum(prob[order], 0)
    k = int((cum < threshold).sum()) + 1
    return order[:k].tolist()
