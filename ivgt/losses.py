"""IVGT training losses (sec. "Training": 2D supervision of rendered RGB, depth and normals, 3D
regularisation, plus VGGT's camera and confidence-weighted depth losses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ivgt.model import pose_encoding


def camera_loss(pose_list, w2c_gt, K_gt, height, width, gamma: float = 0.6) -> torch.Tensor:
    """VGGT camera loss: L1 on the encoding (translation, quaternion up to sign, FoV x 0.5),
    summed over refinement iterations with weights gamma^(K - k - 1). pose_list: [V, 9] each."""
    gt = pose_encoding(w2c_gt, K_gt, height, width)  # [V, 9]
    total = 0.0
    for k, pred in enumerate(pose_list):
        t = (pred[:, :3] - gt[:, :3]).abs().sum(-1)
        q = torch.minimum((pred[:, 3:7] - gt[:, 3:7]).abs().sum(-1), (pred[:, 3:7] + gt[:, 3:7]).abs().sum(-1))
        f = (pred[:, 7:] - gt[:, 7:]).abs().sum(-1)
        total = total + gamma ** (len(pose_list) - k - 1) * (t + q + 0.5 * f).mean()
    return total


def confidence_depth_loss(depth, conf, gt, alpha: float = 0.2) -> torch.Tensor:
    """VGGT / DUSt3R confidence-aware regression: mean(c |d - g| - alpha log c) over valid pixels,
    plus the plain regression term. depth, conf [V, h, w]; gt [V, H, W] resized (nearest)."""
    gt = F.interpolate(gt[:, None], size=depth.shape[-2:], mode="nearest")[:, 0]  # [V, h, w]
    valid = gt > 0
    if not valid.any():
        return depth.sum() * 0
    err = (depth - gt).abs()[valid]
    c = conf[valid]
    return (c * err - alpha * torch.log(c)).mean() + err.mean()


def normal_loss(pred, gt) -> torch.Tensor:
    """MonoSDF normal loss: |n - n_gt|_1 + (1 - n . n_gt) over rays with a known normal; [R, 3]."""
    valid = gt.norm(dim=-1) > 0.5
    if not valid.any():
        return pred.sum() * 0
    p, g = F.normalize(pred[valid], dim=-1), gt[valid]
    return (p - g).abs().sum(-1).mean() + (1 - (p * g).sum(-1)).mean()
