"""A `PhysicsScene` from a trained 4DGS and its clip: labels per Gaussian, the static support found on
the reconstruction's own rendered surface, tissues apart, materials from the prior, and the scene
built on them (`endogsim.decompose` holds the pieces, `endogsim.filling` the particles).
"""

from __future__ import annotations

import numpy as np
import torch

from common.cameras import depth_to_points, project, transform_points

from .decompose import (Segmenter, assign_objects, fit_support_plane, gaussian_motion, label_maps_from_segmenter,
                        isolated, label_maps_from_tool_masks, label_support, split_kmeans,
                        static_support, surface_tolerance)
from .filling import depth_volumes
from .lighting import scene_with_rest_colors
from .render import render
from .scene import KINDS, PhysicsScene, SceneError, SceneObject

__all__ = ["scene_from_gaussian_model"]


def scene_from_gaussian_model(model, sample, t: float = 0.0, *, segmenter: Segmenter | None = None,
                        labels=None, label_names=("tissue", "tool"), kinds=("tissue", "rigid"), n_tissues: int = 1,
                        tissue_labels=None, materials: list | None = None, prior=None, thickness: float = 0.01,
                        spacing: float | None = None, depth_tol: float = 0.05, color_weight: float = 1.0,
                        seed: int = 0, mpm=None, support: bool | None = None,
                        support_tol: float = 0.002, tissue_model: str | None = None, rest_colors: bool = True):
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
    object "support" and so do the tissue Gaussians apart from every cluster (`isolated`: noisy
    depth lifts support Gaussians off the plane), the tissue is filled down the plane's normal to the plane (thickness
    is then not used), held where the plane is (`plane_anchors`), and each tissue's particle
    volumes add up to what the reference frame's rendered depth encloses above the plane
    (`depth_volumes`) over its pixels: the tissue-labelled ones and those standing out of the
    support's roughness (`surface_tolerance`), each given its nearest tissue Gaussian's object.
    support=False: every tissue-labelled Gaussian is tissue, filled to
    `thickness` and held below its deepest particle.

    rest_colors (when t is the first frame's time): the deformable Gaussians' colours are fitted to
    the first frame outside its tool mask (`endogsim.lighting.scene_with_rest_colors`), the state a
    simulation starts from; the 4DGS's canonical colours are a compromise over every frame."""
    from .material_prior import MaterialPrior

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
        # tissue Gaussians alone in front of the plane are the support's, lifted by depth noise
        lone = np.isin(label_id, tissue_ls) & ~on_support
        lone[lone] = isolated(cam_means[lone])
        on_support |= lone
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
        # the volume's pixels: tissue, and the support-labelled pixels standing out of the support's
        # roughness (the rim of tissue that meets the plane smoothly, lower than support_tol)
        h0 = plane.height(np.nan_to_num(points[0]).reshape(-1, 3)).reshape(H, W)  # [H, W] m
        sup0 = labels[0] == n_labels - 1
        rim = sup0 & (h0 > surface_tolerance(h0[sup0 & np.isfinite(points[0]).all(-1)]))
        object_map = _tissue_pixels(points[0], np.where(rim, tissue_ls[0], labels[0]), tissue_ls,
                                    cam_means[go < n_t], go[go < n_t])
        volumes = depth_volumes(rendered[0], sample.K[0].cpu().numpy(), object_map, plane, n_t)
    decomposition = ("label maps" if labels_given else "segmenter" if segmenter is not None else "tool masks") + (
        " + static support plane" if support else "") + (f" + k-means into {n_tissues} tissues" if n_tissues > 1 else "")
    meta = {"source": "GaussianModel", "t": float(t), "frames": F_, "decomposition": decomposition}
    if plane is not None:
        meta["support_plane"] = {"normal": plane.normal.tolist(), "offset": plane.offset}
    if volumes is not None:
        meta["tissue_volume_m3"] = [float(v) for v in volumes]  # what the particle volumes add up to
    fit = rest_colors and abs(float(t) - float(sample.times[0])) < 1e-9
    meta["colors"] = "fitted to frame 0" if fit else "the 4DGS's canonical colours"
    scene = PhysicsScene.build(means, g["quats"], g["scales"], g["opacities"], colors, go, objects, sample.K[0], w2c_ref,
                               W, H, thickness=thickness, spacing=spacing, mpm=mpm, support=plane, volumes=volumes,
                               meta=meta)
    if fit:
        tool = sample.masks["tool"][0] if "tool" in sample.masks else torch.zeros(H, W, dtype=torch.bool)
        scene = scene_with_rest_colors(scene, sample.images[0].permute(1, 2, 0).cpu(), tool.cpu())
    return scene


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
