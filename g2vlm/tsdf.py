"""Dense reconstruction outputs: the coloured point cloud of depth maps, and a mesh by TSDF fusion and
marching cubes (Curless & Levoy 1996; scikit-image's `marching_cubes`).

Depth is z-depth in metres (0 = none), cameras OpenCV (K in pixels, w2c world-to-camera). The TSDF
grid spans the observed points plus a margin; its voxel is `voxel` unless that would exceed
`max_cells` cells along an axis (outdoor yards), in which case it grows. The truncation is 3 voxels.
"""

from __future__ import annotations

import numpy as np
import torch

from common.cameras import depth_to_points


def colored_points(depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, rgb: torch.Tensor) -> tuple:
    """Depth [V, H, W], K [V, 3, 3], w2c [V, 4, 4], rgb [V, 3, H, W] -> (points [N, 3], colours [N, 3] in
    [0, 1]) of every pixel with depth > 0, world frame."""
    pts = depth_to_points(depth, K, w2c)  # [V, H, W, 3]
    valid = depth > 0
    return pts[valid], rgb.permute(0, 2, 3, 1)[valid]


def tsdf_mesh(
    depth: torch.Tensor,
    K: torch.Tensor,
    w2c: torch.Tensor,
    rgb: torch.Tensor,
    voxel: float = 0.05,
    max_cells: int = 160,
):
    """Fuse the depth maps into a TSDF and extract its zero level set: a coloured trimesh mesh (None when
    nothing is observed)."""
    import trimesh
    from skimage.measure import marching_cubes

    pts, _ = colored_points(depth, K, w2c, rgb)
    if pts.shape[0] < 10:
        return None
    lo, hi = pts.min(0).values, pts.max(0).values
    voxel = max(voxel, float((hi - lo).max()) / (max_cells - 6))
    trunc = 3 * voxel
    lo, hi = lo - 2 * trunc, hi + 2 * trunc
    dims = torch.ceil((hi - lo) / voxel).long() + 1  # [3]
    axes = [lo[i] + voxel * torch.arange(int(dims[i]), dtype=pts.dtype) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [N, 3] voxel centres
    tsdf = torch.zeros(grid.shape[0])
    weight = torch.zeros(grid.shape[0])
    color = torch.zeros(grid.shape[0], 3)
    V, H, W = depth.shape
    for v in range(V):
        cam = grid @ w2c[v, :3, :3].T + w2c[v, :3, 3]  # [N, 3]
        z = cam[:, 2]
        uv = cam[:, :2] / z.clamp_min(1e-6)[:, None] * K[v, [0, 1], [0, 1]] + K[v, :2, 2]
        u, w_ = uv[:, 0].floor().long(), uv[:, 1].floor().long()  # pixel containing the projection
        inside = (z > 0) & (u >= 0) & (u < W) & (w_ >= 0) & (w_ < H)
        d = torch.zeros_like(z)
        d[inside] = depth[v, w_[inside], u[inside]]
        sdf = d - z
        upd = inside & (d > 0) & (sdf > -trunc)
        t = (sdf / trunc).clamp(-1, 1)
        tsdf[upd] = (tsdf[upd] * weight[upd] + t[upd]) / (weight[upd] + 1)
        color[upd] = (color[upd] * weight[upd, None] + rgb[v, :, w_[upd], u[upd]].T) / (weight[upd, None] + 1)
        weight[upd] += 1
    volume = tsdf.reshape(*dims.tolist()).numpy()
    volume[weight.reshape(*dims.tolist()).numpy() == 0] = 1.0  # unobserved: outside
    if volume.min() >= 0 or volume.max() <= 0:
        return None
    verts, faces, normals, _ = marching_cubes(volume, level=0.0, spacing=(voxel, voxel, voxel))
    verts = verts + lo.numpy()
    idx = np.clip(np.round((verts - lo.numpy()) / voxel).astype(int), 0, dims.numpy() - 1)
    flat = np.ravel_multi_index(idx.T, dims.numpy())
    colors = (color.numpy()[flat] * 255).clip(0, 255).astype(np.uint8)
    return trimesh.Trimesh(
        vertices=verts, faces=faces, vertex_normals=normals, vertex_colors=colors, process=False
    )


def save_point_cloud(path, points: torch.Tensor, colors: torch.Tensor) -> None:
    import trimesh

    rgba = np.concatenate(
        [(colors.numpy() * 255).clip(0, 255).astype(np.uint8), np.full((len(colors), 1), 255, np.uint8)], 1
    )
    trimesh.PointCloud(points.numpy(), colors=rgba).export(str(path))
