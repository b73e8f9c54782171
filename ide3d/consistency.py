"""Local cross-view and global scene-level consistency (Sec. 3, designs 2 and 3).

Cross-view: a neighbour frame t' (|t' - t| <= 2) has its predicted depth carried into frame t with
the known poses, D_{t'->t}, and L_cross = mean over the overlap Omega of |D_t - D_{t'->t}| (the
paper's formula). The correspondence p -> p' comes from frame t's ground-truth depth (training
has it; the official code builds its overlap masks from ground-truth depth too): the point seen
at p is projected into t' at p', D_{t'} is sampled there (bilinear), lifted to a 3D point and its
z-depth in frame t is D_{t'->t}(p). Omega: p has ground truth, p' lies inside t' in front of it,
and t' sees the same surface there (its ground-truth depth at p' within 5% of the point's z: no
occlusion). The official code differs: it pairs frames forward only (t -> t+1, t+2) and compares
frame t's prediction with its ground truth on the overlap mask; see the README.

Global: the language model's last hidden states at the visual tokens, through a projection, are
matched to a frozen 3D teacher's per-frame features average-pooled to the same token grid:
L_global = mean over tokens of 1 - cos (the paper; the official code uses the normalised L2
distance, 2 - 2 cos).

Cameras: OpenCV, w2c world-to-camera, K in pixels of the depth maps' size, z-depth in metres.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cameras import depth_to_points, project, relative_pose, transform_points, unproject

OCCLUSION_TOLERANCE = 0.05  # relative z difference above which p' shows another surface


def reproject_depth(
    depth_src: torch.Tensor,
    K_src: torch.Tensor,
    w2c_src: torch.Tensor,
    gt_ref: torch.Tensor,
    K_ref: torch.Tensor,
    w2c_ref: torch.Tensor,
    gt_src: torch.Tensor | None = None,
) -> tuple:
    """The source frame's depth expressed in the reference frame at the reference's pixels.

    depth_src [H, W] (predicted), gt_ref [H, W] (ground truth of the reference, for the
    correspondence), gt_src [H, W] (ground truth of the source, for the occlusion test; None: no
    test); K [3, 3], w2c [4, 4] of each. Returns (depth [H, W], overlap [H, W] bool).
    """
    H, W = gt_ref.shape
    world = depth_to_points(gt_ref, K_ref, w2c_ref)  # [H, W, 3]
    cam_src = transform_points(w2c_src, world.reshape(-1, 3))  # [H*W, 3]
    z = cam_src[:, 2]  # [H*W]
    uv = project(cam_src, K_src)  # [H*W, 2] continuous pixel coordinates (centres at +0.5)
    inside = (
        (gt_ref.reshape(-1) > 0)
        & (z > 0.01)
        & (uv[:, 0] >= 0)
        & (uv[:, 0] < W)
        & (uv[:, 1] >= 0)
        & (uv[:, 1] < H)
    )
    grid = torch.stack([uv[:, 0] / W * 2 - 1, uv[:, 1] / H * 2 - 1], -1)  # [H*W, 2] in [-1, 1]
    grid = torch.where(inside[:, None], grid, torch.zeros_like(grid))[None, None]  # [1, 1, H*W, 2]
    sampled = F.grid_sample(depth_src[None, None], grid, mode="bilinear", align_corners=False)[
        0, 0, 0
    ]  # [H*W]
    if gt_src is not None:
        seen = F.grid_sample(gt_src[None, None], grid, mode="nearest", align_corners=False)[0, 0, 0]  # [H*W]
        inside = inside & ((seen - z).abs() <= OCCLUSION_TOLERANCE * z)
    # Lift the sampled source depth at p' and express it in the reference camera.
    src_points = unproject(torch.where(inside[:, None], uv, torch.zeros_like(uv)), sampled, K_src)  # [H*W, 3]
    ref_points = transform_points(relative_pose(w2c_src, w2c_ref), src_points)  # [H*W, 3] reference camera
    depth = torch.where(inside, ref_points[:, 2], torch.zeros_like(z)).reshape(H, W)
    return depth, inside.reshape(H, W)


def neighbour_frames(num_frames: int, radius: int, rng: np.random.Generator) -> list[int]:
    """For each frame t a neighbour t' drawn uniformly from [t - radius, t + radius] \\ {t} (in range)."""
    out = []
    for t in range(num_frames):
        choices = [s for s in range(t - radius, t + radius + 1) if s != t and 0 <= s < num_frames]
        out.append(int(rng.choice(choices)))
    return out


def cross_view_loss(
    depth: torch.Tensor, gt: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, neighbours: list[int]
) -> torch.Tensor:
    """L_cross for one sample: depth, gt [F, H, W], K [F, 3, 3], w2c [F, 4, 4], neighbours[t] = t'.
    Mean over frames (with an overlap) of the mean |D_t - D_{t'->t}| over the overlap."""
    terms = []
    for t, s in enumerate(neighbours):
        warped, overlap = reproject_depth(depth[s], K[s], w2c[s], gt[t], K[t], w2c[t], gt_src=gt[s])
        if int(overlap.sum()) >= 10:  # too small an overlap says nothing (the official code: < 10 pixels)
            terms.append((depth[t] - warped)[overlap].abs().mean())
    return torch.stack(terms).mean() if terms else depth.sum() * 0.0


class GlobalProjection(nn.Module):
    """proj_3d: language-model width -> teacher width (official: Linear 3584 -> 7168, GELU, -> 2048)."""

    def __init__(self, text_hidden: int, teacher_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(text_hidden, 2 * text_hidden), nn.GELU(), nn.Linear(2 * text_hidden, teacher_dim)
        )

    def forward(self, x):
        return self.net(x)


def global_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student [F, p, p, D] (projected token states), teacher [F, h, w, D] (frozen features) ->
    mean over tokens of 1 - cos, the teacher average-pooled to p x p (official: adaptive avg pool)."""
    p = student.shape[1]
    t = F.adaptive_avg_pool2d(teacher.permute(0, 3, 1, 2).to(student), p).permute(0, 2, 3, 1)  # [F, p, p, D]
    return (1 - F.cosine_similarity(student, t.detach(), dim=-1)).mean()
