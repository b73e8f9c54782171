"""The "endoscopy" look of the synthetic clip (`synthetic_scene.build_setup(look="endoscopy")`):
two curved tissue lobes drawn by surface discs, a vessel texture, a light at the camera and a
metallic instrument.

Scene frame = camera frame (OpenCV: x right, y down, z forward), metres; the support is the plane
z = support_z (0.105 m in the clip), tissue lies in front of it (smaller z).

- Lobe o (0 left, 1 right) is the height field h(x, y) = LOBE_HEIGHT (1 - rho^2)^2 above the support
  for rho < 1, rho^2 = ((x - c_o) / a)^2 + (y / b)^2: height and slope go to 0 at the footprint's edge,
  so the tissue meets its support smoothly; its volume is pi a b LOBE_HEIGHT / 3 (`lobe_volume`).
- MPM particles: one column per cell of the `spacing` lattice in (x, y) that the footprint touches;
  the column's particles share the height field's volume over the cell, so the material's volume
  is the continuous surface's.
- The visible surface: flat Gaussians (discs tangent to the surface, thin along its normal, opaque,
  one per `disc_spacing` ~ 1 px) on the height field at rest. Each disc is also an MPM particle of
  negligible volume (TRACER_VOLUME of a cell): the simulation carries it with the material, and its
  deformation gradient F deforms it (Sigma -> F Sigma F^T, normal -> F^-T n). Discs come first in
  the particle list, as `PhysicsScene` binds each Gaussian to its own particle.
- The support is a plane of discs; a seeded procedural texture of branching vessels on both;
  a point light at the camera (Lambert with 1/r^2 falloff normalised at LIGHT_DISTANCE, plus a
  Blinn-Phong highlight, whose half vector is the light direction since light and eye coincide);
  the instrument is a shaft of radius SHAFT_RADIUS along its axis (+x in its frame) ending in a
  cone, entering from the right border, laid across both lobes' tops where it presses.
- Depth is where each pixel's ray meets the discs (`render_endoscopy`), within 0.15 mm of the
  height field at 128 x 160, so the depth map encloses the material's volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from common.cameras import matrix_to_quaternion, pixel_centers, project

from .physics import Particles
from .render import render

LOBE_HALF = (0.016, 0.019)  # m, footprint half axes (a in x, b in y) of each lobe
LOBE_GAP = 0.0015  # m, x of each lobe's inner edge (the lobes are 3 mm apart)
LOBE_HEIGHT = 0.015  # m, height of a lobe's top above the support
TRACER_VOLUME = 1e-6  # a disc particle's volume, in lattice cells (its mass is negligible)
DISC_SIGMA, DISC_THIN = 0.7, 0.02  # disc std along the surface / along the normal, in disc spacings
DISC_OPACITY = 0.99
SHAFT_RADIUS, SHAFT_TIP_X, SHAFT_CONE, SHAFT_END_X = 0.0025, -0.037, 0.006, 0.085  # m (tool frame: x = axis)
SHAFT_RECORD = {"radius": SHAFT_RADIUS, "tip_x": SHAFT_TIP_X, "cone_length": SHAFT_CONE, "end_x": SHAFT_END_X,
                "note": "a cylinder along its axis (the tool frame's x) ending in a cone; frame_centers is the "
                        "axis point at tool-frame x = 0"}
CONTACT_HALF_Y = 0.003  # m, half width (y) of the strip under the shaft that takes the force
LIGHT_DISTANCE, LIGHT_GAIN = 0.095, 1.25  # m, where the 1/r^2 falloff is 1 (the working distance); intensity there
AMBIENT = 0.08
SHINE = {"tissue": (0.22, 60.0), "support": (0.12, 40.0), "tool": (0.45, 24.0)}  # (specular weight, exponent)
LOBE_COLORS = ((0.90, 0.50, 0.48), (0.74, 0.36, 0.32))  # soft lobe pink, stiff lobe darker red-brown
SUPPORT_COLOR, VESSEL_COLOR = (0.86, 0.60, 0.50), (0.50, 0.07, 0.09)
SHAFT_COLOR, RING_COLOR = (0.50, 0.52, 0.56), (0.14, 0.14, 0.16)


def lobe_centers() -> np.ndarray:
    return np.array([[-(LOBE_GAP + LOBE_HALF[0]), 0.0], [LOBE_GAP + LOBE_HALF[0], 0.0]])  # [2, 2] (x, y)


def lobe_volume() -> float:
    """m^3, the continuous volume of one lobe: pi a b H / 3."""
    return float(np.pi * LOBE_HALF[0] * LOBE_HALF[1] * LOBE_HEIGHT / 3)


def lobe_height(xy: np.ndarray, o: int) -> tuple[np.ndarray, np.ndarray]:
    """Height above the support [M] (m, 0 outside the footprint) of lobe o at points xy [M, 2] and
    its gradient [M, 2] (dh/dx, dh/dy)."""
    a = np.asarray(LOBE_HALF)
    q = (np.asarray(xy, np.float64) - lobe_centers()[o]) / a  # [M, 2]
    rho2 = (q**2).sum(1)
    inside = rho2 < 1
    one = np.where(inside, 1 - rho2, 0.0)
    h = LOBE_HEIGHT * one**2
    grad = (-4 * LOBE_HEIGHT * one)[:, None] * q / a  # d/dx of H (1 - rho^2)^2 = -4 H (1 - rho^2) q_x / a
    return h, grad


def height_field(xy: np.ndarray) -> np.ndarray:
    """Height [M] of the tissue above the support at xy [M, 2] (the lobes do not overlap)."""
    return lobe_height(xy, 0)[0] + lobe_height(xy, 1)[0]


def lobe_particles(spacing: float, support_z: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice particles under both lobes: x [P, 3], volume [P], object_id [P]. Columns are the
    spacing-cells (centres at (i + 0.5) spacing) the footprint touches; a column's volume is the
    height field's over its cell (8 x 8 midpoint rule), shared by n = max(1, round(h / spacing))
    particles at heights (k + 0.5) h / n (h = the column's mean height); the seed jitters them by
    up to a tenth of the spacing in x, y and of the layer height in z."""
    xs, vols, ids = [], [], []
    sub = (np.arange(8) + 0.5) / 8 - 0.5  # [8] sub-cell offsets, in cells
    for o, (cx, _) in enumerate(lobe_centers()):
        lo = np.floor((cx - LOBE_HALF[0]) / spacing - 0.5)
        ii = np.arange(lo, lo + 2 * LOBE_HALF[0] / spacing + 2)
        jj = np.arange(np.floor(-LOBE_HALF[1] / spacing - 0.5), np.ceil(LOBE_HALF[1] / spacing + 0.5))
        cx_c, cy_c = np.meshgrid((ii + 0.5) * spacing, (jj + 0.5) * spacing, indexing="ij")
        centres = np.stack([cx_c.ravel(), cy_c.ravel()], -1)  # [C, 2]
        offs = np.stack(np.meshgrid(sub, sub, indexing="ij"), -1).reshape(-1, 2) * spacing  # [64, 2]
        h_mean = lobe_height((centres[:, None] + offs).reshape(-1, 2), o)[0].reshape(len(centres), 64).mean(1)
        keep = h_mean > 0
        centres, h_mean = centres[keep], h_mean[keep]  # [C], m
        n = np.maximum(1, np.round(h_mean / spacing)).astype(int)  # [C] particles per column
        col = np.repeat(np.arange(len(centres)), n)
        k = np.arange(len(col)) - np.repeat(np.cumsum(n) - n, n)  # [P] layer index within its column
        layer = h_mean[col] / n[col]  # [P] m
        z = support_z - (k + 0.5 + rng.uniform(-0.1, 0.1, len(col))) * layer
        xy = centres[col] + rng.uniform(-0.1, 0.1, (len(col), 2)) * spacing
        xs.append(np.c_[xy, z])
        vols.append(h_mean[col] * spacing**2 / n[col])
        ids.append(np.full(len(col), o))
    return np.concatenate(xs), np.concatenate(vols), np.concatenate(ids).astype(np.int64)


def _disc_covars(du: np.ndarray, dv: np.ndarray, normals: np.ndarray, sigma: float, thin: float) -> np.ndarray:
    """Covariances [M, 3, 3] of discs spanned by the surface steps du, dv [M, 3] (one disc spacing
    along each parameter), thin along normals [M, 3]: A A^T with A = [sigma du, sigma dv, thin n]."""
    A = np.stack([sigma * du, sigma * dv, thin * normals], -1)  # [M, 3, 3] columns
    return A @ A.transpose(0, 2, 1)


def covars_to_quats_scales(covars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(quats [M, 4] (w, x, y, z), scales [M, 3]) with R diag(scales^2) R^T = covars [M, 3, 3]."""
    w, R = np.linalg.eigh(covars)  # [M, 3], [M, 3, 3]
    R[:, :, 2] *= np.sign(np.linalg.det(R))[:, None]  # a rotation
    q = matrix_to_quaternion(torch.from_numpy(R)).numpy()
    return q, np.sqrt(np.clip(w, 0, None))


def _tie(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Depth offsets [M] (m, 0 to 16 um) of discs on grid nodes (i, j): 64 levels 0.25 um apart
    (33 float32 steps at 0.1 m), distinct within 8 nodes (a disc's footprint reaches 3)."""
    return 2.5e-7 * ((i % 8) + 8 * (j % 8))


def tissue_discs(disc_spacing: float, support_z: float) -> dict:
    """Discs on both lobes at rest, on the (x, y) grid of `disc_spacing` inside each footprint:
    x [M, 3], normals [M, 3] (towards the camera), covars [M, 3, 3], object_id [M]. An 8 x 8 pattern
    of depth offsets (`_tie`, into the tissue) keeps the depths of discs that overlap distinct, so
    that the renderer's (unstable) depth sort orders them the same whatever else is drawn."""
    out = {"x": [], "normals": [], "covars": [], "object_id": []}
    for o, (cx, _) in enumerate(lobe_centers()):
        i = np.arange(np.ceil((cx - LOBE_HALF[0]) / disc_spacing), np.floor((cx + LOBE_HALF[0]) / disc_spacing) + 1)
        j = np.arange(np.ceil(-LOBE_HALF[1] / disc_spacing), np.floor(LOBE_HALF[1] / disc_spacing) + 1)
        I, J = np.meshgrid(i, j, indexing="ij")
        xy = np.stack([I.ravel(), J.ravel()], -1) * disc_spacing  # [M, 2]
        h, g = lobe_height(xy, o)
        inside = ((xy - lobe_centers()[o]) / LOBE_HALF)
        keep = (inside**2).sum(1) < 1
        xy, h, g = xy[keep], h[keep], g[keep]
        x = np.c_[xy, support_z - h + _tie(I.ravel()[keep], J.ravel()[keep])]
        du = np.c_[np.ones(len(xy)), np.zeros(len(xy)), -g[:, 0]] * disc_spacing  # d(surface)/dx, one step
        dv = np.c_[np.zeros(len(xy)), np.ones(len(xy)), -g[:, 1]] * disc_spacing
        n = -np.c_[g, np.ones(len(xy))]  # -(dh/dx, dh/dy, 1): towards the camera
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        for k, v in zip(out, (x, n, _disc_covars(du, dv, n, DISC_SIGMA, DISC_THIN * disc_spacing),
                              np.full(len(x), o))):
            out[k].append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def support_discs(spacing: float, support_z: float, half=(0.062, 0.05)) -> dict:
    """Discs on the support plane [-half, half] (x, y), spacing apart, except where a lobe is more
    than 0.3 mm high (hidden, and behind an almost opaque surface they would pull its depth down):
    x [S, 3], normals [S, 3], covars [S, 3, 3]. Same tie-breaking pattern as `tissue_discs`."""
    i = np.arange(-np.ceil(half[0] / spacing), np.ceil(half[0] / spacing) + 1)
    j = np.arange(-np.ceil(half[1] / spacing), np.ceil(half[1] / spacing) + 1)
    I, J = (a.ravel() for a in np.meshgrid(i, j, indexing="ij"))
    xy = np.stack([I, J], -1) * spacing  # [S, 2]
    keep = height_field(xy) < 3e-4
    xy, I, J = xy[keep], I[keep], J[keep]
    x = np.c_[xy, support_z + _tie(I, J)]
    n = np.tile([0.0, 0.0, -1.0], (len(x), 1))
    du, dv = np.tile([spacing, 0.0, 0.0], (len(x), 1)), np.tile([0.0, spacing, 0.0], (len(x), 1))
    return {"x": x, "normals": n, "covars": _disc_covars(du, dv, n, DISC_SIGMA, DISC_THIN * spacing)}


def _vessels(rng, roots: np.ndarray, headings: np.ndarray, widths: np.ndarray, inside) -> np.ndarray:
    """Branching random walks from roots [R, 2] (m) with headings [R] (rad) and widths [R] (m):
    points [K, 3] (x, y, width) every 0.3 mm. A branch bends a little at every step, thins, forks
    with a thinner child now and then, and ends when too thin, too long or outside (`inside`)."""
    pts, stack = [], [(r, a, w, 0) for r, a, w in zip(roots, headings, widths)]
    while stack and len(pts) < 60000:
        p, a, w, depth = stack.pop()
        for _ in range(160):
            pts.append((p[0], p[1], w))
            a += rng.normal(0, 0.12)
            p = p + 3e-4 * np.array([np.cos(a), np.sin(a)])
            w *= 0.996
            if w < 1.2e-4 or not inside(p[None])[0]:
                break
            if depth < 4 and rng.uniform() < 0.035:
                side = rng.choice([-1.0, 1.0])
                stack.append((p.copy(), a + side * rng.uniform(0.4, 0.9), 0.65 * w, depth + 1))
                a -= side * 0.15
    return np.asarray(pts, np.float64).reshape(-1, 3)


def _texture(rng, xy: np.ndarray, base: np.ndarray, vessels: np.ndarray, pixel: float) -> np.ndarray:
    """Albedo [M, 3] at xy [M, 2]: base colours [M, 3] mottled by a few seeded low-frequency waves
    and a 2% per-disc grain, darkened towards VESSEL_COLOR where a vessel covers the disc (the
    fraction of a `pixel`-wide footprint its width covers)."""
    k = rng.normal(0, 250.0, (4, 2))  # rad/m: wavelengths of a few cm
    phase = rng.uniform(0, 2 * np.pi, 4)
    mottle = 1 + 0.05 * np.sin(xy @ k.T + phase).sum(1) / 2 + rng.normal(0, 0.02, len(xy))  # [M]
    col = base * mottle[:, None]
    if len(vessels):
        d, idx = cKDTree(vessels[:, :2]).query(xy, k=6, distance_upper_bound=2e-3)  # [M, 6]
        w = np.where(np.isfinite(d), vessels[np.minimum(idx, len(vessels) - 1), 2], 0.0)  # [M, 6]
        cover = np.clip((0.5 * w + 0.5 * pixel - np.where(np.isfinite(d), d, 1.0)) / pixel, 0, 1)
        cover = (cover * np.minimum(1.0, w / pixel)).max(1)  # [M]
        col = col * (1 - 0.85 * cover[:, None]) + 0.85 * cover[:, None] * np.asarray(VESSEL_COLOR)
    return np.clip(col, 0, 1)


def textures(rng, tissue_xy, tissue_id, support_xy, pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """Albedos of the tissue discs [M, 3] and support discs [S, 3]: vessels from 4 roots near each
    lobe's rim (pointing inwards) and 10 scattered over the support, all seeded."""
    vs = []
    for o, c in enumerate(lobe_centers()):
        ang = rng.uniform(0, 2 * np.pi, 4)
        roots = c + 0.92 * np.c_[np.cos(ang), np.sin(ang)] * LOBE_HALF
        vs.append(_vessels(rng, roots, ang + np.pi + rng.normal(0, 0.3, 4), rng.uniform(6e-4, 9e-4, 4),
                           lambda p, o=o: (((p - lobe_centers()[o]) / LOBE_HALF) ** 2).sum(1) < 0.97))
    tissue = _texture(rng, tissue_xy, np.asarray(LOBE_COLORS)[tissue_id], np.concatenate(vs), pixel)
    roots = rng.uniform([-0.06, -0.05], [0.06, 0.05], (10, 2))
    sup_v = _vessels(rng, roots, rng.uniform(0, 2 * np.pi, 10), rng.uniform(3e-4, 6e-4, 10),
                     lambda p: np.all(np.abs(p) < [0.065, 0.055], 1))
    support = _texture(rng, support_xy, np.tile(SUPPORT_COLOR, (len(support_xy), 1)), sup_v, pixel)
    return tissue, support


def shade(albedo: np.ndarray, x: np.ndarray, normals: np.ndarray, kind: str) -> np.ndarray:
    """RGB [M, 3] of surface points x [M, 3] (camera frame) with normals [M, 3] lit by a point light
    at the camera: albedo (AMBIENT + (1 - AMBIENT) cos) f + ks cos^shininess f, cos = n . l (l the
    unit vector to the light), f = LIGHT_GAIN (LIGHT_DISTANCE / r)^2."""
    r = np.linalg.norm(x, axis=1, keepdims=True)  # [M, 1]
    cos = np.clip((normals * (-x / r)).sum(1, keepdims=True), 0, 1)  # [M, 1]
    f = LIGHT_GAIN * (LIGHT_DISTANCE / r) ** 2
    ks, shininess = SHINE[kind]
    return np.clip(albedo * (AMBIENT + (1 - AMBIENT) * cos) * f + ks * cos**shininess * f, 0, 1)


def shaft_discs(spacing: float) -> dict:
    """The instrument in its own frame (axis +x, the axis point x = 0 is where it rests between the
    lobes): discs on the camera-facing 200 degrees of a cylinder of SHAFT_RADIUS from the cone's base
    to SHAFT_END_X and of a cone narrowing to 0.8 mm at SHAFT_TIP_X, with a dark ring near the tip.
    x [T, 3], normals [T, 3], covars [T, 3, 3], albedo [T, 3]."""
    base = SHAFT_TIP_X + SHAFT_CONE
    xs = np.arange(SHAFT_TIP_X, SHAFT_END_X, spacing)  # [L]
    r = np.where(xs < base, 8e-4 + (SHAFT_RADIUS - 8e-4) * (xs - SHAFT_TIP_X) / SHAFT_CONE, SHAFT_RADIUS)  # [L]
    dr = np.where(xs < base, (SHAFT_RADIUS - 8e-4) / SHAFT_CONE, 0.0)
    n_th = max(8, int(np.ceil(np.radians(200) * SHAFT_RADIUS / spacing)))
    th = np.linspace(-np.radians(100), np.radians(100), n_th)  # [A] 0 = facing the camera
    X, T = np.meshgrid(np.arange(len(xs)), th, indexing="ij")
    X, T = X.ravel(), T.ravel()
    rr = r[X]
    x = np.c_[xs[X], rr * np.sin(T), -rr * np.cos(T)]
    n = np.c_[-dr[X], np.sin(T), -np.cos(T)]
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    du = np.c_[np.ones(len(x)), dr[X] * np.sin(T), -dr[X] * np.cos(T)] * spacing
    dv = np.c_[np.zeros(len(x)), np.cos(T), np.sin(T)] * rr[:, None] * (th[1] - th[0])
    ring = (xs[X] > base) & (xs[X] < base + 0.002)
    albedo = np.where(ring[:, None], RING_COLOR, SHAFT_COLOR) * (1 + 0.1 * (xs[X] < base))[:, None]
    return {"x": x, "normals": n, "covars": _disc_covars(du, dv, n, DISC_SIGMA, DISC_THIN * spacing),
            "albedo": np.clip(albedo, 0, 1)}


@dataclass
class EndoscopyLook:
    """What the endoscopy look renders besides the particles: the first n_discs particles are the
    tissue's surface discs, with rest normals [n, 3], covariances [n, 3, 3] and albedo [n, 3];
    the support's discs: points [S, 3], covariances [S, 3, 3], RGB [S, 3] (lit, static); the
    instrument's discs in its frame: points, normals, covariances, albedo [T, ...]."""

    n_discs: int
    disc_normals: np.ndarray
    disc_covars: np.ndarray
    disc_albedo: np.ndarray
    support_points: np.ndarray
    support_covars: np.ndarray
    support_rgb: np.ndarray
    tool_points: np.ndarray
    tool_normals: np.ndarray
    tool_covars: np.ndarray
    tool_albedo: np.ndarray


def build_look(rng, focal: float, spacing: float, support_z: float):
    """(Particles: the tissue discs, then the lattice; EndoscopyLook; the discs' RGB at rest [n, 3]).
    Disc spacing is one pixel at the lobes' tops (tissue), at the support (support) and at 8 cm
    (the instrument), for a focal length `focal` px; `spacing` is the particle lattice's."""
    pixel = (support_z - LOBE_HEIGHT) / focal  # m
    d = tissue_discs(pixel, support_z)
    lx, lv, lid = lobe_particles(spacing, support_z, rng)
    s = support_discs(support_z / focal, support_z)
    t_alb, s_alb = textures(rng, d["x"][:, :2], d["object_id"], s["x"][:, :2], pixel)
    tool = shaft_discs(0.08 / focal)
    n = len(d["x"])
    particles = Particles(x=np.r_[d["x"], lx], volume=np.r_[np.full(n, TRACER_VOLUME * spacing**3), lv],
                          object_id=np.r_[d["object_id"], lid])
    look = EndoscopyLook(n, d["normals"], d["covars"], t_alb, s["x"], s["covars"],
                         shade(s_alb, s["x"], s["normals"], "support"), tool["x"], tool["normals"], tool["covars"],
                         tool["albedo"])
    return particles, look, shade(t_alb, d["x"], d["normals"], "tissue")


def describe(look: EndoscopyLook, support_z: float) -> dict:
    """The look's geometry and lighting for ground_truth.json."""
    return {
        "lobes": {"profile": "z = support_z - height * (1 - rho^2)^2, rho^2 = ((x - cx) / a)^2 + (y / b)^2 < 1",
                  "centers_xy": lobe_centers().tolist(), "half_axes_ab": list(LOBE_HALF), "height": LOBE_HEIGHT,
                  "support_z": support_z, "volume_m3": lobe_volume()},
        "surface": {"num_discs": look.n_discs, "disc_sigma": DISC_SIGMA, "opacity": DISC_OPACITY,
                    "note": "particles 0..num_discs-1 are the surface discs (massless tracers), then the lattice"},
        "light": {"position": [0.0, 0.0, 0.0], "falloff": "gain (light_distance / r)^2", "light_distance": LIGHT_DISTANCE,
                  "gain": LIGHT_GAIN,
                  "ambient": AMBIENT, "specular": {k: list(v) for k, v in SHINE.items()}},
    }


def rotation_from_x(axis: np.ndarray) -> np.ndarray:
    """The smallest rotation [3, 3] taking +x to the unit vector `axis` [3] (Rodrigues)."""
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    v, c = np.cross([1.0, 0.0, 0.0], a), a[0]
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def plane_inverse_depth(x: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Coefficients [M, 3] of each disc's plane as inverse depth along a pixel's ray: a ray (u', v', 1)
    (u' = (u - cx) / fx) meets the plane n . (p - x) = 0 at 1 / z = (n_x u' + n_y v' + n_z) / (n . x),
    affine in (u', v'). Discs seen nearly edge-on (|n . x| < 0.2 |x|) keep their centre's depth."""
    nx = (normals * x).sum(1, keepdims=True)  # [M, 1]
    edge_on = np.abs(nx) < 0.2 * np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(edge_on, np.c_[np.zeros((len(x), 2)), 1 / x[:, 2]], normals / np.where(edge_on, 1.0, nx))


def render_endoscopy(look: EndoscopyLook, positions, F, tool_pose, K, width: int, height: int):
    """One frame: image [3, H, W], depth [H, W] (m, 0 where nothing), tool mask [H, W] (the tool's
    compositing weight > 0.5) and the depth of tissue and support alone [H, W]. positions [N, 3]
    and F [N, 3, 3] (None: identity) of the particles (discs first); tool_pose (centre [3], axis
    [3]) or None. Depth is where each pixel's ray meets the discs: their planes' inverse depths
    (`plane_inverse_depth`) composited with the colours' weights; the compositor's expected depth of
    the disc centres would sit in front of a sloped surface (0.7 mm at 128 x 160: the discs uphill
    of a pixel come first)."""
    n = look.n_discs
    x = np.asarray(positions, np.float64)[:n]  # [n, 3]
    Fd = np.tile(np.eye(3), (n, 1, 1)) if F is None else np.asarray(F, np.float64)[:n]  # [n, 3, 3]
    covars = Fd @ look.disc_covars @ Fd.transpose(0, 2, 1)
    normals = np.einsum("nji,nj->ni", np.linalg.inv(Fd), look.disc_normals)  # F^-T n
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    sup_n = np.tile([0.0, 0.0, -1.0], (len(look.support_points), 1))
    parts = [(x, covars, shade(look.disc_albedo, x, normals, "tissue"), normals),
             (look.support_points, look.support_covars, look.support_rgb, sup_n)]
    if tool_pose is not None:
        R = rotation_from_x(tool_pose[1])
        tx, tn = look.tool_points @ R.T + np.asarray(tool_pose[0]), look.tool_normals @ R.T
        uv = project(torch.from_numpy(tx), K.double()).numpy()  # [T, 2] px
        if not np.any((uv > -8).all(1) & (uv[:, 0] < width + 8) & (uv[:, 1] < height + 8)):
            tool_pose = None  # out of view: one render, and the tool's culled Gaussians cannot perturb it
    if tool_pose is not None:
        parts.append((tx, R @ look.tool_covars @ R.T, shade(look.tool_albedo, tx, tn, "tool"), tn))
    pts = np.concatenate([p[0] for p in parts])  # [M, 3]
    n_bare = len(x) + len(look.support_points)
    is_tool = np.r_[np.zeros(n_bare), np.ones(len(pts) - n_bare)]  # [M]
    inv = plane_inverse_depth(pts, np.concatenate([p[3] for p in parts]))  # [M, 3]
    colors = torch.tensor(np.c_[np.concatenate([p[2] for p in parts]), is_tool, inv], dtype=torch.float32)  # [M, 7]
    means = torch.tensor(pts, dtype=torch.float32)
    cov = torch.tensor(np.concatenate([p[1] for p in parts]), dtype=torch.float32)  # [M, 3, 3]
    opac = torch.full((len(means),), DISC_OPACITY)
    w2c = torch.eye(4)
    with torch.no_grad():
        out = render(means, None, None, opac, colors, w2c, K, width, height, covars=cov, backend="torch")
        bare = out if tool_pose is None else render(means[:n_bare], None, None, opac[:n_bare], colors[:n_bare],
                                                    w2c, K, width, height, covars=cov[:n_bare], backend="torch")
    ray = (pixel_centers(height, width) - K[:2, 2]) / torch.diagonal(K)[:2]  # [H, W, 2] (u', v')

    def depth_of(o):  # [H, W] m, 0 where less than half covered
        inv_z = (o.rgb[..., 4:6] * ray).sum(-1) + o.rgb[..., 6]  # [H, W] alpha-weighted inverse depth
        return torch.where(o.alpha > 0.5, o.alpha / inv_z.clamp(min=1e-6), torch.zeros_like(inv_z))

    image = out.rgb[..., :3].clamp(0, 1).permute(2, 0, 1)  # [3, H, W]
    return image, depth_of(out), out.rgb[..., 3] > 0.5, depth_of(bare)
