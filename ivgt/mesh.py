"""Mesh extraction from an SDF: dense marching cubes and the coarse-to-fine band scheme.

`resolution` is the number of cells per axis (resolution + 1 grid points). Coarse-to-fine
(after sdfstudio's multi-resolution pyramid and the MISE idea of occupancy networks): evaluate
the SDF on a grid 2^levels times coarser, then at each finer level trilinearly upsample and
re-evaluate only the points whose interpolated |SDF| is below `band` coarse-voxel diagonals; the
rest keep the interpolated value (far from the surface only its sign matters). For a
1-Lipschitz SDF, band = 2 guarantees that every point within one voxel diagonal of the surface is
evaluated exactly, so the surface equals the dense one. A learned SDF is only roughly metric
(before the eikonal stage), so widen the band there. Marching cubes (scikit-image) then runs
only on the evaluated band (its `mask`).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage import measure


class CountingSDF:
    """Wraps sdf_fn(points [N, 3]) -> [N], evaluating in chunks and counting the queries."""

    def __init__(self, sdf_fn: Callable[[torch.Tensor], torch.Tensor], chunk: int = 65536):
        self.sdf_fn, self.chunk, self.queries = sdf_fn, chunk, 0

    @torch.no_grad()
    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        self.queries += points.shape[0]
        out = [self.sdf_fn(points[s:s + self.chunk]).reshape(-1) for s in range(0, points.shape[0], self.chunk)]
        return torch.cat(out) if out else points.new_zeros(0)


def _grid_points(lo: torch.Tensor, hi: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [torch.linspace(float(lo[i]), float(hi[i]), n) for i in range(3)]


def _marching_cubes(values: np.ndarray, lo: np.ndarray, voxel: np.ndarray, mask=None):
    if not (values.min() < 0 < values.max()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    # skimage winds faces towards decreasing values ("descent"); with the SDF negative inside
    # that gives outward normals (checked: positive trimesh volume for a sphere).
    verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=tuple(voxel),
                                                gradient_direction="descent", mask=mask)
    return verts + lo, faces


def _check(bounds, resolution: int):
    bounds = torch.as_tensor(bounds, dtype=torch.float32)
    if bounds.shape != (2, 3) or not bool((bounds[1] > bounds[0]).all()):
        raise ValueError(f"bounds: expected [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, got {bounds.tolist()}")
    if int(resolution) != resolution or resolution < 2:
        raise ValueError(f"resolution: expected an integer >= 2 (cells per axis), got {resolution}")
    return bounds


def extract_dense(sdf_fn, bounds, resolution: int, chunk: int = 65536):
    """Marching cubes on the full (resolution + 1)^3 grid. Returns (vertices [N, 3], faces [F, 3],
    stats {"sdf_queries", "grid_points"})."""
    bounds = _check(bounds, resolution)
    n = resolution + 1
    sdf = CountingSDF(sdf_fn, chunk)
    axes = _grid_points(bounds[0], bounds[1], n)
    values = torch.empty(n, n, n)
    for i in range(n):  # one x-slab at a time bounds the memory of the query points
        yy, zz = torch.meshgrid(axes[1], axes[2], indexing="ij")  # [n, n]
        pts = torch.stack([torch.full_like(yy, float(axes[0][i])), yy, zz], -1).reshape(-1, 3)  # [n*n, 3]
        values[i] = sdf(pts).reshape(n, n).cpu()
    voxel = ((bounds[1] - bounds[0]) / resolution).numpy()
    v, f = _marching_cubes(values.numpy(), bounds[0].numpy(), voxel)
    return v, f, {"sdf_queries": sdf.queries, "grid_points": n**3}


def extract_coarse_to_fine(sdf_fn, bounds, resolution: int, levels: int = 3, band: float = 2.0,
                           chunk: int = 65536):
    """Coarse-to-fine band extraction (module docstring). resolution must be divisible by
    2^levels. Returns (vertices [N, 3], faces [F, 3], stats {"sdf_queries", "grid_points",
    "queries_per_level"})."""
    bounds = _check(bounds, resolution)
    if resolution % (2**levels) != 0:
        raise ValueError(f"resolution: {resolution} must be divisible by 2^levels = {2**levels}")
    sdf = CountingSDF(sdf_fn, chunk)
    extent = bounds[1] - bounds[0]  # [3]
    n = resolution // 2**levels + 1
    axes = _grid_points(bounds[0], bounds[1], n)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # [n, n, n, 3]
    values = sdf(grid.reshape(-1, 3)).reshape(n, n, n).cpu()  # [n, n, n]
    per_level = [sdf.queries]
    evaluated = None
    for _ in range(levels):
        coarse_diag = float((extent / (n - 1)).norm())
        n = 2 * (n - 1) + 1
        # align_corners=True keeps every coarse point exactly where it was.
        values = F.interpolate(values[None, None], size=(n, n, n), mode="trilinear", align_corners=True)[0, 0]
        evaluated = values.abs() < band * coarse_diag  # [n, n, n]
        idx = evaluated.nonzero()  # [M, 3]
        step = extent / (n - 1)
        pts = bounds[0] + idx.float() * step  # [M, 3]
        values[evaluated] = sdf(pts).cpu()
        per_level.append(pts.shape[0])
    voxel = (extent / resolution).numpy()
    mask = evaluated.numpy() if evaluated is not None else None
    v, f = _marching_cubes(values.numpy(), bounds[0].numpy(), voxel, mask)
    return v, f, {"sdf_queries": sdf.queries, "grid_points": n**3, "queries_per_level": per_level}


def bounds_from_points(points: torch.Tensor, quantile: float = 0.02, margin: float = 0.05) -> torch.Tensor:
    """Robust axis-aligned bounds [2, 3] of points [N, 3]: the quantile range plus a margin."""
    lo = torch.quantile(points, quantile, dim=0)
    hi = torch.quantile(points, 1 - quantile, dim=0)
    pad = margin * (hi - lo).max().clamp_min(1e-3)
    return torch.stack([lo - pad, hi + pad])


def voxel_size(bounds, resolution: int) -> float:
    b = torch.as_tensor(bounds)
    return float(((b[1] - b[0]) / resolution).max())


__all__ = ["CountingSDF", "extract_dense", "extract_coarse_to_fine", "bounds_from_points", "voxel_size", "math"]
