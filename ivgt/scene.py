"""IVGT's canonical scene representation: per-view features, depth and cameras in the first
camera's frame, queried at any 3D point as a continuous SDF and colour field (project into every
view, sample, aggregate, decode), rendered from any camera and meshed at any resolution.

Conventions: OpenCV cameras, w2c world-to-camera, K in pixels of the backbone's input size;
`depth` is z-depth, `distance` the length along a ray (DESIGN.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from common.cameras import camera_centers, project, resize_intrinsics
from ivgt.render import render_rays

if TYPE_CHECKING:
    from ivgt.model import IVGT


def positional_encoding(x: torch.Tensor, freqs: int) -> torch.Tensor:
    """NeRF encoding [x, sin(2^k pi x), cos(2^k pi x)], x [..., 3] -> [..., 3 + 6 freqs]."""
    scales = 2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype) * math.pi  # [F]
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)  # [..., 3F]
    return torch.cat([x, angles.sin(), angles.cos()], -1)



def sample_views(points: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, maps: torch.Tensor,
                 height: int, width: int):
    """Project world points [N, 3] into V views and sample maps [V, C, h, w] bilinearly.

    The maps cover the image (height, width) (any h, w), so pixel coordinates from
    `common.cameras.project` (centres at u + 0.5) map to grid_sample's [-1, 1] with
    align_corners=False exactly. Returns (samples [V, N, C], z [V, N] camera depth, inside [V, N]
    bool: in front of the camera and within the image).
    """
    cam = points[None] @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]  # [V, N, 3]
    z = cam[..., 2]  # [V, N]
    uv = project(torch.cat([cam[..., :2], z.clamp_min(1e-6)[..., None]], -1), K)  # [V, N, 2]
    grid = torch.stack([2 * uv[..., 0] / width - 1, 2 * uv[..., 1] / height - 1], -1)  # [V, N, 2]
    inside = (z > 1e-6) & (grid.abs() <= 1).all(-1)  # [V, N]
    grid = grid.clamp(-2, 2)  # far-out points: finite, masked by `inside`
    samples = F.grid_sample(maps, grid[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
    return samples[..., 0].transpose(1, 2), z, inside  # [V, N, C]


class Scene:
    """A reconstructed scene: per-view features, depth and cameras in the first-frame coordinates,
    queried as a continuous SDF and colour field (IVGT's neural scene representation)."""

    def __init__(self, model: IVGT, images, features, depth, K, w2c, pairs: int | None = None):
        self.model, self.cfg, self.decoder = model, model.cfg, model.decoder
        self.images = images  # [V, 3, H, W]
        self.features = features  # [V, C, h, w]
        self.depth = depth  # [V, h, w] predicted by the depth head
        self.K, self.w2c = K, w2c  # [V, 3, 3], [V, 4, 4] at the backbone's input size
        self.height, self.width = images.shape[-2:]
        self.original_size = (self.height, self.width)
        self.units_per_given = 1.0  # model units per unit of the given cameras (`IVGT.reconstruct`)
        # Work per evaluation: `pairs` (view, point) pairs, so that memory does not grow with the
        # number of views (a query samples every view): chunks of pairs / V points. On a CPU 2^15
        # pairs keep the [V, N, hidden] temporaries near the caches (a 64x64 render of the tiny
        # model ~25% faster than with 2^18); a GPU wants larger launches.
        self.pairs = pairs or (2**15 if images.device.type == "cpu" else 2**18)
        self.chunk = max(64, self.pairs // images.shape[0])
        self.maps = torch.cat([features, images_at(images, features.shape[-2:]), depth[:, None]], 1)  # [V, C+4, h, w]

    @property
    def cameras(self) -> dict:
        """Predicted cameras for the original image size: K [V, 3, 3], w2c [V, 4, 4] (first = I)."""
        K = resize_intrinsics(self.K, (self.height, self.width), self.original_size)
        return {"K": K.detach(), "w2c": self.w2c.detach(), "height": self.original_size[0], "width": self.original_size[1]}

    def query(self, points: torch.Tensor, with_color: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """points [N, 3] -> (sdf [N], colour [N, 3], or None with with_color=False: the SDF-only
        passes of rendering and meshing skip the colour decoder); differentiable."""
        cfg, dec = self.cfg, self.decoder
        s, z, inside = sample_views(points, self.K, self.w2c, self.maps, self.height, self.width)  # [V, N, C+4]
        feat, rgb, depth = s[..., :-4], s[..., -4:-1], s[..., -1]  # [V, N, C], [V, N, 3], [V, N]
        diff = depth - z  # [V, N]: > 0 in front of the view's surface (free space), < 0 behind it
        raydepth = torch.tanh(diff / cfg.truncation)  # [V, N]
        inside_f = inside.float()
        # Visibility: a point behind the view's predicted surface (beyond a margin) is occluded.
        vis = inside_f * torch.sigmoid((diff + cfg.visibility_margin * depth) / (cfg.visibility_softness * depth + 1e-6))
        w = vis / (vis.sum(0, keepdim=True) + 1e-6)  # [V, N]
        h = dec.per_view(torch.cat([feat, rgb, raydepth[..., None]], -1))  # [V, N, Hd]
        # Weighted mean and variance over views; the variance as sum w h^2 - mean^2 (2 - sum w),
        # equal to sum w (h - mean)^2 (sum w is 1 unless no view sees x) with two fewer [V, N, Hd]
        # passes forward and backward: the per-view aggregation is most of a query's cost.
        wh = w[..., None] * h  # [V, N, Hd]
        mean = wh.sum(0)  # [N, Hd]
        var = (wh * h).sum(0) - mean * mean * (2 - w.sum(0))[:, None]  # [N, Hd]
        n_in = inside_f.sum(0)  # [N]
        tsdf = (inside_f * raydepth).sum(0) / n_in.clamp_min(1)  # [N] raydepth over the views seeing x
        x = torch.cat([mean, var, tsdf[:, None], (n_in / inside.shape[0])[:, None],
                       positional_encoding(points, cfg.pe_freqs)], -1)
        out = dec.sdf_mlp(x)  # [N, 1 + Hd]
        if not with_color:
            return out[:, 0], None
        blend = (w[..., None] * rgb).sum(0)  # [N, 3]
        color = torch.sigmoid(dec.color_mlp(torch.cat([out[:, 1:], blend], -1)))  # [N, 3]
        return out[:, 0], color

    def _field(self, points: torch.Tensor):  # points [R, S, 3]
        sdf, color = self.query(points.reshape(-1, 3))
        return sdf.reshape(points.shape[:-1]), color.reshape(*points.shape[:-1], 3)

    def _sdf_only(self, points: torch.Tensor) -> torch.Tensor:  # points [R, S, 3] -> [R, S]
        return self.query(points.reshape(-1, 3), with_color=False)[0].reshape(points.shape[:-1])

    def sdf(self, points: torch.Tensor) -> torch.Tensor:
        """SDF [N] at points [N, 3] (first-camera frame), chunked, no gradient."""
        with torch.no_grad():
            return torch.cat([self.query(points[i:i + self.chunk], with_color=False)[0]
                              for i in range(0, len(points), self.chunk)])

    def color(self, points: torch.Tensor) -> torch.Tensor:
        """Colour [N, 3] in [0, 1] at points [N, 3], chunked, no gradient."""
        with torch.no_grad():
            return torch.cat([self.query(points[i:i + self.chunk])[1] for i in range(0, len(points), self.chunk)])

    def points(self, max_points: int = 20000) -> torch.Tensor:
        """World points [N, 3] back-projected from the predicted depth maps (for bounds)."""
        from common.cameras import depth_to_points

        h, w = self.depth.shape[-2:]
        K = resize_intrinsics(self.K, (self.height, self.width), (h, w))
        pts = depth_to_points(self.depth, K, self.w2c).reshape(-1, 3)  # [V*h*w, 3]
        step = max(1, pts.shape[0] // max_points)
        return pts[::step].detach()

    def far_for(self, origins: torch.Tensor) -> torch.Tensor:
        """Per-ray far bound [R]: beyond every predicted point seen from the ray's origin."""
        pts = self.points()
        center = pts.median(0).values
        radius = torch.quantile((pts - center).norm(dim=-1), 0.98)
        return (origins - center).norm(dim=-1) + 1.2 * radius

    def _field_without_color(self, points: torch.Tensor):  # points [R, S, 3]: colour 0, never decoded
        sdf = self._sdf_only(points)  # [R, S]
        return sdf, sdf.new_zeros(()).expand(*sdf.shape, 3)

    def render_rays(self, origins, dirs, create_graph: bool = False, far: torch.Tensor | None = None,
                    rgb: bool = True) -> dict:
        """Volume-render rays (origins, dirs [R, 3], first-camera frame) between cfg.near and far
        [R] (default `far_for`); `ivgt.render.render_rays` says what comes back (rgb=False: its
        "rgb" is 0, the colour decoder not run)."""
        near = torch.full_like(origins[:, 0], self.cfg.near)
        far = torch.maximum(self.far_for(origins) if far is None else far, near * 2)
        field = self._field if rgb else self._field_without_color
        return render_rays(field, self._sdf_only, origins, dirs, near, far, density=self.cfg.density,
                           variance=self.decoder.variance, n_coarse=self.cfg.n_coarse, n_fine=self.cfg.n_fine,
                           up_sample_steps=self.cfg.up_sample_steps, create_graph=create_graph)

    def subset(self, indices) -> Scene:
        """The scene of the input views `indices` only (their images, features, depth and cameras,
        in the same frame): its queries aggregate over those views alone."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)  # [k]
        scene = Scene(self.model, self.images[idx], self.features[idx], self.depth[idx], self.K[idx], self.w2c[idx],
                      self.pairs)
        scene.original_size, scene.units_per_given = self.original_size, self.units_per_given
        return scene

    def nearest_views(self, w2c: torch.Tensor, k: int) -> torch.Tensor:
        """Indices [min(k, V)], ascending, of the input views nearest the camera w2c [4, 4]: ranked by
        the distance between camera centres plus the angle between optical axes (radians) times
        the scene's median predicted depth, i.e. about how far each term moves the content at a
        typical depth. Centres alone would not tell apart views turned about one point (a
        panorama), angles alone views side by side along a corridor."""
        centres = camera_centers(self.w2c)  # [V, 3]
        target = camera_centers(w2c.to(centres))  # [3]
        axes = self.w2c[:, 2, :3]  # [V, 3] optical axes in the world frame (row z of R)
        angle = torch.acos((axes @ w2c[2, :3].to(axes)).clamp(-1, 1))  # [V]
        score = (centres - target).norm(dim=-1) + angle * self.depth.median()  # [V]
        return torch.argsort(score, stable=True)[:k].sort().values

    def render(self, K: torch.Tensor, w2c: torch.Tensor, height: int, width: int, chunk: int | None = None,
               views: int | None = None, rgb: bool = True) -> dict:
        """Render any camera (K [3, 3] pixels, w2c [4, 4], first-camera frame): rgb [3, H, W],
        depth [H, W] (z), normals [3, H, W] (unit, that camera's frame, towards it), opacity [H, W].
        `views` = k > 0 aggregates every query over the k input views nearest that camera
        (`nearest_views`, as IBRNet selects source views) instead of all V: a render then costs
        O(k), not O(V); None or 0: all views. The far bound comes from every view either way.
        rgb=False leaves out "rgb" and the colour decoder (depth and normals only, as the demo writes).
        Rays go `chunk` at a time (default: `pairs` (view, sample) pairs per chunk, so that memory
        stays flat as views are added); the result does not depend on it."""
        from common.cameras import pixel_rays

        origins, dirs = pixel_rays(K.float(), w2c.float(), height, width)  # [H, W, 3]
        origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
        if views is not None and views < 0:
            raise ValueError(f"views: expected an int >= 0 (0: all views), got {views}")
        far = self.far_for(origins)  # [HW]
        scene = self.subset(self.nearest_views(w2c, views)) if views else self
        if chunk is None:
            chunk = max(16, self.pairs // (scene.images.shape[0] * (self.cfg.n_coarse + self.cfg.n_fine)))
        parts = []
        for i in range(0, origins.shape[0], chunk):
            out = scene.render_rays(origins[i:i + chunk], dirs[i:i + chunk], far=far[i:i + chunk], rgb=rgb)
            parts.append({k: out[k].detach() for k in ("rgb", "distance", "normal", "opacity")})
        out = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        R = w2c[:3, :3].float()
        depth = out["distance"] * (dirs @ R[2])  # z = distance * (d . camera z axis)
        normals = F.normalize(out["normal"] @ R.T, dim=-1)  # [HW, 3] camera frame
        maps = {
            "rgb": out["rgb"].T.reshape(3, height, width).clamp(0, 1),
            "depth": depth.reshape(height, width),
            "normals": normals.T.reshape(3, height, width),
            "opacity": out["opacity"].reshape(height, width),
        }
        if not rgb:
            del maps["rgb"]
        return maps

    def extract_mesh(self, resolution: int = 64, bounds=None, coarse_to_fine: bool = True, levels: int = 2,
                     band: float = 4.0):
        """Coloured trimesh.Trimesh of the zero level set inside bounds [2, 3] (default: robust
        bounds of the predicted depth points). Vertex colours query the colour decoder; the
        number of SDF queries is in mesh.metadata["sdf_queries"]."""
        import numpy as np
        import trimesh

        from ivgt.mesh import bounds_from_points, extract_coarse_to_fine, extract_dense

        if bounds is None:
            bounds = bounds_from_points(self.points())
        bounds = torch.as_tensor(bounds, dtype=torch.float32)
        device = self.images.device
        fn = lambda p: self.sdf(p.to(device)).cpu()  # noqa: E731
        if coarse_to_fine:
            v, f, stats = extract_coarse_to_fine(fn, bounds, resolution, levels=levels, band=band)
        else:
            v, f, stats = extract_dense(fn, bounds, resolution)
        mesh = trimesh.Trimesh(vertices=v, faces=f, process=False)
        if len(v):
            colors = self.color(torch.as_tensor(v, dtype=torch.float32, device=device)).cpu().numpy()
            mesh.visual.vertex_colors = np.concatenate([(colors * 255).round().astype(np.uint8),
                                                        np.full((len(v), 1), 255, np.uint8)], 1)
        mesh.metadata.update(stats)
        return mesh


def images_at(images: torch.Tensor, size) -> torch.Tensor:
    """images [V, 3, H, W] resized (antialiased) to size (h, w)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
