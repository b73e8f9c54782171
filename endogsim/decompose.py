"""Decomposition of a reconstructed scene into objects: tool, tissues, and the static support.

1. Labels per Gaussian (`assign_objects`): every Gaussian's mean, at each frame's time, is
   projected into that frame's label map; where it is visible (inside the image and, when a depth
   map is given, within `depth_tol` of the observed depth) it votes for the label there; the
   majority of its votes is its object. Label maps come from the tool masks (tissue / tool) or a
   pluggable `Segmenter` (image [H, W, 3] -> integer labels [H, W], -1 = none).
2. The static support (below). 3. Tissues apart (`split_kmeans`): k-means on position and colour
   (two organs side by side differ in both).

Tool masks tell the tool from the rest, but not the tissue from what it lies on. A 4DGS says
which Gaussians move: the tissue deforms under the tool; the body wall, the organ bed, the
support do not. The static part seen around the tissue is, locally, a surface: its plane, fitted
by RANSAC to the Gaussians that do not move, is the support, and what lies in front of it (on the
camera's side) is tissue. The plane extends under the tissue, where the camera cannot see: it is
where filling stops and where the tissue is held (`endogsim.filling`).

Frames: world points in the scene frame (the reference camera's, OpenCV: +z away from the camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from common.cameras import project, transform_points


__all__ = [
    "DecompositionError",
    "Segmenter",
    "label_maps_from_tool_masks",
    "label_maps_from_segmenter",
    "assign_objects",
    "split_kmeans",
    "SupportPlane",
    "gaussian_motion",
    "fit_support_plane",
    "label_support",
    "static_support",
    "surface_tolerance",
    "isolated",
]

# A segmenter maps one RGB image [H, W, 3] (float in [0, 1]) to integer labels [H, W] (-1 = none).
Segmenter = Callable[[np.ndarray], np.ndarray]


class DecompositionError(ValueError):
    """Bad input to the decomposition; the message names the argument."""


@dataclass
class SupportPlane:
    """The plane n . x = d, n unit and pointing away from the camera (into the body)."""

    normal: np.ndarray  # [3]
    offset: float  # m

    def height(self, x) -> np.ndarray:
        """Signed distance [N] of points x [N, 3] in front of the plane (> 0 on the camera's side)."""
        return self.offset - np.asarray(x, np.float64) @ self.normal

    def z_at(self, xy) -> np.ndarray:
        """The plane's z [N] above points xy [N, 2] (the plane must not contain the z axis direction)."""
        xy = np.asarray(xy, np.float64)
        if abs(self.normal[2]) < 1e-6:
            raise DecompositionError("SupportPlane.z_at: the plane is parallel to the viewing axis")
        return (self.offset - xy @ self.normal[:2]) / self.normal[2]


def gaussian_motion(model, times) -> tuple[np.ndarray, np.ndarray]:
    """(means [F, N, 3] of a GaussianModel deformed to each time, motion [N]: the largest distance
    from its first-frame mean over the frames, m)."""
    with torch.no_grad():
        means = np.stack([model.deform(float(t))["means"].cpu().numpy() for t in times])  # [F, N, 3]
    return means, np.linalg.norm(means - means[0], axis=-1).max(0)


def fit_support_plane(
    points,
    motion=None,
    static_fraction: float = 0.3,
    tol: float = 0.002,
    iterations: int = 200,
    max_behind: float = 0.05,
    max_tilt: float = 60.0,
    seed: int = 0,
) -> tuple[SupportPlane, np.ndarray]:
    """RANSAC plane through the Gaussians that do not move, refined by least squares on its inliers.

    points [N, 3] (scene frame), motion [N] m or None (all static). Static: motion at most
    static_fraction x the 99th percentile of the motion (relative, so the clip's units and the
    4DGS's residual jitter do not matter), and at least the quarter that moves least. tol: inlier distance, m. Among the candidate planes
    with at most max_behind of the static points behind them (a support holds what lies in
    front of it) and facing the camera (normal within max_tilt degrees of the viewing direction:
    the camera looks at the tissue bed, not along it), the one with the most inliers. Returns the plane (normal pointing away from the
    camera) and the inlier mask [N] (over all points)."""
    x = np.asarray(points, np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or len(x) < 3:
        raise DecompositionError(f"points: expected [N, 3] with N >= 3, got {x.shape}")
    if not (0 < static_fraction <= 1) or tol <= 0:
        raise DecompositionError(
            f"static_fraction in (0, 1] and tol > 0 expected, got {static_fraction}, {tol}"
        )
    static = np.ones(len(x), bool)
    if motion is not None:
        m = np.asarray(motion, np.float64)
        if m.shape != (len(x),):
            raise DecompositionError(f"motion: expected shape ({len(x)},), got {m.shape}")
        # at least the quarter that moves least: where nothing moves, the 99th percentile is jitter
        static = m <= max(static_fraction * np.percentile(m, 99), np.quantile(m, 0.25))
    cand = x[static]
    if len(cand) < 3:
        raise DecompositionError("fit_support_plane: fewer than 3 static Gaussians")
    rng = np.random.default_rng(seed)
    best, best_count = None, -1
    for _ in range(iterations):
        a, b, c = cand[rng.choice(len(cand), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-12:
            continue
        n /= np.linalg.norm(n)
        if n @ a < 0:
            n = -n  # away from the camera
        if n @ a < np.cos(np.radians(max_tilt)) * np.linalg.norm(a):
            continue
        h = a @ n - cand @ n  # [C] in front of the plane (> 0)
        count = int((np.abs(h) <= tol).sum())
        # a support has the tissue in front of it and (almost) nothing behind it
        if count > best_count and (h < -tol).mean() <= max_behind:
            best, best_count = (n, float(a @ n)), count
    if best is None:
        raise DecompositionError(
            "fit_support_plane: no plane facing the camera with the static points in front of it"
        )
    n, d = best
    inl = np.abs(cand @ n - d) <= tol
    centre = cand[inl].mean(0)
    n = np.linalg.svd(cand[inl] - centre)[2][-1]  # least-squares normal: the smallest singular direction
    if n @ centre < 0:  # away from the camera (at the origin)
        n = -n
    plane = SupportPlane(n, float(n @ centre))
    return plane, np.abs(plane.height(x)) <= tol


def label_support(
    labels, points, plane: SupportPlane, tissue_labels, support_label: int, tol: float = 0.002
) -> np.ndarray:
    """Label maps [F, H, W] with the support's pixels relabelled: where a tissue-labelled pixel's
    surface point (points [F, H, W, 3], the reference camera's frame; NaN where nothing was seen)
    lies on or behind the plane (within tol in front of it counts as on it)."""
    labels = np.asarray(labels).copy()
    pts = np.asarray(points, np.float64)
    if pts.shape != labels.shape + (3,):
        raise DecompositionError(f"points: expected shape {labels.shape + (3,)}, got {pts.shape}")
    on = np.isin(labels, tissue_labels) & (plane.height(pts.reshape(-1, 3)).reshape(labels.shape) <= tol)
    labels[on] = support_label
    return labels


def surface_tolerance(heights) -> float:
    """How rough the rendered support is, m: the 99th percentile of how far its pixels (heights [M],
    m, signed as `SupportPlane.height`) lie behind the plane, where no tissue can be, so that what
    lies further in front of it than that is tissue (the rim of tissue that meets its support
    smoothly, lower than the Gaussians' tolerance). 0 when no pixel lies behind the plane."""
    behind = -np.asarray(heights, np.float64)
    behind = behind[np.isfinite(behind) & (behind > 0)]
    return float(np.percentile(behind, 99)) if len(behind) else 0.0


def isolated(points, min_cluster: int = 10, radius_factor: float = 4.0) -> np.ndarray:
    """[N] bool: the points [N, 3] outside every cluster of at least min_cluster points, a cluster
    being what is connected through neighbours closer than radius_factor times the points' median
    nearest-neighbour distance. Tissue is a connected surface of Gaussians; support Gaussians that
    noisy depth lifted beyond the plane's tolerance stand apart, and filled down to the plane they
    would become free columns of particles."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    points = np.asarray(points, np.float64)
    n = len(points)
    if n < 2:
        return np.zeros(n, bool)
    tree = cKDTree(points)
    spacing = float(np.median(tree.query(points, k=2)[0][:, 1]))  # m
    pairs = tree.query_pairs(radius_factor * spacing, output_type="ndarray")  # [P, 2]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)  # [N]
    return np.bincount(label)[label] < min(min_cluster, n)


def static_support(points, plane: SupportPlane, tol: float = 0.002) -> np.ndarray:
    """[N] bool: the Gaussians on or behind the support plane (within tol in front of it count as
    on it); the rest lie in front of it, on the camera's side: the tissue."""
    return plane.height(points) <= tol


# ------------------------------------------------------------------------------ labels


def label_maps_from_tool_masks(tool_masks) -> np.ndarray:
    """EndoNeRF tool masks [F, H, W] (True = tool) -> labels [F, H, W]: 0 tissue, 1 tool."""
    m = np.asarray(tool_masks)
    if m.ndim != 3:
        raise DecompositionError(f"tool_masks: expected [F, H, W], got shape {m.shape}")
    return m.astype(bool).astype(np.int64)


def label_maps_from_segmenter(images, segmenter: Segmenter) -> np.ndarray:
    """Run a segmenter on images [F, H, W, 3] in [0, 1]; returns labels [F, H, W] (int, -1 = none)."""
    images = np.asarray(images)
    out = []
    for f, image in enumerate(images):
        lab = np.asarray(segmenter(image))
        if lab.shape != image.shape[:2] or not np.issubdtype(lab.dtype, np.integer):
            raise DecompositionError(
                f"segmenter: frame {f}: expected an integer label map of shape {image.shape[:2]}, "
                f"got {lab.dtype} {lab.shape}"
            )
        out.append(lab.astype(np.int64))
    return np.stack(out)  # [F, H, W]


def assign_objects(means, labels, K, w2c, depth=None, depth_tol: float = 0.05, n_labels: int | None = None):
    """Object id per Gaussian by majority vote over frames.

    means [F, N, 3] (world, each frame's deformed means) or [N, 3] (the same for every frame);
    labels [F, H, W] int (-1 = no label); K [3, 3] or [F, 3, 3]; w2c [4, 4] or [F, 4, 4];
    depth [F, H, W] observed z-depth (0 = unknown) or None: with it a Gaussian votes only where
    |z - depth| <= depth_tol * depth (it is the visible surface there, not behind it).
    Returns (object_id [N] int64, votes [N, L] int64). Gaussians without any vote take the object
    of the nearest voted Gaussian (in the first frame's means); with no vote at all it is an error.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise DecompositionError(f"labels: expected [F, H, W], got shape {labels.shape}")
    F_, H, W = labels.shape
    means = np.asarray(means, dtype=np.float64)
    if means.ndim == 2:
        means = np.broadcast_to(means, (F_,) + means.shape)
    if means.ndim != 3 or means.shape[0] != F_ or means.shape[2] != 3:
        raise DecompositionError(f"means: expected [F={F_}, N, 3] or [N, 3], got shape {means.shape}")
    K = np.broadcast_to(np.asarray(K, np.float64), (F_, 3, 3))
    w2c = np.broadcast_to(np.asarray(w2c, np.float64), (F_, 4, 4))
    if depth is not None:
        depth = np.asarray(depth, np.float64)
        if depth.shape != labels.shape:
            raise DecompositionError(f"depth: expected shape {labels.shape} (as labels), got {depth.shape}")
    L = int(labels.max()) + 1 if n_labels is None else int(n_labels)
    if L <= 0:
        raise DecompositionError("labels: no frame has any label >= 0")
    N = means.shape[1]
    votes = np.zeros((N, L), np.int64)
    cam = transform_points(torch.from_numpy(w2c.copy()), torch.from_numpy(means.copy())).numpy()  # [F, N, 3]
    z = cam[..., 2]  # [F, N]
    front = z > 1e-9
    cam[..., 2] = np.where(front, z, 1.0)  # points behind the camera project anywhere; masked below
    uv = project(torch.from_numpy(cam), torch.from_numpy(K.copy())).numpy()  # [F, N, 2] pixel centres at +0.5
    for f in range(F_):
        u, v, z_f = uv[f, :, 0], uv[f, :, 1], z[f]
        ok = front[f] & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        ui, vi = np.where(ok, u, 0).astype(np.int64), np.where(ok, v, 0).astype(np.int64)
        lab = labels[f, vi, ui]  # [N]
        ok &= (lab >= 0) & (lab < L)
        if depth is not None:
            d = depth[f, vi, ui]  # [N]
            ok &= (d <= 0) | (np.abs(z_f - d) <= depth_tol * d)
        np.add.at(votes, (np.nonzero(ok)[0], lab[ok]), 1)
    has = votes.sum(1) > 0
    if not has.any():
        raise DecompositionError(
            "assign_objects: no Gaussian projects onto a labelled, depth-consistent pixel in any frame"
        )
    object_id = votes.argmax(1)  # ties go to the smaller label
    if not has.all():
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(means[0][has]).query(means[0][~has])
        object_id[~has] = object_id[has][nearest]
    return object_id.astype(np.int64), votes


def split_kmeans(
    points, colors, k: int, color_weight: float = 1.0, seed: int = 0, iters: int = 50
) -> np.ndarray:
    """Split one object's Gaussians into k parts by k-means on [position / spread, colour * weight].

    Positions are divided by their overall standard deviation so that a unit of colour difference
    and a spread of the object's extent count alike; clusters are then numbered by increasing mean
    x (left to right in the image when the world is the camera frame). Farthest-point initialisation
    from a seeded start makes the result deterministic. Returns part ids [M] in [0, k)."""
    pts, col = np.asarray(points, np.float64), np.asarray(colors, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or col.shape != (len(pts), 3):
        raise DecompositionError(
            f"split_kmeans: expected points [M, 3] and colors [M, 3], got {pts.shape}, {col.shape}"
        )
    if not isinstance(k, int) or k < 1 or k > len(pts):
        raise DecompositionError(f"split_kmeans: k must be an int in [1, {len(pts)}], got {k!r}")
    if k == 1:
        return np.zeros(len(pts), np.int64)
    feat = np.concatenate([(pts - pts.mean(0)) / max(pts.std(), 1e-12), col * color_weight], 1)  # [M, 6]
    rng = np.random.default_rng(seed)
    centers = [feat[rng.integers(len(feat))]]
    for _ in range(k - 1):
        d = np.min(((feat[:, None] - np.asarray(centers)[None]) ** 2).sum(-1), 1)  # [M]
        centers.append(feat[int(np.argmax(d))])
    centers = np.asarray(centers)  # [k, 6]
    for _ in range(iters):
        assign = ((feat[:, None] - centers[None]) ** 2).sum(-1).argmin(1)  # [M]
        new = np.array([feat[assign == j].mean(0) if np.any(assign == j) else centers[j] for j in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    order = np.argsort([pts[assign == j, 0].mean() if np.any(assign == j) else np.inf for j in range(k)])
    return np.argsort(order)[assign].astype(np.int64)
