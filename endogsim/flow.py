"""Optical flow of the reconstructed 4DGS motion (the "observed" flow EndoGSim's refinement fits).

EndoGSim (after PhysFlow) supervises the material refinement with optical flow. The official code
computes it with RAFT on video frames; here it is **the scene flow of the reconstructed 4D
Gaussians projected into the camera**, not a flow estimated from the images: each Gaussian's
deformed mean at t0 and at t1 is projected with the camera (`common.cameras.project`), and the
2D displacement uv(t1) - uv(t0) [N, 2] is rendered as a 2-channel feature by the same compositor
as the colours (`endogsim.render.render`, Gaussians at their t0 state), then divided by the
accumulated alpha. So a pixel's flow is the compositing-weighted mean displacement of the
Gaussians it sees at t0 (forward flow, pixels of frame t0, in pixels), with occlusion handled by
the depth-ordered compositing; where alpha < min_alpha nothing is seen and the flow is invalid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from common.cameras import project, transform_points

from .gaussians import GaussianModel
from .render import render

__all__ = ["FlowOutput", "flow_from_motion", "render_flow", "clip_flows"]


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
