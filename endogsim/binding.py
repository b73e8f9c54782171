"""Gaussians that ride on particles: what the material refinement renders.

A `GaussianBinding` ties each deformable Gaussian to one MPM particle (mean = particle position +
its rest offset; colour, scale, rotation and opacity fixed); `StaticGaussians` do not move (the
support, the rest of the scene) and are rendered together with the bound ones so that depth
ordering is exact. `bind_scene` takes both from a `PhysicsScene`; `render_particles` renders a
simulated state, with the simulated optical flow as two extra channels; `visible_at_rest` drops
the Gaussians that nothing sees.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from common.cameras import project, transform_points

from .physics import Particles
from .render import render

__all__ = [
    "BindingError",
    "GaussianBinding",
    "StaticGaussians",
    "Camera",
    "bind_isotropic",
    "bind_scene",
    "render_particles",
    "visible_at_rest",
]


class BindingError(ValueError):
    """Bad input to the binding; the message names the field and what was expected."""


@dataclass
class GaussianBinding:
    """Gaussians that move with particles: particle [G] (index of each Gaussian's particle),
    offsets [G, 3] (m, Gaussian mean minus particle position at rest), colors [G, 3], scales
    [G, 3] (activated), quats [G, 4] (w, x, y, z), opacities [G] in (0, 1)."""

    particle: torch.Tensor
    offsets: torch.Tensor
    colors: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor

    def check(self, n_particles: int) -> None:
        G = len(self.particle)
        expect = {
            "particle": (G,),
            "offsets": (G, 3),
            "colors": (G, 3),
            "scales": (G, 3),
            "quats": (G, 4),
            "opacities": (G,),
        }
        for name, shape in expect.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                raise BindingError(
                    f"GaussianBinding.{name}: expected a tensor of shape {shape}, "
                    f"got {tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}"
                )
        if G == 0:
            raise BindingError("GaussianBinding.particle: expected at least one Gaussian")
        ints = self.particle.dtype in (torch.int32, torch.int64)
        if not ints or self.particle.min() < 0 or self.particle.max() >= n_particles:
            raise BindingError(
                f"GaussianBinding.particle: expected integer indices in [0, {n_particles}) "
                f"(the particles), got range [{int(self.particle.min())}, "
                f"{int(self.particle.max())}]"
            )


def bind_isotropic(particles: Particles, colors, sigma: float, opacity: float = 0.9) -> GaussianBinding:
    """One isotropic Gaussian per particle, centred on it (the synthetic scene's appearance model)."""
    n = len(particles.x)
    return GaussianBinding(
        particle=torch.arange(n),
        offsets=torch.zeros(n, 3),
        colors=torch.as_tensor(np.asarray(colors), dtype=torch.float32),
        scales=torch.full((n, 3), float(sigma)),
        quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
        opacities=torch.full((n,), float(opacity)),
    )


@dataclass
class StaticGaussians:
    """Gaussians that do not move (the background: the support, the rest of the scene), rendered
    together with the bound ones so that depth ordering is exact: means [S, 3], colors [S, 3],
    scales [S, 3], quats [S, 4], opacities [S]."""

    means: torch.Tensor
    colors: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor

    @staticmethod
    def isotropic(points, colors, sigma: float, opacity: float = 0.9) -> "StaticGaussians":
        n = len(points)
        return StaticGaussians(
            torch.as_tensor(np.asarray(points), dtype=torch.float32),
            torch.as_tensor(np.asarray(colors), dtype=torch.float32),
            torch.full((n, 3), float(sigma)),
            torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
            torch.full((n,), float(opacity)),
        )


@dataclass
class Camera:
    K: torch.Tensor  # [3, 3]
    w2c: torch.Tensor  # [4, 4]
    width: int
    height: int


def _project(points: torch.Tensor, camera: Camera) -> torch.Tensor:
    """Pixel coordinates [N, 2] of world points [N, 3] (the renderer's convention)."""
    return project(transform_points(camera.w2c.to(points), points), camera.K.to(points))


def render_particles(
    positions: torch.Tensor,
    gaussians: GaussianBinding,
    camera: Camera,
    background: torch.Tensor | StaticGaussians | None = None,
    next_positions: torch.Tensor | None = None,
    tile_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Render the Gaussians bound to particles at positions [N, 3]: image [H, W, 3] and, when
    next_positions [N, 3] are given, the simulated flow [H, W, 2] (px): each Gaussian's projected
    displacement to the next frame rendered as a feature (premultiplied by alpha; the background
    does not move). The background is either an image [H, W, 3] composited behind
    (rgb + (1 - alpha) bg) or `StaticGaussians` rendered together with the moving ones."""
    means = positions[gaussians.particle] + gaussians.offsets.to(positions)  # [G, 3]
    colors = gaussians.colors.to(positions)
    quats, scales = gaussians.quats.to(positions), gaussians.scales.to(positions)
    opac = gaussians.opacities.to(positions)
    if next_positions is not None:
        nxt = next_positions[gaussians.particle] + gaussians.offsets.to(positions)  # [G, 3]
        disp = _project(nxt, camera) - _project(means, camera)  # [G, 2] px
        colors = torch.cat([colors, disp], -1)  # [G, 5]
    if isinstance(background, StaticGaussians):
        s = background
        s_colors = s.colors.to(positions)
        if next_positions is not None:
            s_colors = torch.cat(
                [s_colors, torch.zeros(len(s_colors), 2, dtype=positions.dtype)], -1
            )  # [S, 5]
        means = torch.cat([means, s.means.to(positions)])  # [G + S, 3]
        colors = torch.cat([colors, s_colors])
        quats = torch.cat([quats, s.quats.to(positions)])
        scales = torch.cat([scales, s.scales.to(positions)])
        opac = torch.cat([opac, s.opacities.to(positions)])
        background = None
    out = render(
        means,
        quats,
        scales,
        opac,
        colors,
        camera.w2c.to(positions),
        camera.K.to(positions),
        camera.width,
        camera.height,
        backend="torch",
        tile_size=tile_size,
    )
    rgb = out.rgb[..., :3]  # [H, W, 3]
    if background is not None:
        rgb = rgb + (1 - out.alpha)[..., None] * background.to(rgb)
    flow = out.rgb[..., 3:5] if next_positions is not None else None  # [H, W, 2]
    return rgb, flow


def visible_at_rest(
    positions: torch.Tensor,
    gaussians: GaussianBinding,
    camera: Camera,
    background: StaticGaussians | torch.Tensor | None,
    min_weight: float,
):
    """Keep the Gaussians (bound and static) whose summed compositing weight over the image at rest
    is at least min_weight px: the gradient of the rendered colour sum with respect to a colour is
    exactly that weight, so one backward pass measures every Gaussian's visibility. Gaussians hidden
    inside the tissue cost render time and change nothing while the deformation stays moderate."""
    G = len(gaussians.particle)
    probe = torch.zeros(G, 1, requires_grad=True)
    means = positions[gaussians.particle] + gaussians.offsets
    parts = dict(
        means=[means], quats=[gaussians.quats], scales=[gaussians.scales], opac=[gaussians.opacities]
    )
    static = isinstance(background, StaticGaussians)
    if static:
        s_probe = torch.zeros(len(background.means), 1, requires_grad=True)
        parts["means"].append(background.means)
        parts["quats"].append(background.quats)
        parts["scales"].append(background.scales)
        parts["opac"].append(background.opacities)
    colors = torch.cat([probe, s_probe]) if static else probe  # [M, 1]
    out = render(
        torch.cat(parts["means"]).float(),
        torch.cat(parts["quats"]).float(),
        torch.cat(parts["scales"]).float(),
        torch.cat(parts["opac"]).float(),
        colors + 1.0,
        camera.w2c.float(),
        camera.K.float(),
        camera.width,
        camera.height,
        backend="torch",
    )
    grads = torch.autograd.grad(out.rgb.sum(), [probe, s_probe] if static else [probe])
    keep = grads[0][:, 0] >= min_weight  # [G]
    sub = GaussianBinding(*(getattr(gaussians, f.name)[keep] for f in fields(GaussianBinding)))
    if static:
        k = grads[1][:, 0] >= min_weight
        background = StaticGaussians(*(getattr(background, f.name)[k] for f in fields(StaticGaussians)))
    return sub, background


def bind_scene(scene) -> tuple[GaussianBinding, StaticGaussians | None, Camera]:
    """The bound Gaussians of a `PhysicsScene` (its deformable ones, on their particles, offsets 0
    at rest), its rigid Gaussians as static ones (None if it has none) and its reference camera."""
    gp = np.asarray(scene.gaussian_particle)  # [N], -1 for rigid Gaussians
    bound = gp >= 0
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    binding = GaussianBinding(
        particle=torch.as_tensor(gp[bound]),
        offsets=t(scene.means[bound]) - t(scene.particles.x[gp[bound]]),
        colors=t(scene.colors[bound]),
        scales=t(scene.scales[bound]),
        quats=t(scene.quats[bound]),
        opacities=t(scene.opacities[bound]),
    )
    rigid = ~bound
    static = (
        StaticGaussians(
            t(scene.means[rigid]),
            t(scene.colors[rigid]),
            t(scene.scales[rigid]),
            t(scene.quats[rigid]),
            t(scene.opacities[rigid]),
        )
        if rigid.any()
        else None
    )
    camera = Camera(t(scene.K), t(scene.w2c), int(scene.width), int(scene.height))
    return binding, static, camera
