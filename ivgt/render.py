"""SDF -> density and volume rendering with hierarchical sampling (NeuS / VolSDF), independent of
learning: any `field(points) -> (sdf, colour)` renders RGB, depth (z) and normals.

Conventions: rays are world-frame (origins, unit directions); `distance` is the length along the
ray, `depth` the camera z (DESIGN.md). The SDF is positive outside, so its gradient at a visible
surface points towards the camera, like the synthetic data's normals.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def neus_alpha(sdf_prev: torch.Tensor, sdf_next: torch.Tensor, inv_s: torch.Tensor) -> torch.Tensor:
    """NeuS discrete opacity (NeuS eq. 13): alpha = max((Phi(f_i) - Phi(f_i+1)) / Phi(f_i), 0),
    Phi the logistic CDF with sharpness s = inv_s. Shapes broadcast; returns [...] in [0, 1]."""
    prev_cdf = torch.sigmoid(sdf_prev * inv_s)
    next_cdf = torch.sigmoid(sdf_next * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)


def volsdf_density(sdf: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """VolSDF density (VolSDF eq. 2-3): sigma = (1/beta) Psi_beta(-d), Psi the Laplace(0, beta) CDF,
    written as (1/beta) (1/2 + 1/2 sign(d) expm1(-|d|/beta)) for stability."""
    return (0.5 + 0.5 * sdf.sign() * torch.expm1(-sdf.abs() / beta)) / beta


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic inverse-CDF sampling (NeRF hierarchical sampling): bins [R, S+1], weights [R, S]
    -> n sorted samples [R, n] placed at the quantiles (i + 0.5) / n of the piecewise-constant pdf."""
    weights = weights + 1e-5  # no zero-mass rays
    pdf = weights / weights.sum(-1, keepdim=True)  # [R, S]
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), pdf.cumsum(-1)], -1)  # [R, S+1]
    u = ((torch.arange(n, device=bins.device, dtype=bins.dtype) + 0.5) / n).expand(bins.shape[0], n).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)  # [R, n]
    below = (idx - 1).clamp(0, cdf.shape[-1] - 1)
    above = idx.clamp(0, cdf.shape[-1] - 1)
    cdf_b, cdf_a = cdf.gather(1, below), cdf.gather(1, above)  # [R, n]
    bin_b, bin_a = bins.gather(1, below), bins.gather(1, above)
    denom = torch.where(cdf_a - cdf_b < 1e-5, torch.ones_like(cdf_a), cdf_a - cdf_b)
    return bin_b + (u - cdf_b) / denom * (bin_a - bin_b)


def up_sample(t: torch.Tensor, sdf: torch.Tensor, n: int, inv_s: float) -> torch.Tensor:
    """NeuS importance sampling (NeuS sec. 3.4, `up_sample`): opacity of each section from the SDF at
    its ends with a fixed sharpness inv_s, slopes limited to be non-positive (a ray only enters a
    surface), then `sample_pdf`. t, sdf [R, S] -> new samples [R, n]."""
    mid_sdf = 0.5 * (sdf[:, :-1] + sdf[:, 1:])  # [R, S-1]
    delta = t[:, 1:] - t[:, :-1]  # [R, S-1]
    cos = (sdf[:, 1:] - sdf[:, :-1]) / (delta + 1e-5)  # [R, S-1]
    prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
    cos = torch.minimum(cos, prev_cos).clamp(-1e3, 0.0)
    alpha = neus_alpha(mid_sdf - cos * delta * 0.5, mid_sdf + cos * delta * 0.5, inv_s)  # [R, S-1]
    weights = alpha * torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-7], -1), -1)[:, :-1]
    return sample_pdf(t, weights, n).detach()


def render_rays(
    field: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    sdf_fn: Callable[[torch.Tensor], torch.Tensor],
    origins: torch.Tensor,
    dirs: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    *,
    density: str = "neus",
    variance: torch.Tensor | float = 0.3,
    n_coarse: int = 64,
    n_fine: int = 64,
    up_sample_steps: int = 4,
    log_spacing: bool = True,
    create_graph: bool = False,
) -> dict:
    """Volume-render rays [R, 3] between near and far [R].

    field(points [R, S, 3]) -> (sdf [R, S], colour [R, S, 3]); sdf_fn(points) -> sdf (coarse pass,
    no gradient). Coarse samples are uniform in log-distance (log_spacing; indoor and outdoor depth
    ranges differ by 10x) or in distance; `up_sample_steps` rounds add n_fine samples in total with
    the NeuS sharpness 64 * 2^i. The final pass evaluates the field at section midpoints with its
    gradient (the normal), NeuS sec. 3.3 (density "neus", s = exp(10 variance)) or VolSDF
    (density "volsdf", beta = exp(-10 variance)).

    Returns rgb [R, 3], distance [R], normal [R, 3] (world, unit where the ray hits), opacity [R],
    weights [R, S], gradients [R, S, 3] (for the eikonal term) and points [R, S, 3].
    """
    if density not in ("neus", "volsdf"):
        raise ValueError(f"density: expected 'neus' or 'volsdf', got {density!r}")
    steps = torch.linspace(0.0, 1.0, n_coarse, device=origins.device, dtype=origins.dtype)  # [S]
    if log_spacing:
        t = torch.exp(torch.log(near)[:, None] + (torch.log(far) - torch.log(near))[:, None] * steps)  # [R, S]
    else:
        t = near[:, None] + (far - near)[:, None] * steps
    if up_sample_steps > 0 and n_fine > 0:
        with torch.no_grad():
            sdf = sdf_fn(origins[:, None] + dirs[:, None] * t[..., None])  # [R, S]
            per_step = max(1, n_fine // up_sample_steps)
            for i in range(up_sample_steps):
                new_t = up_sample(t, sdf, per_step, 64.0 * 2**i)  # [R, n]
                new_sdf = sdf_fn(origins[:, None] + dirs[:, None] * new_t[..., None])  # [R, n]
                t, order = torch.sort(torch.cat([t, new_t], -1), -1)
                sdf = torch.cat([sdf, new_sdf], -1).gather(1, order)
    mids = 0.5 * (t[:, 1:] + t[:, :-1])  # [R, S-1]
    delta = t[:, 1:] - t[:, :-1]  # [R, S-1]
    with torch.enable_grad():
        points = (origins[:, None] + dirs[:, None] * mids[..., None]).detach().requires_grad_(True)  # [R, S-1, 3]
        sdf, color = field(points)  # [R, S-1], [R, S-1, 3]
        grad = torch.autograd.grad(sdf.sum(), points, create_graph=create_graph)[0]  # [R, S-1, 3]
    variance = torch.as_tensor(variance, dtype=origins.dtype, device=origins.device)
    if density == "neus":
        inv_s = torch.exp(10.0 * variance).clamp(1e-6, 1e6)
        # Section ends estimated from the midpoint value and the directional derivative, with
        # cos = min(grad . d, 0) (NeuS code at the end of its cos annealing).
        cos = -F.relu(-(grad * dirs[:, None]).sum(-1))  # [R, S-1]
        alpha = neus_alpha(sdf - cos * delta * 0.5, sdf + cos * delta * 0.5, inv_s)  # [R, S-1]
    else:
        beta = torch.exp(-10.0 * variance).clamp_min(1e-4)
        alpha = 1.0 - torch.exp(-volsdf_density(sdf, beta) * delta)  # [R, S-1]
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-7], -1), -1)[:, :-1]
    weights = alpha * transmittance  # [R, S-1]
    normals = F.normalize(grad, dim=-1)  # [R, S-1, 3]
    opacity = weights.sum(-1)  # [R]
    return {
        "rgb": (weights[..., None] * color).sum(1),  # [R, 3]
        "distance": (weights * mids).sum(-1) / opacity.clamp_min(1e-6),  # [R]
        "normal": (weights[..., None] * normals).sum(1),  # [R, 3]
        "opacity": opacity,
        "weights": weights,
        "gradients": grad,
        "points": points,
        "sdf": sdf,
    }


def eikonal_loss(gradients: torch.Tensor) -> torch.Tensor:
    """Eikonal regularisation (IGR; NeuS eq. 14): mean (|grad f| - 1)^2 over gradients [..., 3]."""
    return ((gradients.norm(dim=-1) - 1.0) ** 2).mean()
