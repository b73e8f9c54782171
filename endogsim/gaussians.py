"""4D Gaussians: canonical 3D Gaussians plus a HexPlane deformation field over time.

The deformation follows 4DGaussians / EndoGaussian (the 4DGS the paper builds on): six 2D feature
planes over the coordinate pairs (x,y), (x,z), (y,z), (x,t), (y,t), (z,t) at several resolutions,
features multiplied across planes and concatenated across resolutions, a small MLP, and heads for
the changes of position, log-scale and rotation that start at zero, so the field is the identity
at initialisation. Saved with diffusers' `save_pretrained` (config.json + safetensors).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from common.cameras import depth_to_points, invert_pose

from .render import RenderOutput, render

__all__ = ["HexPlane", "GaussianModel", "SH_C0", "SH_C1", "eval_sh"]

SH_C0 = 0.28209479177387814  # real spherical harmonics constants (3DGS's sh_utils)
SH_C1 = 0.4886025119029199
PAIRS = list(itertools.combinations(range(4), 2))  # (x,y),(x,z),(x,t),(y,z),(y,t),(z,t)


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """RGB [N, 3] from SH coefficients [N, (deg+1)^2, 3] (degree 0 or 1) and unit view directions [N, 3]."""
    rgb = SH_C0 * sh[:, 0]
    if sh.shape[1] > 1:
        x, y, z = dirs.unbind(-1)
        rgb = rgb - SH_C1 * y[:, None] * sh[:, 1] + SH_C1 * z[:, None] * sh[:, 2] - SH_C1 * x[:, None] * sh[:, 3]
    return torch.clamp(rgb + 0.5, min=0.0)


class HexPlane(nn.Module):
    """Multi-resolution planes over the six pairs of (x, y, z, t); inputs normalised to [-1, 1]."""

    def __init__(self, resolution: tuple[int, int, int, int], multires: tuple[int, ...], features: int):
        super().__init__()
        self.planes = nn.ParameterList()
        for m in multires:
            res = [resolution[0] * m, resolution[1] * m, resolution[2] * m, resolution[3]]  # time not scaled
            for i, j in PAIRS:
                # 4DGaussians' init: spatial planes uniform(0.1, 0.5), planes involving time ones
                # (so a point's feature starts independent of t).
                p = torch.ones(1, features, res[j], res[i]) if j == 3 else \
                    torch.empty(1, features, res[j], res[i]).uniform_(0.1, 0.5)
                self.planes.append(nn.Parameter(p))
        self.n_scales = len(multires)
        self.out_dim = features * len(multires)

    def forward(self, xyzt: torch.Tensor) -> torch.Tensor:
        """xyzt [N, 4] in [-1, 1] -> features [N, features * n_scales]."""
        feats = []
        for s in range(self.n_scales):
            f = 1.0
            for k, (i, j) in enumerate(PAIRS):
                grid = xyzt[:, [i, j]][None, :, None, :]  # [1, N, 1, 2] (x along dim i, y along dim j)
                f = f * F.grid_sample(self.planes[6 * s + k], grid, align_corners=True)[0, :, :, 0].T  # [N, C]
            feats.append(f)
        return torch.cat(feats, -1)


class GaussianModel(ModelMixin, ConfigMixin):
    """N canonical Gaussians (means, quaternions (w,x,y,z), log-scales, opacity logits, SH of degree
    0-1) and a HexPlane + MLP deformation giving (d_xyz, d_log_scale, d_quat) at time t in [0, 1]."""

    @register_to_config
    def __init__(self, num_points: int = 1024, sh_degree: int = 1,
                 aabb: tuple = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),
                 plane_resolution: tuple = (32, 32, 32, 16), multires: tuple = (1, 2),
                 plane_features: int = 16, mlp_width: int = 64, mlp_depth: int = 1):
        super().__init__()
        if sh_degree not in (0, 1):
            raise ValueError(f"GaussianModel: sh_degree must be 0 or 1, got {sh_degree}")
        n = num_points
        self.means = nn.Parameter(torch.zeros(n, 3))
        self.quats = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.log_scales = nn.Parameter(torch.full((n, 3), -4.0))
        self.opacity_logits = nn.Parameter(torch.zeros(n))
        self.sh = nn.Parameter(torch.zeros(n, (sh_degree + 1) ** 2, 3))
        self.register_buffer("bounds", torch.tensor(aabb, dtype=torch.float32))  # [2, 3]
        self.grid = HexPlane(tuple(plane_resolution), tuple(multires), plane_features)
        layers, d = [], self.grid.out_dim
        for _ in range(mlp_depth):
            layers += [nn.Linear(d, mlp_width), nn.ReLU()]
            d = mlp_width
        self.mlp = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({"xyz": nn.Linear(d, 3), "scale": nn.Linear(d, 3), "rot": nn.Linear(d, 4)})
        for h in self.heads.values():  # identity deformation at start
            nn.init.zeros_(h.weight)
            nn.init.zeros_(h.bias)

    def deform(self, t: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Deformed Gaussians at time t: means [N,3], quats [N,4], scales [N,3], opacities [N]."""
        lo, hi = self.bounds[0], self.bounds[1]
        x = (2 * (self.means - lo) / (hi - lo) - 1).clamp(-1, 1)  # [N, 3]
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0], 1) * 2 - 1  # [N, 1]
        h = self.mlp(self.grid(torch.cat([x, tt], -1)))  # [N, W]
        return {"means": self.means + self.heads["xyz"](h),
                "quats": self.quats + self.heads["rot"](h),
                "scales": torch.exp(self.log_scales + self.heads["scale"](h)),
                "opacities": torch.sigmoid(self.opacity_logits)}

    def colors(self, means: torch.Tensor, w2c: torch.Tensor) -> torch.Tensor:
        """View-dependent RGB [N, 3] seen from the camera of w2c [4, 4]."""
        centre = invert_pose(w2c)[:3, 3]
        return eval_sh(self.sh, F.normalize(means - centre, dim=-1))

    def render(self, t, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int, **kw) -> RenderOutput:
        g = self.deform(t)
        return render(g["means"], g["quats"], g["scales"], g["opacities"], self.colors(g["means"], w2c),
                      w2c, K, width, height, **kw)

    @classmethod
    def from_depth(cls, image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor,
                   mask: torch.Tensor | None = None, stride: int = 2, opacity: float = 0.5, **config):
        """Initialise from one RGB frame [H, W, 3] in [0, 1] and its z-depth [H, W] (EndoGaussian's
        holistic initialisation): one Gaussian per `stride`-th valid pixel at the back-projected
        point, isotropic with the pixel footprint stride * z / f, coloured by the pixel (SH DC term).
        mask [H, W] bool marks pixels to use (e.g. tissue); depth <= 0 is skipped."""
        if image.shape[:2] != depth.shape or image.shape[-1] != 3:
            raise ValueError(f"from_depth: image must be [H, W, 3] matching depth [H, W]; got "
                             f"{tuple(image.shape)} and {tuple(depth.shape)}")
        pts = depth_to_points(depth, K, w2c)[::stride, ::stride].reshape(-1, 3)  # [M, 3] world
        rgb = image[::stride, ::stride].reshape(-1, 3)  # [M, 3]
        z = depth[::stride, ::stride].reshape(-1)  # [M]
        ok = z > 0
        if mask is not None:
            ok &= mask[::stride, ::stride].reshape(-1).bool()
        if not ok.any():
            raise ValueError("from_depth: no pixel with depth > 0 inside the mask")
        pts, rgb, z = pts[ok], rgb[ok], z[ok]
        pad = 0.1 * (pts.max(0).values - pts.min(0).values).clamp(min=1e-3)  # [3]
        aabb = ((pts.min(0).values - pad).tolist(), (pts.max(0).values + pad).tolist())
        model = cls(num_points=pts.shape[0], aabb=aabb, **config)
        with torch.no_grad():
            model.means.copy_(pts)
            model.log_scales.copy_(torch.log(stride * z / K[0, 0])[:, None].expand(-1, 3))
            model.opacity_logits.fill_(torch.logit(torch.tensor(opacity)).item())
            model.sh.zero_()
            model.sh[:, 0] = (rgb - 0.5) / SH_C0
        return model
