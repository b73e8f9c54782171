"""Optical flow, the second supervision of EndoGSim's material refinement, two ways.

EndoGSim (after PhysFlow) supervises the material refinement with optical flow. The official code
computes it with RAFT on video frames, whose weights are not available offline. Here:

- `lucas_kanade`: a classical dense iterative Lucas-Kanade flow of the observed frames (tool
  pixels excluded from its windows), what `endogsim.refine` fits by default; `flow_loss` compares
  a simulated flow with it;
- `render_flow` / `clip_flows`: the scene flow of the reconstructed 4D Gaussians projected into
  the camera (`RefineConfig(flow="given")` with `Observations.flows`): each Gaussian's
deformed mean at t0 and at t1 is projected with the camera (`common.cameras.project`), and the
2D displacement uv(t1) - uv(t0) [N, 2] is rendered as a 2-channel feature by the same compositor
as the colours (`endogsim.render.render`, Gaussians at their t0 state), then divided by the
accumulated alpha. So a pixel's flow is the compositing-weighted mean displacement of the
Gaussians it sees at t0 (forward flow, pixels of frame t0, in pixels), with occlusion handled by
the depth-ordered compositing; where alpha < min_alpha nothing is seen and the flow is invalid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from common.cameras import project, transform_points

from .gaussians import GaussianModel
from .render import render

__all__ = ["FlowOutput", "flow_from_motion", "render_flow", "clip_flows", "lucas_kanade", "flow_loss", "texture"]


@dataclass
class FlowOutput:
    flow: torch.Tensor  # [H, W, 2] pixels (du, dv), 0 where invalid
    valid: torch.Tensor  # [H, W] bool, alpha >= min_alpha
    alpha: torch.Tensor  # [H, W] accumulated opacity at t0


def flow_from_motion(means0: torch.Tensor, means1: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                     opacities: torch.Tensor, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int,
                     min_alpha: float = 0.5, w2c1: torch.Tensor | None = None) -> FlowOutput:
    """Forward flow of Gaussians moving from means0 [N, 3] to means1 [N, 3] (world), rendered with
    their t0 shape (quats [N, 4], scales [N, 3], opacities [N]) into the camera w2c [4, 4], K [3, 3].
    w2c1 is the camera at t1 (default: the same, EndoNeRF's fixed endoscope). Differentiable."""
    if means0.shape != means1.shape:
        raise ValueError(f"flow_from_motion: means0 and means1 must have the same shape, got "
                         f"{tuple(means0.shape)} and {tuple(means1.shape)}")
    w2c1 = w2c if w2c1 is None else w2c1
    uv0 = project(transform_points(w2c, means0), K)  # [N, 2]
    uv1 = project(transform_points(w2c1, means1), K)  # [N, 2]
    out = render(means0, quats, scales, opacities, uv1 - uv0, w2c, K, width, height)  # rgb = sum w d: [H, W, 2]
    valid = out.alpha >= min_alpha  # [H, W]
    flow = out.rgb / out.alpha.clamp(min=1e-6)[..., None]  # [H, W, 2] alpha-normalised displacement
    return FlowOutput(flow=torch.where(valid[..., None], flow, torch.zeros_like(flow)), valid=valid, alpha=out.alpha)


def render_flow(model: GaussianModel, t0: float, t1: float, w2c: torch.Tensor, K: torch.Tensor, width: int,
                height: int, min_alpha: float = 0.5) -> FlowOutput:
    """Flow from normalised time t0 to t1 of a trained `GaussianModel` (module docstring)."""
    g0, g1 = model.deform(t0), model.deform(t1)
    return flow_from_motion(g0["means"], g1["means"], g0["quats"], g0["scales"], g0["opacities"], w2c, K,
                            width, height, min_alpha)


@torch.no_grad()
def clip_flows(model: GaussianModel, times, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int,
               min_alpha: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Flows between consecutive times [F] of a clip: (flow [F-1, H, W, 2], valid [F-1, H, W])."""
    times = [float(t) for t in times]
    outs = [render_flow(model, a, b, w2c, K, width, height, min_alpha) for a, b in zip(times[:-1], times[1:])]
    return torch.stack([o.flow for o in outs]), torch.stack([o.valid for o in outs])


# ---------------------------------------------------------------------------------------- image flow
def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, 1, H, W] with zero padding."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()  # [2r + 1]
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


def texture(images: torch.Tensor, keep: torch.Tensor, sigma: float) -> torch.Tensor:
    """The texture part of a structure-texture decomposition (Wedel et al. 2009, "An improved
    algorithm for TV-L1 optical flow"): images [F, H, W, 3] minus their Gaussian blur (sigma px),
    the blur taken over the pixels where keep [F, H, W] > 0 only (normalised convolution, so the
    tool does not bleed into the tissue beside it). Shading that varies slowly over the surface (a
    light at the camera on tissue that turns) is in the blur; the vessels' texture, which moves with
    the tissue, is what remains. sigma 0: the images as they are."""
    if sigma <= 0:
        return images
    Fn, H, W, C = images.shape
    w = keep.to(images.dtype)[:, None]  # [F, 1, H, W]
    x = images.permute(0, 3, 1, 2) * w  # [F, C, H, W]
    blur = _gauss_blur(x.reshape(Fn * C, 1, H, W), sigma).reshape(Fn, C, H, W)
    norm = _gauss_blur(w, sigma).clamp(min=1e-6)  # [F, 1, H, W]
    return images - (blur / norm).permute(0, 2, 3, 1)


def _warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """img [B, C, H, W] sampled at x + flow (flow [B, H, W, 2] in px), bilinear, border clamp."""
    B, _, H, W = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=img.dtype), torch.arange(W, dtype=img.dtype), indexing="ij")
    gx = 2 * (xs + flow[..., 0]) / max(W - 1, 1) - 1  # [B, H, W]
    gy = 2 * (ys + flow[..., 1]) / max(H - 1, 1) - 1
    return F.grid_sample(img, torch.stack([gx, gy], -1), align_corners=True, padding_mode="border")


def lucas_kanade(images: torch.Tensor, masks: torch.Tensor | None = None, sigma: float = 2.0,
                 iterations: int = 5, min_eig: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense iterative Lucas-Kanade flow between consecutive frames.

    images [F, H, W, 3] in [0, 1]; masks [F, H, W] True where a pixel must not be used (the tool).
    Returns flow [F - 1, H, W, 2] (px, x then y, from frame i to i + 1 at frame i's pixels) and its
    validity [F - 1, H, W] (the window's structure tensor is well conditioned and no masked pixel
    is involved). Each iteration warps frame i + 1 by the current flow and solves the 2x2 normal
    equations of the linearised brightness constancy in a Gaussian window (Lucas & Kanade 1981).
    """
    gray = images.mean(-1)[:, None].double()  # [F, 1, H, W]
    I0, I1 = gray[:-1], gray[1:]  # [B, 1, H, W]
    B, _, H, W = I0.shape
    use = torch.ones_like(I0)
    if masks is not None:
        bad = masks.double()[:, None]  # [F, 1, H, W]
        grown = F.max_pool2d(bad, 3, 1, 1)  # [F, 1, H, W] the gradient stencil reaches a pixel further
        use = (1 - grown[:-1]) * (1 - grown[1:])  # [B, 1, H, W]
    gx = F.pad((I0[..., 2:] - I0[..., :-2]) / 2, (1, 1, 0, 0), mode="replicate")  # [B, 1, H, W]
    gy = F.pad((I0[..., 2:, :] - I0[..., :-2, :]) / 2, (0, 0, 1, 1), mode="replicate")
    a = _gauss_blur(use * gx * gx, sigma)  # [B, 1, H, W] structure tensor entries
    b = _gauss_blur(use * gx * gy, sigma)
    c = _gauss_blur(use * gy * gy, sigma)
    det = a * c - b * b
    tr = a + c
    eig_min = tr / 2 - torch.sqrt(torch.clamp(tr**2 / 4 - det, min=0))  # [B, 1, H, W]
    flow = torch.zeros(B, H, W, 2, dtype=gray.dtype)
    for _ in range(iterations):
        It = _warp(I1, flow) - I0  # [B, 1, H, W]
        p = _gauss_blur(use * gx * It, sigma)
        q = _gauss_blur(use * gy * It, sigma)
        safe = torch.where(det.abs() > 1e-20, det, torch.ones_like(det))
        du = -(c * p - b * q) / safe  # [B, 1, H, W]
        dv = -(a * q - b * p) / safe
        flow = flow + torch.stack([du[:, 0], dv[:, 0]], -1).clamp(-2, 2)
    weight = _gauss_blur(1 - use, sigma)  # [B, 1, H, W] > 0 where the window touches a masked pixel
    valid = (eig_min[:, 0] > min_eig) & (weight[:, 0] < 1e-3)  # [B, H, W]
    return flow.float(), valid


def flow_loss(flow_sim: torch.Tensor, flow_obs: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared end-point error (px^2) between simulated and observed flow [..., H, W, 2] over
    the valid pixels [..., H, W]; zero for identical flows, differentiable in flow_sim."""
    if flow_sim.shape != flow_obs.shape:
        raise ValueError(f"flow_loss: simulated flow {tuple(flow_sim.shape)} and observed flow "
                               f"{tuple(flow_obs.shape)} differ in shape")
    sq = ((flow_sim - flow_obs) ** 2).sum(-1)  # [..., H, W]
    if valid is None:
        return sq.mean()
    v = valid.to(sq.dtype)
    return (sq * v).sum() / v.sum().clamp(min=1.0)
