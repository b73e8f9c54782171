"""The endoscope's light on a simulated scene: a point light at the camera shades Lambertian tissue
by how it faces the light and by the inverse square of its distance (the near-light endoscope model
of Okatani & Deguchi 1997), plus an optional ambient share (0 here). Specular highlights are not
modelled.

The bound Gaussians' colours are the tissue as the rest frame shows it (`fit_rest_colors`). In a
simulated state each Gaussian's rest normal turns with its particle's deformation gradient
(n_t = F^-T n_0, as PhysGaussian turns its Gaussians) and the Gaussian moves; its colour is its rest
colour times its shading now over its shading at rest (`RestLight.colors`). Without this, a pressed
surface keeps the brightness it had facing the light.

Camera frame (OpenCV, the light at the origin), metres; normals face the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.spatial import cKDTree

from .binding import Camera, GaussianBinding, StaticGaussians, bind_scene, render_particles

# No ambient term: Okatani & Deguchi's model. On the synthetic clip (whose light has an ambient share
# of 0.08 and a specular lobe) 0, 0.08 and 0.3 rank the future frames' materials alike.
AMBIENT = 0.0

__all__ = ["AMBIENT", "RestLight", "rest_normals", "shading", "fit_rest_colors", "scene_with_rest_colors"]


def rest_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """Unit normals [N, 3] of points [N, 3] on a surface seen from the origin: the least-variance
    axis of each point's k nearest neighbours, turned toward the camera."""
    _, nn = cKDTree(points).query(points, k=min(k, len(points)))  # [N, k]
    local = points[nn] - points[nn].mean(1, keepdims=True)  # [N, k, 3]
    n = np.linalg.svd(local, full_matrices=False)[2][:, -1]  # [N, 3]
    return n * -np.sign((n * points).sum(1, keepdims=True))


def shading(normals: np.ndarray, x: np.ndarray, ambient: float) -> np.ndarray:
    """[N, 1]: (ambient + (1 - ambient) cos) / r^2 of points x [N, 3] with normals [N, 3], cos the
    angle to the light at the origin (0 when facing away), r the distance to it."""
    r = np.linalg.norm(x, axis=1, keepdims=True)  # [N, 1]
    cos = np.clip((normals * (-x / r)).sum(1, keepdims=True), 0, 1)  # [N, 1]
    return (ambient + (1 - ambient) * cos) / r**2


@dataclass
class RestLight:
    """The light on bound Gaussians at rest: rest_x [G, 3] (their rest means, m), normals [G, 3],
    ambient (share of light that does not depend on the normal, in [0, 1))."""

    rest_x: np.ndarray
    normals: np.ndarray
    ambient: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.ambient < 1.0:
            raise ValueError(f"RestLight.ambient: expected a number in [0, 1), got {self.ambient!r}")
        self._rest = shading(self.normals, self.rest_x, self.ambient)  # [G, 1]

    @classmethod
    def of(cls, binding: GaussianBinding, rest_positions: np.ndarray, ambient: float = 0.0) -> "RestLight":
        """The light of a binding at rest (particle positions [P, 3]), normals from the Gaussians' rest
        means (`rest_normals`)."""
        x0 = np.asarray(rest_positions, np.float64)[binding.particle.numpy()] + binding.offsets.numpy()  # [G, 3]
        return cls(x0, rest_normals(x0), ambient)

    def ratio(self, shift: np.ndarray, F: np.ndarray) -> np.ndarray:
        """[G, 1]: each Gaussian's shading moved by shift [G, 3] (m) and turned by F [G, 3, 3] over its
        shading at rest."""
        n = np.einsum("gji,gj->gi", np.linalg.inv(F), self.normals)  # F^-T n0  [G, 3]
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        return shading(n, self.rest_x + shift, self.ambient) / np.maximum(self._rest, 1e-12)

    def colors(self, colors: torch.Tensor, shift: np.ndarray, F: np.ndarray) -> torch.Tensor:
        """Rest colours [G, 3] relit in the state (shift [G, 3], F [G, 3, 3]), in [0, 1]."""
        return (colors * torch.as_tensor(self.ratio(shift, F), dtype=colors.dtype)).clamp(0, 1)


def fit_rest_colors(binding: GaussianBinding, rest_positions: torch.Tensor, camera: Camera,
                    background: torch.Tensor | StaticGaussians | None, image: torch.Tensor,
                    tool_mask: torch.Tensor, steps: int = 300, lr: float = 0.05) -> GaussianBinding:
    """The binding with its colours fitted (Adam on their logits, L1 over the tissue pixels) so that
    its render at rest matches the rest frame image [H, W, 3] outside tool_mask [H, W]. The 4DGS's
    canonical colours are a compromise over every frame; the simulation starts from the rest frame,
    so its Gaussians should look as that frame does (geometry, scales and opacities stay)."""
    if tuple(image.shape) != (camera.height, camera.width, 3):
        raise ValueError(f"image: expected [{camera.height}, {camera.width}, 3], got {tuple(image.shape)}")
    if tuple(tool_mask.shape) != (camera.height, camera.width):
        raise ValueError(f"tool_mask: expected [{camera.height}, {camera.width}], got {tuple(tool_mask.shape)}")
    keep = ~tool_mask.bool()  # [H, W]
    logit = torch.logit(binding.colors.clamp(0.01, 0.99)).clone().requires_grad_(True)  # [G, 3]
    opt = torch.optim.Adam([logit], lr=lr)
    for _ in range(steps):
        rgb = render_particles(rest_positions, replace(binding, colors=torch.sigmoid(logit)), camera, background)[0]
        loss = (rgb - image).abs()[keep].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return replace(binding, colors=torch.sigmoid(logit).detach())


def scene_with_rest_colors(scene, image: torch.Tensor, tool_mask: torch.Tensor, steps: int = 300,
                           lr: float = 0.05):
    """A `PhysicsScene` with its deformable Gaussians' colours fitted to the rest frame image [H, W, 3]
    outside tool_mask [H, W] (`fit_rest_colors`); its rigid Gaussians keep theirs."""
    binding, background, camera = bind_scene(scene)
    rest = torch.as_tensor(np.asarray(scene.particles.x), dtype=torch.float32)  # [P, 3]
    fitted = fit_rest_colors(binding, rest, camera, background, image, tool_mask, steps, lr)
    colors = np.array(scene.colors, copy=True)  # [N, 3]
    colors[np.asarray(scene.gaussian_particle) >= 0] = fitted.colors.numpy()
    return replace(scene, colors=colors.astype(np.asarray(scene.colors).dtype))
