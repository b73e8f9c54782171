"""The geometry encoder: depth, RGB, intrinsics and optional partial meshes / point clouds in,
geometry tokens out (G2VLM text, "Geometry Encoder and 3D Representation").

1. Per-pixel features: a small CNN over RGB, log-depth, the valid mask and local texture (the
   Sobel magnitude of the grey image), sampled every `pixel_stride` pixels where depth is valid;
   each sample is lifted to a world point with `common.cameras.depth_to_points` (OpenCV cameras,
   z-depth, metres) and gets the normal of the depth map there (cross product of its neighbours).
2. Per-vertex features of optional partial meshes or point clouds (trimesh): position and normal
   through an MLP.
3. A graph module over the union: EdgeConv (DGCNN) on the kNN graph of the 3D positions,
   h_i = max_j MLP([f_i, f_j - f_i, p_j - p_i]) over i's k nearest neighbours j.
4. Multi-scale pooling: for each voxel size, the points of a voxel are averaged (features and
   positions); tokens keep the most populated voxels, get a scale embedding and an MLP embedding of
   their position.

Out: `GeometryTokens` (xyz [T, 3] in metres, world frame; feats [T, C]; scale [T]). Every step is a
function of the point *set* (max over neighbours, means over voxels, voxels ordered by count then
coordinates), so the tokens do not depend on the order of the input points (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.cameras import depth_to_points

SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


@dataclass
class GeometryTokens:
    xyz: torch.Tensor  # [T, 3] metres, world frame
    feats: torch.Tensor  # [T, C]
    scale: torch.Tensor  # [T] index into the voxel sizes
    # The points before voxel pooling (after EdgeConv), kept for pooling objects finely: [N, 3], [N, C]
    point_xyz: torch.Tensor | None = None
    point_feats: torch.Tensor | None = None


def point_map_normals(points: torch.Tensor) -> torch.Tensor:
    """Unit normals [V, H, W, 3] of camera-frame point maps [V, H, W, 3] (cross product of the right and
    lower neighbours, turned towards the camera; zero where a neighbour is missing (z <= 0))."""
    dx = F.pad((points[:, :, 1:] - points[:, :, :-1]).permute(0, 3, 1, 2), (0, 1, 0, 0)).permute(0, 2, 3, 1)
    dy = F.pad((points[:, 1:] - points[:, :-1]).permute(0, 3, 1, 2), (0, 0, 0, 1)).permute(0, 2, 3, 1)
    n = torch.cross(dy, dx, dim=-1)  # [V, H, W, 3]
    n = n * torch.where((n * points).sum(-1, keepdim=True) > 0, -1.0, 1.0)  # face the camera
    valid = points[..., 2] > 0
    ok = valid & F.pad(valid[:, :, 1:], (0, 1)) & F.pad(valid[:, 1:], (0, 0, 0, 1))
    return F.normalize(n, dim=-1) * ok[..., None]


def depth_normals(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame unit normals [V, H, W, 3] of z-depth maps [V, H, W] (`point_map_normals`)."""
    return point_map_normals(depth_to_points(depth, K))


def knn_graph(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, k] of each point's k nearest other points (Euclidean; a k-d tree on the positions,
    which carry no gradient through the graph's indices)."""
    from scipy.spatial import cKDTree

    k = min(k, xyz.shape[0] - 1)
    pts = xyz.detach().cpu().double().numpy()
    _, idx = cKDTree(pts).query(pts, k=k + 1)  # the first neighbour is the point itself
    return torch.from_numpy(idx[:, 1:]).long().to(xyz.device)


class EdgeConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim + 3, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        """feats [N, C], xyz [N, 3], nbr [N, k] -> [N, C] (residual)."""
        fi = feats[:, None].expand(-1, nbr.shape[1], -1)  # [N, k, C]
        edge = torch.cat([fi, feats[nbr] - fi, xyz[nbr] - xyz[:, None]], -1)  # [N, k, 2C + 3]
        return feats + self.mlp(edge).max(1).values


def voxel_pool(xyz: torch.Tensor, feats: torch.Tensor, size: float, max_tokens: int) -> tuple:
    """Mean position and feature of the points of each voxel of `size` metres: (xyz [T, 3],
    feats [T, C], counts [T]), the most populated `max_tokens` voxels, ordered by count, then by
    voxel coordinates (independent of the order of the points)."""
    keys = torch.floor(xyz / size).long()  # [N, 3]
    keys = keys - keys.min(0).values
    span = keys.max(0).values + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]  # [N] one integer per voxel
    uniq, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)  # sorted keys
    T = uniq.shape[0]
    sum_xyz = torch.zeros(T, 3, dtype=xyz.dtype, device=xyz.device).index_add_(0, inverse, xyz)
    sum_f = torch.zeros(T, feats.shape[1], dtype=feats.dtype, device=feats.device).index_add_(
        0, inverse, feats
    )
    mean_xyz, mean_f = sum_xyz / counts[:, None], sum_f / counts[:, None]
    order = torch.argsort(-counts, stable=True)[:max_tokens]  # ties keep the sorted-key order
    return mean_xyz[order], mean_f[order], counts[order]


class GeometryEncoder(nn.Module):
    def __init__(
        self,
        dim: int = 64,
        knn: int = 8,
        edgeconv_layers: int = 2,
        voxel_sizes=(0.25, 0.5, 1.0),
        max_tokens: int = 512,
        pixel_stride: int = 2,
    ):
        super().__init__()
        self.knn, self.voxel_sizes = knn, [float(v) for v in voxel_sizes]
        self.max_tokens, self.pixel_stride = max_tokens, pixel_stride
        # The second convolution strides by `pixel_stride`: features only where points are sampled.
        self.pixel_cnn = nn.Sequential(
            nn.Conv2d(6, dim // 2, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=pixel_stride, padding=1),
        )
        self.normal_proj = nn.Linear(3, dim)
        self.vertex_mlp = nn.Sequential(nn.Linear(6, dim), nn.GELU(), nn.Linear(dim, dim))
        self.edgeconvs = nn.ModuleList([EdgeConv(dim) for _ in range(edgeconv_layers)])
        self.scale_embed = nn.Embedding(len(self.voxel_sizes), dim)
        self.pos_mlp = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def _pixel_features(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """[V, H / s, W / s, C] (s = pixel_stride) from RGB, log-depth, the valid mask and the Sobel
        magnitude of the grey image."""
        grey = rgb.mean(1, keepdim=True)  # [V, 1, H, W]
        sobel = SOBEL.to(rgb)
        gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), sobel[None, None])
        gy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), sobel.T[None, None])
        valid = (depth > 0)[:, None]
        x = torch.cat(
            [
                rgb * 2 - 1,
                torch.log(depth.clamp_min(1e-3))[:, None] * valid,
                valid.to(rgb),
                (gx**2 + gy**2).sqrt(),
            ],
            1,
        )  # [V, 6, H, W]
        return self.pixel_cnn(x).permute(0, 2, 3, 1)

    def pixel_points(
        self, rgb: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor
    ) -> tuple:
        """rgb [V, 3, H, W] in [0, 1], depth [V, H, W] (0 = none), K [V, 3, 3], w2c [V, 4, 4] ->
        (xyz [N, 3] world, normals [N, 3] world, feats [N, C]) at valid pixels every `pixel_stride`."""
        feats = self._pixel_features(rgb, depth)  # [V, H/s, W/s, C]
        valid = depth > 0  # [V, H, W]
        world = depth_to_points(depth, K, w2c)  # [V, H, W, 3]
        normals = depth_normals(depth, K) @ w2c[:, None, :3, :3]  # camera -> world: R^T n (row vectors)
        s = self.pixel_stride
        pick = valid[:, ::s, ::s]  # [V, h, w]
        return world[:, ::s, ::s][pick], normals[:, ::s, ::s][pick], feats[pick]

    def pixel_points_from_world(self, rgb, depth, world, normals) -> tuple:
        """As `pixel_points`, for predicted point maps: rgb [V, 3, H, W], depth [V, H, W], world points and
        world normals [V, H, W, 3] (the RGB-only path, which has no intrinsics)."""
        feats = self._pixel_features(rgb, depth)  # [V, H/s, W/s, C]
        s = self.pixel_stride
        pick = (depth > 0)[:, ::s, ::s]
        return world[:, ::s, ::s][pick], normals[:, ::s, ::s][pick], feats[pick]

    def encode_points(self, xyz: torch.Tensor, normals: torch.Tensor, feats: torch.Tensor) -> GeometryTokens:
        """A point set (xyz [N, 3], normals [N, 3], feats [N, C]) -> multi-scale geometry tokens."""
        if xyz.shape[0] < 2:
            raise ValueError(
                f"geometry: {xyz.shape[0]} valid points; the encoder needs depth (or points) to work on"
            )
        feats = feats + self.normal_proj(normals)
        nbr = knn_graph(xyz, self.knn)  # [N, k]
        for conv in self.edgeconvs:
            feats = conv(feats, xyz, nbr)
        out_xyz, out_f, out_s = [], [], []
        for i, size in enumerate(self.voxel_sizes):
            v_xyz, v_f, _ = voxel_pool(xyz, feats, size, self.max_tokens)
            out_xyz.append(v_xyz)
            out_f.append(v_f + self.scale_embed.weight[i])
            out_s.append(torch.full((v_xyz.shape[0],), i, dtype=torch.long, device=xyz.device))
        tok_xyz = torch.cat(out_xyz)  # [T, 3]
        return GeometryTokens(
            xyz=tok_xyz,
            feats=self.norm(torch.cat(out_f) + self.pos_mlp(tok_xyz)),
            scale=torch.cat(out_s),
            point_xyz=xyz,
            point_feats=self.norm(feats),
        )

    def forward(self, rgb, depth, K, w2c, vertices=None, vertex_normals=None) -> GeometryTokens:
        """Views (see `pixel_points`) and optional extra vertices [M, 3] with normals [M, 3] (partial
        meshes or point clouds, world frame) -> GeometryTokens."""
        xyz, normals, feats = self.pixel_points(rgb, depth, K, w2c)
        if vertices is not None and len(vertices):
            vn = vertex_normals if vertex_normals is not None else torch.zeros_like(vertices)
            xyz = torch.cat([xyz, vertices.to(xyz)])
            normals = torch.cat([normals, vn.to(xyz)])
            feats = torch.cat([feats, self.vertex_mlp(torch.cat([vertices, vn], -1).to(feats))])
        return self.encode_points(xyz, normals, feats)
