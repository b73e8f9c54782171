"""Gaussian splatting renderer: `gsplat.rasterization` on CUDA, a pure-PyTorch compositor elsewhere.

Both paths take the same arguments and return the same `RenderOutput`. The PyTorch path follows
3DGS (Kerbl et al. 2023) and gsplat's "classic" rasterisation so the two agree on CUDA:

- EWA projection (3DGS eq. 5): Sigma2d = J W Sigma W^T J^T + eps2d * I, with J the Jacobian of
  the perspective map at the camera-frame mean (its x/z, y/z clamped to 1.3x the field of view as
  gsplat does) and eps2d the low-pass dilation (0.3 px^2).
- alpha_i(p) = min(0.999, o_i exp(-0.5 d^T Sigma2d^-1 d)), skipped below 1/255; front-to-back
  compositing in camera-depth order (3DGS eq. 3) with weights w_i = alpha_i prod_{j<i}(1 - alpha_j),
  stopping before the Gaussian that would bring the transmittance to 1e-4 or below.
- Outputs: colour sum_i w_i c_i + T bg, alpha sum_i w_i, and expected depth sum_i w_i z_i / alpha
  (gsplat's "ED").

The PyTorch path works tile by tile (`tile_size` px squares) and gives each tile only the Gaussians
whose 1/255-level bounding box touches it, so memory is bounded by tile pixels x Gaussians per tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.cameras import quaternion_to_matrix

__all__ = ["RenderOutput", "render", "project_gaussians", "covariance_from_scale_rotation"]

ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
ALPHA_MAX = 0.999
T_MIN = 1e-4  # compositing stops before transmittance reaches this


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # [H, W, D]
    depth: torch.Tensor  # [H, W] expected camera depth (0 where nothing is rendered)
    alpha: torch.Tensor  # [H, W] accumulated opacity


def covariance_from_scale_rotation(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T (3DGS eq. 6) from quaternions (w, x, y, z) [N, 4] and scales [N, 3]."""
    M = quaternion_to_matrix(quats) * scales[..., None, :]  # [N, 3, 3] = R S
    return M @ M.transpose(-1, -2)  # [N, 3, 3]


def project_gaussians(means, covars, w2c, K, width, height, eps2d=0.3):
    """Camera-frame depths [N], 2D means [N, 2] (pixel coords, centre of pixel (0,0) at 0.5) and
    2D covariances [N, 2, 2] by the EWA linearisation (3DGS eq. 5) plus the eps2d dilation."""
    R, t = w2c[:3, :3], w2c[:3, 3]
    p = means @ R.T + t  # [N, 3] camera frame
    cov_c = R @ covars @ R.T  # [N, 3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    z = p[:, 2]  # [N]
    uv = torch.stack([fx * p[:, 0] / z + cx, fy * p[:, 1] / z + cy], -1)  # [N, 2]
    # gsplat clamps the tangent used in J to 1.3x the half field of view (off-screen stability).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.clamp(p[:, 0] / z, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x)  # [N]
    ty = z * torch.clamp(p[:, 1] / z, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y)  # [N]
    zero = torch.zeros_like(z)
    J = torch.stack([torch.stack([fx / z, zero, -fx * tx / z**2], -1),
                     torch.stack([zero, fy / z, -fy * ty / z**2], -1)], -2)  # [N, 2, 3]
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [N, 2, 2]
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    return z, uv, cov2d


def _check(name, x, shape):
    if x.ndim != len(shape) or any(s is not None and a != s for a, s in zip(x.shape, shape)):
        raise ValueError(f"render: `{name}` must have shape {tuple('N' if s is None else s for s in shape)}, "
                         f"got {tuple(x.shape)}")


def render(means: torch.Tensor, quats: torch.Tensor | None, scales: torch.Tensor | None,
           opacities: torch.Tensor, colors: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor,
           width: int, height: int, *, covars: torch.Tensor | None = None,
           background: torch.Tensor | None = None, near: float = 0.01, far: float = 1e10,
           eps2d: float = 0.3, tile_size: int = 16, backend: str = "auto") -> RenderOutput:
    """Render N Gaussians into one OpenCV camera.

    means [N, 3] world; quats [N, 4] (w, x, y, z), scales [N, 3] (activated, not log), or instead
    covars [N, 3, 3]; opacities [N] in (0, 1); colors [N, D]; w2c [4, 4]; K [3, 3];
    background [D] (default zeros). backend: "auto" (gsplat when the tensors are on CUDA, else
    PyTorch), "torch" or "gsplat". Differentiable in everything except K and w2c on both paths.
    """
    N = means.shape[0]
    _check("means", means, (None, 3))
    if covars is None:
        if quats is None or scales is None:
            raise ValueError("render: give either `covars` or both `quats` and `scales`")
        _check("quats", quats, (N, 4))
        _check("scales", scales, (N, 3))
    else:
        _check("covars", covars, (N, 3, 3))
    _check("opacities", opacities, (N,))
    if colors.ndim != 2 or colors.shape[0] != N:
        raise ValueError(f"render: `colors` must have shape (N={N}, D), got {tuple(colors.shape)}")
    _check("w2c", w2c, (4, 4))
    _check("K", K, (3, 3))
    D = colors.shape[1]
    if background is None:
        background = torch.zeros(D, dtype=colors.dtype, device=colors.device)
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"render: backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    if backend == "gsplat" or (backend == "auto" and means.is_cuda):
        return _render_gsplat(means, quats, scales, opacities, colors, w2c, K, width, height, covars,
                              background, near, far, eps2d)
    return _render_torch(means, quats, scales, opacities, colors, w2c, K, width, height, covars,
                         background, near, far, eps2d, tile_size)


def _render_gsplat(means, quats, scales, opacities, colors, w2c, K, width, height, covars, background,
                   near, far, eps2d) -> RenderOutput:
    if not means.is_cuda:
        raise ValueError("render: backend 'gsplat' needs CUDA tensors; use backend='torch' on CPU")
    from gsplat import rasterization

    out, alphas, _ = rasterization(
        means, None if covars is not None else quats, None if covars is not None else scales,
        opacities, colors, w2c[None], K[None], width, height, near_plane=near, far_plane=far,
        eps2d=eps2d, render_mode="RGB+ED", backgrounds=background[None], packed=False, covars=covars,
        rasterize_mode="classic")  # out [1, H, W, D + 1], alphas [1, H, W, 1]
    return RenderOutput(rgb=out[0, ..., :-1], depth=out[0, ..., -1], alpha=alphas[0, ..., 0])


def _render_torch(means, quats, scales, opacities, colors, w2c, K, width, height, covars, background,
                  near, far, eps2d, tile_size) -> RenderOutput:
    dev, dt = means.device, means.dtype
    if covars is None:
        covars = covariance_from_scale_rotation(quats, scales)
    z, uv, cov2d = project_gaussians(means, covars, w2c, K, width, height, eps2d)
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]  # [N]
    det = a * c - b * b  # [N]
    conic = torch.stack([c, -b, a], -1) / det[:, None]  # [N, 3] entries of Sigma2d^-1
    with torch.no_grad():
        # Per-axis extent where o * exp(-r^2 / 2) falls to 1/255 (gsplat's radius, capped at 3.33 sigma);
        # outside that axis-aligned box every pixel's alpha is below the threshold.
        ext = torch.sqrt(2 * torch.log(torch.clamp(opacities / ALPHA_MIN, min=1.0))).clamp(max=3.33)  # [N]
        rx, ry = ext * a.sqrt(), ext * c.sqrt()  # [N]
        valid = (z > near) & (z < far) & (det > 0) & (opacities >= ALPHA_MIN)
        valid &= (uv[:, 0] + rx > 0) & (uv[:, 0] - rx < width) & (uv[:, 1] + ry > 0) & (uv[:, 1] - ry < height)
        order = torch.argsort(torch.where(valid, z, torch.full_like(z, math.inf)))[: int(valid.sum())]
        lo_x, hi_x = uv[order, 0] - rx[order], uv[order, 0] + rx[order]  # [M]
        lo_y, hi_y = uv[order, 1] - ry[order], uv[order, 1] + ry[order]  # [M]
    uv_s, con_s, op_s, z_s, col_s = uv[order], conic[order], opacities[order], z[order], colors[order]
    D = colors.shape[1]
    rows = []
    for y0 in range(0, height, tile_size):
        y1 = min(y0 + tile_size, height)
        row = []
        for x0 in range(0, width, tile_size):
            x1 = min(x0 + tile_size, width)
            hit = (hi_x > x0) & (lo_x < x1) & (hi_y > y0) & (lo_y < y1)  # [M]
            idx = hit.nonzero()[:, 0]  # [n] still in depth order
            th, tw = y1 - y0, x1 - x0
            if idx.numel() == 0:
                tile = torch.cat([background.expand(th, tw, D), torch.zeros(th, tw, 2, dtype=dt, device=dev)], -1)
                row.append(tile)
                continue
            ys = torch.arange(y0, y1, dtype=dt, device=dev) + 0.5
            xs = torch.arange(x0, x1, dtype=dt, device=dev) + 0.5
            pix = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)  # [P, 2] (x, y)
            d = pix[:, None, :] - uv_s[idx][None]  # [P, n, 2]
            cn = con_s[idx]  # [n, 3]
            power = -0.5 * (cn[:, 0] * d[..., 0] ** 2 + cn[:, 2] * d[..., 1] ** 2) - cn[:, 1] * d[..., 0] * d[..., 1]
            alpha = torch.clamp(op_s[idx] * torch.exp(power), max=ALPHA_MAX)  # [P, n]
            alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))
            with torch.no_grad():
                keep = torch.cumprod(1 - alpha, 1) > T_MIN  # [P, n] the terminating Gaussian is dropped
            alpha = alpha * keep
            trans = torch.cumprod(1 - alpha, 1)  # [P, n] transmittance after each Gaussian
            trans_before = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], 1)  # [P, n]
            w = alpha * trans_before  # [P, n] compositing weights
            rgb = w @ col_s[idx] + trans[:, -1:] * background  # [P, D]
            acc = w.sum(1, keepdim=True)  # [P, 1]
            dep = w @ z_s[idx][:, None]  # [P, 1]
            row.append(torch.cat([rgb, dep, acc], -1).reshape(th, tw, D + 2))
        rows.append(torch.cat(row, 1))
    img = torch.cat(rows, 0)  # [H, W, D + 2]
    acc = img[..., -1]
    depth = img[..., -2] / torch.clamp(acc, min=1e-10)  # expected depth, as gsplat's "ED"
    return RenderOutput(rgb=img[..., :D], depth=depth, alpha=acc)
