"""Output heads: depth completion (reconstruction), objects and relations (scene graph), alignment.

- `DepthHead`: per view, a small U-Net over RGB, the sensor's log-depth and its valid mask ->
  completed metric depth (exp of a log) and camera-frame normals. Its depth maps, fused, are the
  dense coloured point cloud and the TSDF mesh (`tsdf.py`). L_depth (L1 of log depth), L_normal
  (1 - cos), L_smooth (edge-aware second-order smoothness of log depth).
- `ObjectHead`: a candidate box's feature = mean of the geometry tokens inside it (each token's box
  grown by half its voxel) + an MLP of the box; an objectness logit (object / empty box).
- `RelationHead`: for an ordered pair, an MLP over both object features, both boxes and the centre
  offset in the first view's camera frame -> one logit per relation of `relations.RELATIONS`.
- `AlignmentHead`: object features and phrase embeddings (the language model's last hidden states of
  a referring phrase) into one space; cosine / 0.07; InfoNCE over a batch (L_align).
- `RelationalGrounding`: the geometric part of localising a referred object. The phrase picks an
  anchor among the candidates (a second alignment, softmax alpha [N]); each candidate n gets the
  offset o_n = c_n - sum_m alpha_m c_m of its centre from the anchor, expressed in every view's
  camera frame (R_v o_n), its length |o_n| and its own anchor mass alpha_n; the phrase sets the
  weights of these features: r_n = w(phrase) . [R_1 o_n, ..., R_V o_n, |o_n|, alpha_n]. So "closest
  to X" is a negative weight on |o_n|, "left of X in view 1" a negative weight on view 1's x, and
  "the sphere closest to the purple sphere" a negative weight on alpha_n. Grounding logits are
  cosine / 0.07 + r_n.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2vlm.relations import RELATIONS

TEMPERATURE = 0.07


class DepthHead(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()

        def conv(i, o, stride=1):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.GELU())

        self.enc1, self.enc2, self.enc3 = (
            conv(5, width),
            conv(width, 2 * width, 2),
            conv(2 * width, 2 * width, 2),
        )
        self.dec2 = conv(4 * width, width)
        self.dec1 = conv(2 * width, width)
        self.out = nn.Conv2d(width, 4, 3, padding=1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb [V, 3, H, W], sensor depth [V, H, W] (0 = hole) -> (depth [V, H, W] > 0, normals
        [V, H, W, 3])."""
        valid = (depth > 0).to(rgb)[:, None]
        x = torch.cat(
            [rgb * 2 - 1, torch.log(depth.clamp_min(1e-3))[:, None] * valid, valid], 1
        )  # [V, 5, H, W]
        e1 = self.enc1(x)  # [V, w, H, W]
        e2 = self.enc2(e1)  # [V, 2w, H/2, W/2]
        e3 = self.enc3(e2)  # [V, 2w, H/4, W/4]
        d2 = self.dec2(
            torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1)
        )
        d1 = self.dec1(
            torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1)
        )
        out = self.out(d1)  # [V, 4, H, W]
        return torch.exp(out[:, 0].clamp(-7, 7)), F.normalize(out[:, 1:].permute(0, 2, 3, 1), dim=-1)


def depth_losses(
    pred: torch.Tensor, normals: torch.Tensor, rgb: torch.Tensor, gt: torch.Tensor, gt_normals: torch.Tensor
) -> dict:
    """L_depth, L_normal, L_smooth of one scene's views (pred, gt [V, H, W]; normals [V, H, W, 3])."""
    valid = gt > 0
    log_p = torch.log(pred.clamp_min(1e-6))
    l_depth = (log_p - torch.log(gt.clamp_min(1e-6))).abs()[valid].mean() if valid.any() else pred.sum() * 0
    has_n = gt_normals.norm(dim=-1) > 0.5
    l_normal = (1 - (normals * gt_normals).sum(-1))[has_n].mean() if has_n.any() else pred.sum() * 0
    # Edge-aware second-order smoothness of log depth (weights fall at image edges).
    grey = rgb.mean(1)  # [V, H, W]
    dxx = (log_p[:, :, 2:] - 2 * log_p[:, :, 1:-1] + log_p[:, :, :-2]).abs()
    dyy = (log_p[:, 2:] - 2 * log_p[:, 1:-1] + log_p[:, :-2]).abs()
    wx = torch.exp(-10 * (grey[:, :, 2:] - grey[:, :, :-2]).abs())
    wy = torch.exp(-10 * (grey[:, 2:] - grey[:, :-2]).abs())
    l_smooth = (dxx * wx).mean() + (dyy * wy).mean()
    return {"depth": l_depth, "normal": l_normal, "smooth": l_smooth}


def pool_boxes(
    xyz: torch.Tensor, feats: torch.Tensor, half_voxel: torch.Tensor, boxes: torch.Tensor
) -> torch.Tensor:
    """Mean token feature inside each box: xyz [T, 3], feats [T, C], half_voxel [T], boxes [N, 6] -> [N, C]
    (zeros for a box with no token)."""
    inside = (
        (xyz[None] - boxes[:, None, :3]).abs() <= boxes[:, None, 3:] / 2 + half_voxel[None, :, None]
    ).all(-1)
    w = inside.to(feats)  # [N, T]
    return (w @ feats) / w.sum(1, keepdim=True).clamp_min(1.0)


class ObjectHead(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.box_mlp = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))
        self.mix = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.objectness = nn.Linear(dim, 1)

    def forward(self, pooled: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled [N, C], boxes [N, 6] -> (object features [N, C], objectness logits [N])."""
        f = pooled + self.box_mlp(torch.cat([boxes[:, :3], torch.log(boxes[:, 3:].clamp_min(1e-3))], -1))
        f = f + self.mix(f)
        return f, self.objectness(f)[:, 0]


class RelationHead(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim + 15, dim),
            nn.GELU(),
            nn.Linear(dim, dim),
            nn.GELU(),
            nn.Linear(dim, len(RELATIONS)),
        )

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor, w2c0: torch.Tensor) -> torch.Tensor:
        """feats [N, C], boxes [N, 6], w2c0 [4, 4] (the viewpoint) -> logits [N, N, R] for ordered pairs."""
        N = feats.shape[0]
        cam = boxes[:, :3] @ w2c0[:3, :3].T + w2c0[:3, 3]  # [N, 3] centres in the view's camera frame
        geo = torch.cat([cam, boxes[:, 3:]], -1)  # [N, 6]
        a = torch.cat([feats, geo], -1)[:, None].expand(N, N, -1)
        b = torch.cat([feats, geo], -1)[None].expand(N, N, -1)
        return self.mlp(torch.cat([a, b, cam[:, None] - cam[None]], -1))


class AlignmentHead(nn.Module):
    def __init__(self, obj_dim: int, text_dim: int, dim: int = 64):
        super().__init__()
        self.obj = nn.Sequential(nn.Linear(obj_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.text = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def scores(self, objects: torch.Tensor, phrases: torch.Tensor) -> torch.Tensor:
        """objects [N, Co], phrases [P, Ct] -> cosine similarities [P, N]."""
        return F.normalize(self.text(phrases), dim=-1) @ F.normalize(self.obj(objects), dim=-1).T


def info_nce(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of a score matrix [P, N] whose row p matches column targets[p] (all distinct)."""
    logits = scores / TEMPERATURE
    rows = F.cross_entropy(logits, targets)
    cols = F.cross_entropy(logits[:, targets].T, torch.arange(len(targets), device=scores.device))
    return (rows + cols) / 2


class RelationalGrounding(nn.Module):
    def __init__(self, obj_dim: int, text_dim: int, max_views: int = 8, dim: int = 64):
        super().__init__()
        self.max_views = max_views
        self.anchor = AlignmentHead(obj_dim, text_dim, dim)
        self.weights = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, 3 * max_views + 2))
        nn.init.zeros_(self.weights[-1].weight)  # starts as no relational term
        nn.init.zeros_(self.weights[-1].bias)

    def forward(
        self, feats: torch.Tensor, boxes: torch.Tensor, w2c: torch.Tensor, phrases: torch.Tensor
    ) -> torch.Tensor:
        """feats [N, C], boxes [N, 6] (world), w2c [V, 4, 4] (views past max_views unused), phrases [P, Ct]
        -> relational logits [P, N] (module docstring)."""
        alpha = torch.softmax(self.anchor.scores(feats, phrases) / TEMPERATURE, -1)  # [P, N]
        off = boxes[None, :, :3] - (alpha @ boxes[:, :3])[:, None]  # [P, N, 3] world
        R = w2c[: self.max_views, :3, :3]  # [V, 3, 3]
        cam = torch.einsum("vij,pnj->pnvi", R, off)  # [P, N, V, 3] the offset in each view's camera frame
        cam = F.pad(cam, (0, 0, 0, self.max_views - R.shape[0])).flatten(2)  # [P, N, 3 * max_views]
        phi = torch.cat([cam, off.norm(dim=-1, keepdim=True), alpha[..., None]], -1)  # [P, N, 3Vm + 2]
        return (phi * self.weights(phrases)[:, None]).sum(-1)  # [P, N]
