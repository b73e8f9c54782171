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

from common.cameras import depth_to_points, project, transform_points

from .render import render

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

    def ray_depth(self, x, camera_center=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Distance [N] from points x [N, 3] along the camera ray through each, down to the plane
        (0 where the point is at or behind it, or the ray runs parallel to the plane)."""
        x = np.asarray(x, np.float64)
        rays = x - np.asarray(camera_center, np.float64)  # [N, 3]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        along = rays @ self.normal  # [N] cos of the ray against the normal
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(along > 1e-6, self.height(x) / along, 0.0)
        return np.maximum(s, 0.0)

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
    4DGS's residual jitter do not matter). tol: inlier distance, m. Among the candidate planes
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
        static = m <= static_fraction * np.percentile(m, 99)
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


# ------------------------------------------------------------------------------ the scene

def scene_from_gaussian_model(model, sample, t: float = 0.0, *, segmenter: Segmenter | None = None,
                        labels=None, label_names=("tissue", "tool"), kinds=("tissue", "rigid"), n_tissues: int = 1,
                        tissue_labels=None, materials: list | None = None, prior=None, thickness: float = 0.01,
                        spacing: float | None = None, depth_tol: float = 0.05, color_weight: float = 1.0,
                        seed: int = 0, mpm=None, support: bool | None = None,
                        support_tol: float = 0.002, tissue_model: str | None = None):
    """A scene from a trained `GaussianModel` at time t and the frames of a `common.datasets.Sample`
    (images, K, w2c, depth, masks["tool"], times), e.g. `read_endonerf(clip)`.

    Labels: per-object label maps `labels` [F, H, W] (int, -1 = none) if given, else
    `segmenter(image)` per frame, else the tool masks (0 tissue, 1 tool); label_names / kinds
    describe the labels. Each Gaussian is assigned by `assign_objects` with its
    means deformed to each frame's time. With n_tissues > 1 the (single) tissue label is split
    by `split_kmeans` on position and colour. Materials: given, else `prior.estimate(label,
    first image, object mask)` (default `MaterialPrior()`, the literature table) for each of
    `tissue_labels` (default "liver"), with the sources recorded; tissue_model replaces the
    prior's constitutive model (e.g. the one a simulation is known to use). The reference camera
    is the first frame's.

    support (default: True when the labels are the tool masks, which do not label the support;
    False when a segmenter or label maps are given) (`endogsim.decompose`): the plane fitted to the tissue-labelled Gaussians that
    do not move is the support; the Gaussians on it (within support_tol, m) become the rigid
    object "support", the tissue is filled down the plane's normal to the plane (thickness
    is then not used), held where the plane is (`plane_anchors`), and each tissue's particle
    volumes add up to what the reference frame's depth map encloses above the plane
    (`depth_volumes`). support=False: every tissue-labelled Gaussian is tissue, filled to
    `thickness` and held below its deepest particle."""
    from .filling import depth_volumes
    from .material_prior import MaterialPrior
    from .scene import KINDS, PhysicsScene, SceneError, SceneObject

    if len(label_names) != len(kinds) or any(k not in KINDS for k in kinds):
        raise SceneError(f"label_names / kinds: expected equal lengths and kinds in {KINDS}, got {label_names}, {kinds}")
    labels_given = labels is not None
    if support is None:
        support = not labels_given and segmenter is None
    images = sample.images.permute(0, 2, 3, 1).cpu().numpy()  # [F, H, W, 3]
    F_, H, W = images.shape[:3]
    if labels is not None:
        labels = np.asarray(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != (F_, H, W) or not np.issubdtype(labels.dtype, np.integer):
            raise SceneError(f"labels: expected integer label maps of shape {(F_, H, W)}, got {labels.dtype} "
                             f"{labels.shape}")
    elif segmenter is not None:
        labels = label_maps_from_segmenter(images, segmenter)
    else:
        if "tool" not in sample.masks:
            raise SceneError("sample.masks: expected a 'tool' mask (or pass a segmenter)")
        labels = label_maps_from_tool_masks(sample.masks["tool"].cpu().numpy())
    w2c_ref = sample.w2c[0].float()
    with torch.no_grad():
        g = model.deform(t)
        colors = model.colors(g["means"], w2c_ref).clamp(0, 1)  # [N, 3]
    per_frame, motion = gaussian_motion(model, sample.times)  # [F, N, 3], [N] m
    depth = sample.depth.cpu().numpy() if sample.depth is not None else None
    tissue_ls = [i for i, k in enumerate(kinds) if k == "tissue"]
    plane, n_labels = None, len(label_names)
    if support:  # on the reconstruction's own surface: its rendered depth is the many frames' consensus
        points, rendered, pixel_motion = _rendered_surface(model, sample, w2c_ref, motion)
        # the visibility vote reads the rendered depth, except on the tool, which the 4DGS does not hold
        tool_px = ~np.isin(labels, tissue_ls) & (labels >= 0)
        depth = rendered if depth is None else np.where(tool_px, depth, rendered)
        cand = np.isin(labels[0], tissue_ls) & np.isfinite(points[0]).all(-1)  # [H, W]
        plane, _ = fit_support_plane(points[0][cand], pixel_motion[cand], tol=support_tol, seed=seed)
        labels = label_support(labels, points, plane, tissue_ls, n_labels, support_tol)
        n_labels += 1
    label_id, _ = assign_objects(per_frame, labels, sample.K.cpu().numpy(), sample.w2c.cpu().numpy(), depth,
                                 depth_tol, n_labels=n_labels)
    means = g["means"].cpu().numpy()
    cam_means = transform_points(w2c_ref.double(), torch.from_numpy(means).double()).numpy()  # [N, 3]
    on_support = label_id == len(label_names)  # [N] (no such label without support)
    if support:  # and what lies on the plane itself (pixels at the tissue's blurred edge vote tissue)
        on_support |= np.isin(label_id, tissue_ls) & static_support(cam_means, plane, support_tol)
    if support and not np.isin(label_id, tissue_ls).any():
        raise SceneError("support: every tissue-labelled Gaussian lies on the fitted support plane; nothing "
                         "to simulate (pass support=False)")
    names, go = [], np.full(len(means), -1, np.int64)
    if n_tissues > 1:
        if len(tissue_ls) != 1:
            raise SceneError(f"n_tissues: splitting needs exactly one tissue label, got {len(tissue_ls)}")
        sel = (label_id == tissue_ls[0]) & ~on_support
        go[sel] = split_kmeans(means[sel], colors.cpu().numpy()[sel], n_tissues, color_weight, seed)
        names = [f"{label_names[tissue_ls[0]]}_{j}" for j in range(n_tissues)]
    else:
        for j, lab in enumerate(tissue_ls):
            go[(label_id == lab) & ~on_support] = j
        names = [label_names[lab] for lab in tissue_ls]
    rigid_ls = [i for i, k in enumerate(kinds) if k == "rigid"]
    for j, lab in enumerate(rigid_ls):
        go[label_id == lab] = len(names) + j
    go[on_support] = len(names) + len(rigid_ls)  # the support, the last rigid object
    n_t = len(names)
    tissue_labels = list(tissue_labels or ["liver"] * n_t)
    if len(tissue_labels) != n_t:
        raise SceneError(f"tissue_labels: expected {n_t} labels (one per tissue object), got {tissue_labels}")
    objects = []
    if materials is not None:
        if len(materials) != n_t:
            raise SceneError(f"materials: expected {n_t} Material (one per tissue object), got {len(materials)}")
        for name, lab, m in zip(names, tissue_labels, materials):
            objects.append(SceneObject(name, "tissue", lab, m, {"all": "given"}))
    else:
        prior = prior or MaterialPrior()
        proj = _pixels(cam_means, sample.K[0], W, H)
        for j, (name, lab) in enumerate(zip(names, tissue_labels)):
            mask = np.zeros((H, W), bool)
            pix = proj[go == j]
            mask[pix[:, 1], pix[:, 0]] = True
            est = prior.estimate(lab, images[0], mask if mask.any() else None)
            objects.append(SceneObject(name, "tissue", lab, est.to_material(tissue_model), est.sources()))
    objects += [SceneObject(label_names[lab], "rigid", label_names[lab]) for lab in rigid_ls]
    volumes = None
    if support:
        objects.append(SceneObject("support", "rigid", "static support (fitted plane)"))
        thickness = np.maximum(plane.height(cam_means), 0.0)  # [N] down the plane's normal to it
        object_map = _tissue_pixels(points[0], labels[0], tissue_ls, cam_means[go < n_t], go[go < n_t])
        volumes = depth_volumes(rendered[0], sample.K[0].cpu().numpy(), object_map, plane, n_t)
    decomposition = ("label maps" if labels_given else "segmenter" if segmenter is not None else "tool masks") + (
        " + static support plane" if support else "") + (f" + k-means into {n_tissues} tissues" if n_tissues > 1 else "")
    meta = {"source": "GaussianModel", "t": float(t), "frames": F_, "decomposition": decomposition}
    if plane is not None:
        meta["support_plane"] = {"normal": plane.normal.tolist(), "offset": plane.offset}
    if volumes is not None:
        meta["tissue_volume_m3"] = [float(v) for v in volumes]  # what the particle volumes add up to
    return PhysicsScene.build(means, g["quats"], g["scales"], g["opacities"], colors, go, objects, sample.K[0], w2c_ref,
                     W, H, thickness=thickness, spacing=spacing, mpm=mpm, support=plane, volumes=volumes,
                     meta=meta)


def _pixels(cam_points: np.ndarray, K, W: int, H: int) -> np.ndarray:
    """Integer pixels (x, y) [N, 2] of camera-frame points [N, 3], clipped to the image."""
    uv = project(torch.from_numpy(cam_points).double(), torch.as_tensor(K).double()).numpy()  # [N, 2]
    return np.stack([np.clip(uv[:, 0], 0, W - 1), np.clip(uv[:, 1], 0, H - 1)], 1).astype(np.int64)


def _tissue_pixels(points, labels, tissue_labels, tissue_points, tissue_object) -> np.ndarray:
    """Object map [H, W] (-1 = none) of the tissue-labelled pixels with a surface point (points
    [H, W, 3], NaN where nothing was seen), each given the object of the nearest tissue Gaussian
    (tissue_points [M, 3] with tissue_object [M], the same frame as points)."""
    from scipy.spatial import cKDTree

    ok = np.isin(labels, tissue_labels) & np.isfinite(points).all(-1)  # [H, W]
    out = np.full(labels.shape, -1, np.int64)
    if ok.any() and len(tissue_points):
        _, nearest = cKDTree(tissue_points).query(points[ok])
        out[ok] = np.asarray(tissue_object)[nearest]
    return out


@torch.no_grad()
def _rendered_surface(model, sample, w2c_ref, motion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reconstruction seen from every frame's camera: surface points [F, H, W, 3] in the
    reference camera's frame (NaN where its alpha < 0.5), z-depth [F, H, W] (0 there), and the
    Gaussians' motion [N] rendered at the first frame [H, W] (compositing-weighted mean, m)."""
    F_, _, H, W = sample.images.shape
    K, w2c = sample.K.float(), sample.w2c.float()
    points, depth = np.full((F_, H, W, 3), np.nan), np.zeros((F_, H, W))
    for f in range(F_):
        out = model.render(float(sample.times[f]), w2c[f], K[f], W, H)
        seen = (out.alpha > 0.5).cpu()  # [H, W]
        d = torch.where(seen, out.depth.cpu(), torch.zeros(()))  # [H, W]
        world = depth_to_points(d.double(), K[f].double(), w2c[f].double())  # [H, W, 3]
        cam = transform_points(w2c_ref.double(), world.reshape(-1, 3)).reshape(H, W, 3)
        points[f][seen.numpy()] = cam.numpy()[seen.numpy()]
        depth[f] = d.numpy()
    g = model.deform(float(sample.times[0]))
    m = torch.as_tensor(motion, dtype=torch.float32)[:, None].expand(-1, 3)  # [N, 3] motion as a colour
    out = render(g["means"], g["quats"], g["scales"], g["opacities"], m, w2c[0], K[0], W, H)
    return points, depth, (out.rgb[..., 0] / out.alpha.clamp(min=1e-6)).cpu().numpy()
