"""Analytic SDFs and their exact ray casts, the ground truth of the renderer and mesh tests and
of the mesh-extraction benchmark."""

from __future__ import annotations

import torch


def sphere_sdf(points: torch.Tensor, center=(0.0, 0.0, 0.0), radius: float = 0.5) -> torch.Tensor:
    """Exact SDF of a sphere at points [..., 3] -> [...] (positive outside)."""
    return (points - points.new_tensor(center)).norm(dim=-1) - radius


def box_sdf(points: torch.Tensor, center=(0.0, 0.0, 0.0), half=(0.3, 0.2, 0.25)) -> torch.Tensor:
    """Exact SDF of an axis-aligned box at points [..., 3] -> [...] (positive outside)."""
    q = (points - points.new_tensor(center)).abs() - points.new_tensor(half)  # [..., 3]
    outside = q.clamp_min(0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp_max(0)
    return outside + inside


def ray_sphere(origins: torch.Tensor, dirs: torch.Tensor, center=(0.0, 0.0, 0.0), radius: float = 0.5):
    """First hit of unit rays [R, 3] with the sphere: (distance [R], inf on a miss; normal [R, 3])."""
    oc = origins - origins.new_tensor(center)  # [R, 3]
    b = (oc * dirs).sum(-1)
    c = (oc * oc).sum(-1) - radius**2
    disc = b * b - c
    t = -b - disc.clamp_min(0).sqrt()
    t = torch.where((disc > 0) & (t > 0), t, torch.full_like(t, float("inf")))
    hit = origins + dirs * torch.where(torch.isfinite(t), t, torch.zeros_like(t))[:, None]
    return t, (hit - origins.new_tensor(center)) / radius
