"""RGB-only reconstruction in the official G2VLM / Pi3 manner: per-view local point maps and camera
poses from multi-view RGB, permutation-equivariant over views, trained with Pi3's loss.

Network (Pi3, `pi3/models/pi3.py`; notes/anchors-3dide-g2vlm.md 2-3): patch tokens with a learned
position table shared by all views, `registers` register tokens shared by all views (no reference
frame token: reordering the views reorders the outputs), alternating attention (even blocks within a
view, odd blocks over all views); heads on the last two blocks' tokens:
- local points: per pixel (x, y, log z) -> z = exp(log z), point = (x z, y z, z) in the view's
  camera frame (OpenCV axes);
- confidence: a logit per pixel;
- camera: mean of the view's patch tokens -> MLP -> 9 numbers (rows normalised, transposed, SVD to
  the nearest rotation with det +1) and a translation: a camera-to-world pose in an arbitrary common
  frame (only relative poses are supervised);
- metric scale (our addition, as Pi3X / MoGe-2 add one): log of the mean distance of the scene's
  points from the registers, so that the scale-free point maps can be put in metres.

Loss (Pi3's training code): ground truth moved into view 0's camera frame and divided by the mean
norm of its valid points; predictions divided by the mean norm of their local points; a
closed-form scale s (weighted median of ratios, no gradient, on at most 4096 points); L1 on s * local
points weighted by 1 / z (z clamped at 0.1 x the view's mean depth); camera: over all ordered view
pairs, Huber (0.1) on the relative translation (s-scaled) x 100 + the geodesic angle of the relative
rotation, weighted by `camera_weight` (G2VLM: 0.2); metric scale: L1 on the log mean distance.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from common.cameras import invert_pose


def rotation_from_9d(m: torch.Tensor) -> torch.Tensor:
    """[..., 9] -> proper rotations [..., 3, 3] (Pi3's camera head: normalise rows, transpose, SVD)."""
    M = F.normalize(m.reshape(*m.shape[:-1], 3, 3), dim=-1).transpose(-1, -2)
    U, _, Vh = torch.linalg.svd(M)
    d = torch.sign(torch.det(U @ Vh))  # [...]
    U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], -1)
    return U @ Vh


class ReconstructionNet(ModelMixin, ConfigMixin):
    """RGB views [B, V, 3, S, S] in [0, 1] -> local points [B, V, S, S, 3], confidence logits
    [B, V, S, S], camera-to-world poses [B, V, 4, 4], log metric scale [B]."""

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        dim: int = 64,
        layers: int = 4,
        heads: int = 4,
        registers: int = 5,
    ):
        super().__init__()
        g = image_size // patch_size
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.randn(1, g * g, dim) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(1, registers, dim) * 0.02)

        def block():
            return nn.TransformerEncoderLayer(
                dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True
            )

        self.blocks = nn.ModuleList([block() for _ in range(2 * layers)])
        self.point_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, patch_size**2 * 3))
        self.conf_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, patch_size**2))
        self.camera_head = nn.Sequential(
            nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 12)
        )
        self.scale_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, views: torch.Tensor) -> dict:
        B, V = views.shape[:2]
        p, S = self.config.patch_size, self.config.image_size
        R = self.config.registers
        x = (
            self.patch_embed(views.flatten(0, 1) * 2 - 1).flatten(2).transpose(1, 2) + self.pos
        )  # [B*V, g*g, D]
        x = torch.cat([self.register_tokens.expand(B * V, -1, -1), x], 1)  # [B*V, R + g*g, D]
        T = x.shape[1]
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x) if i % 2 == 0 else blk(x.reshape(B, V * T, -1)).reshape(B * V, T, -1)
            outs.append(x)
        h = torch.cat(outs[-2:], -1)  # [B*V, T, 2D]
        patches = h[:, R:]  # [B*V, g*g, 2D]
        pts = self.point_head(patches).transpose(1, 2)  # [B*V, p*p*3, g*g]
        pts = F.fold(pts, (S, S), kernel_size=p, stride=p).permute(0, 2, 3, 1)  # [B*V, S, S, 3]
        z = torch.exp(pts[..., 2].clamp(-10, 10))
        local = torch.stack([pts[..., 0] * z, pts[..., 1] * z, z], -1).reshape(B, V, S, S, 3)
        conf = F.fold(
            self.conf_head(patches).transpose(1, 2), (S, S), kernel_size=p, stride=p
        )  # [B*V, 1, S, S]
        cam = self.camera_head(patches.mean(1))  # [B*V, 12]
        c2w = torch.zeros(B * V, 4, 4, dtype=views.dtype, device=views.device)
        c2w[:, :3, :3] = rotation_from_9d(cam[:, :9])
        c2w[:, :3, 3] = cam[:, 9:]
        c2w[:, 3, 3] = 1
        log_scale = self.scale_head(h[:, :R].reshape(B, V * R, -1).mean(1))[:, 0]  # [B]
        return {
            "local_points": local,
            "conf": conf.reshape(B, V, S, S),
            "c2w": c2w.reshape(B, V, 4, 4),
            "log_scale": log_scale,
        }


def scale_translation(T: torch.Tensor, k) -> torch.Tensor:
    """Rigid transforms [..., 4, 4] with their translations multiplied by k (out of place, autograd-safe)."""
    t = T[..., :3, 3:] * (k[..., None, None] if torch.is_tensor(k) and k.ndim else k)
    return torch.cat([torch.cat([T[..., :3, :3], t], -1), T[..., 3:, :]], -2)


def metric_outputs(out: dict) -> tuple:
    """Predicted depth [B, V, S, S] (metres) and w2c [B, V, 4, 4] relative to view 0, scaled by the
    metric-scale head: the point maps are rescaled so their mean distance equals exp(log_scale)."""
    local, c2w = out["local_points"], out["c2w"]
    rel = invert_pose(c2w[:, :1]) @ c2w  # [B, V, 4, 4] view -> view 0
    world = torch.einsum("bvij,bvhwj->bvhwi", rel[..., :3, :3], local) + rel[:, :, None, None, :3, 3]
    mean = world.norm(dim=-1).flatten(1).mean(1).clamp_min(1e-6)  # [B]
    k = torch.exp(out["log_scale"]) / mean  # [B]
    rel = scale_translation(rel, k[:, None])
    return local[..., 2] * k[:, None, None, None], invert_pose(rel)


def _weighted_median_scale(
    pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor, n: int = 4096
) -> torch.Tensor:
    """argmin_s sum w |s pred - gt| over xyz (a weighted median of gt / pred), on at most n points."""
    if pred.shape[0] > n:
        idx = torch.linspace(0, pred.shape[0] - 1, n, device=pred.device).long()
        pred, gt, w = pred[idx], gt[idx], w[idx]
    p, g = pred.reshape(-1), gt.reshape(-1)
    ww = (w[:, None].expand_as(pred).reshape(-1) * p.abs()).clamp_min(1e-12)
    ratio = g / torch.where(p.abs() < 1e-12, torch.full_like(p, 1e-12), p)
    order = torch.argsort(ratio)
    cum = torch.cumsum(ww[order], 0)
    s = ratio[order][torch.searchsorted(cum, cum[-1] / 2).clamp(max=len(cum) - 1)]
    return s.abs()


def pi3_loss(
    out: dict, depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, camera_weight: float = 0.2
) -> dict:
    """Pi3's loss for a batch: out from `ReconstructionNet`, ground truth depth [B, V, S, S] (0 =
    invalid), K [B, V, 3, 3] at S, w2c [B, V, 4, 4]. -> {points, camera, scale, total} (scalars)."""
    from common.cameras import depth_to_points

    B, V = depth.shape[:2]
    gt_local = depth_to_points(depth, K)  # [B, V, S, S, 3] camera frames
    valid = depth > 0
    rel = w2c[:, :1] @ invert_pose(w2c)  # [B, V, 4, 4] view -> view 0
    losses = {"points": [], "camera": [], "scale": []}
    for b in range(B):
        m = valid[b]
        if not bool(m.any()):
            continue
        gt_world = (
            torch.einsum("vij,vhwj->vhwi", rel[b, :, :3, :3], gt_local[b]) + rel[b, :, None, None, :3, 3]
        )
        norm_gt = gt_world[m].norm(dim=-1).mean().clamp_min(1e-6)
        gl = gt_local[b] / norm_gt  # [V, S, S, 3]
        pl = out["local_points"][b]
        norm_pred = pl[m].norm(dim=-1).mean().clamp_min(1e-6)
        pl = pl / norm_pred
        zmean = torch.stack(
            [gl[v][..., 2][m[v]].mean() if m[v].any() else gl.new_tensor(1.0) for v in range(V)]
        )
        z = torch.maximum(gl[..., 2], 0.1 * zmean[:, None, None])  # [V, S, S]
        w = 1.0 / (z + 1e-6)
        with torch.no_grad():
            s = _weighted_median_scale(pl[m], gl[m], w[m])
        losses["points"].append(((s * pl[m] - gl[m]).abs().mean(-1) * w[m]).mean())
        # Camera: all ordered pairs of relative poses, prediction against ground truth.
        c2w = scale_translation(out["c2w"][b], s / norm_pred)
        gt_c2w = scale_translation(invert_pose(w2c[b]), 1.0 / norm_gt)
        i, j = torch.triu_indices(V, V, 1, device=depth.device)
        i, j = torch.cat([i, j]), torch.cat([j, i])
        pr = invert_pose(c2w[i]) @ c2w[j]
        gr = invert_pose(gt_c2w[i]) @ gt_c2w[j]
        trans = F.huber_loss(pr[:, :3, 3], gr[:, :3, 3], delta=0.1)
        cos = ((pr[:, :3, :3].transpose(1, 2) @ gr[:, :3, :3]).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
        rot = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6)).mean()
        losses["camera"].append(100 * trans + rot)
        losses["scale"].append((out["log_scale"][b] - torch.log(norm_gt)).abs())
    out_losses = {k: torch.stack(v).mean() if v else depth.new_zeros(()) for k, v in losses.items()}
    out_losses["total"] = out_losses["points"] + camera_weight * out_losses["camera"] + out_losses["scale"]
    return out_losses
