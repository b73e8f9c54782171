"""The leaderboard's figures beyond the bar charts, as PNG bytes: depth error against depth range,
the same view's depth maps side by side, pose-error CDFs, and each method's reconstruction of one
scene after the task's alignment (points from above, and surfaces rendered to images). Each
function takes a task's items and {method: answers} (only rows that answered) and returns
(title, png) pairs."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import torch

DEPTH_BINS = np.array([0.0, 1, 2, 4, 8, 16, 32, 1e9])  # metres


def png_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def depth_figures(items, answers: dict) -> list[tuple[str, bytes]]:
    from common.metrics import align_median

    plt = pyplot()
    dense = {m: a for m, a in answers.items() if a and a[0].depth is not None}
    if not dense:
        return []
    out = []
    fig, ax = plt.subplots(figsize=(7, 3.6))
    centers = np.sqrt(DEPTH_BINS[:-1] * np.minimum(DEPTH_BINS[1:], 64)).clip(0.5)
    for name, ans in dense.items():
        err, gts = [], []
        for it, a in zip(items, ans):
            gt = it.truth.depth
            pred = torch.as_tensor(a.depth).float().numpy()
            valid = gt > 0
            if a.scale_free:  # relative depth: median-aligned per image, as the task scores it
                pred = np.stack([align_median(p, g, v) if v.any() else p for p, g, v in zip(pred, gt, valid)])
            err.append(np.abs(pred[valid] - gt[valid]) / gt[valid])
            gts.append(gt[valid])
        err, gts = np.concatenate(err), np.concatenate(gts)
        idx = np.digitize(gts, DEPTH_BINS) - 1
        means = [err[idx == b].mean() if (idx == b).any() else np.nan for b in range(len(centers))]
        ax.plot(centers, means, marker="o", label=name + (" (aligned)" if ans[0].scale_free else ""))
    ax.set_xscale("log")
    ax.set_xlabel("ground-truth depth (m)")
    ax.set_ylabel("AbsRel")
    ax.legend(fontsize=7)
    ax.set_title("Depth error against depth range (all test views)", fontsize=9)
    out.append(("depth error against depth range", png_bytes(fig)))

    picks = []
    for domain in ("indoor", "outdoor"):
        k = next((i for i, it in enumerate(items) if it.truth.domain == domain), None)
        if k is not None:
            picks.append(k)
    rows = ["input", "ground truth", *dense]
    fig, axes = plt.subplots(
        len(picks), len(rows), figsize=(1.9 * len(rows), 2.0 * len(picks)), squeeze=False
    )
    for r, k in enumerate(picks):
        gt = items[k].truth.depth[0]
        vmax = np.percentile(gt[gt > 0], 98) if (gt > 0).any() else 1.0
        panels = [items[k].query.images[0].permute(1, 2, 0).numpy(), gt]
        for name in dense:
            d = torch.as_tensor(dense[name][k].depth[0]).float().numpy()
            if dense[name][k].scale_free and (gt > 0).any():
                d = align_median(d, gt, gt > 0)
            panels.append(d)
        for c, (title, img) in enumerate(zip(rows, panels)):
            ax = axes[r, c]
            ax.imshow(
                img, cmap=None if img.ndim == 3 else "turbo", vmin=0, vmax=None if img.ndim == 3 else vmax
            )
            ax.set_axis_off()
            ax.set_title(f"{title}\n{items[k].query.scene_id}" if c < 2 else title, fontsize=7)
    out.append(("the same view's depth maps (scale-free ones median-aligned)", png_bytes(fig)))
    return out


def pose_figures(items, answers: dict) -> list[tuple[str, bytes]]:
    from common.metrics import relative_pose_errors

    plt = pyplot()
    if not answers:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.6))
    grid = np.linspace(0, 90, 181)
    for name, ans in answers.items():
        errs = []
        for it, a in zip(items, ans):
            reg = np.ones(len(it.truth), bool) if a.registered is None else np.asarray(a.registered, bool)
            pred = np.where(reg[:, None, None], torch.as_tensor(a.w2c).double().numpy(), np.eye(4))
            rot, trans = relative_pose_errors(pred, it.truth)
            i, j = np.triu_indices(len(it.truth), k=1)
            errs.append(np.where(reg[i] & reg[j], np.maximum(rot, trans), 180.0))
        e = np.concatenate(errs)
        ax.plot(grid, [(e < g).mean() for g in grid], label=name)
    ax.set_xlabel("max(rotation, translation-direction) error (deg)")
    ax.set_ylabel("fraction of view pairs")
    ax.legend(fontsize=7)
    ax.set_title("Pose error CDF over all view pairs", fontsize=9)
    return [("pose error CDF", png_bytes(fig))]


def recon_figures(items, answers: dict, max_points: int = 4000) -> list[tuple[str, bytes]]:
    from common.metrics import align_sim3_icp

    plt = pyplot()
    if not items or not answers:
        return []
    t = items[0].truth
    rng = np.random.default_rng(0)
    names = ["ground truth", *answers]
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    gt_all = t.points[t.valid]
    lo, hi = gt_all.min(0), gt_all.max(0)
    for ax, name in zip(axes[0], names):
        if name == "ground truth":
            pts = gt_all
        else:
            a = answers[name][0]
            pred = torch.as_tensor(a.points).double().numpy()
            valid = t.valid & np.isfinite(pred).all(-1)
            if a.valid is not None:
                valid &= torch.as_tensor(a.valid).numpy().astype(bool)
            pts = align_sim3_icp(pred[valid], t.points[valid])[0] if valid.sum() >= 30 else np.zeros((0, 3))
        if len(pts) > max_points:
            pts = pts[rng.choice(len(pts), max_points, replace=False)]
        ax.scatter(pts[:, 0], pts[:, 1], c=pts[:, 2], s=0.5, cmap="viridis", vmin=lo[2], vmax=hi[2])
        ax.set_xlim(lo[0] - 0.5, hi[0] + 0.5)
        ax.set_ylim(lo[1] - 0.5, hi[1] + 0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{name} ({len(pts)} pts)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(
        f"{items[0].query.scene_id}: points from above after Sim(3) + ICP, colour = height", fontsize=8
    )
    return [("reconstructed points of one scene", png_bytes(fig))]


def grid_mesh(points: np.ndarray, valid: np.ndarray, max_edge: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate point maps [V, H, W, 3] over their pixel grids: two triangles per 2x2 block of
    valid pixels, dropping those with an edge longer than max_edge x the median edge (the skins
    across depth edges). -> (vertices [N, 3], faces [F, 3])."""
    V, H, W, _ = points.shape
    idx = np.arange(V * H * W).reshape(V, H, W)
    a, b, c, d = idx[:, :-1, :-1], idx[:, :-1, 1:], idx[:, 1:, :-1], idx[:, 1:, 1:]  # [V, H-1, W-1] each
    faces = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    verts, ok = points.reshape(-1, 3), valid.reshape(-1) & np.isfinite(points.reshape(-1, 3)).all(-1)
    faces = faces[ok[faces].all(1)]
    if not len(faces):
        return verts, faces
    tri = verts[faces]  # [F, 3, 3]
    edges = np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=-1).max(1)  # [F]
    return verts, faces[edges <= max_edge * np.median(edges)]


def render_mesh(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, w2c: np.ndarray,
                size: int) -> np.ndarray:
    """Grey Lambert shading with a headlight, by Open3D's CPU ray caster -> [size, size] in [0, 1]
    (background 1)."""
    import open3d as o3d

    image = np.ones((size, size))
    if not len(faces):
        return image
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)),
                        o3d.core.Tensor(faces.astype(np.uint32)))
    rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
        intrinsic_matrix=o3d.core.Tensor(K), extrinsic_matrix=o3d.core.Tensor(w2c), width_px=size,
        height_px=size)
    hit = scene.cast_rays(rays)
    ok = np.isfinite(hit["t_hit"].numpy())  # [size, size]
    d = rays.numpy()[..., 3:]
    cos = np.abs((hit["primitive_normals"].numpy() * d).sum(-1)) / np.linalg.norm(d, axis=-1)
    image[ok] = 0.15 + 0.75 * cos[ok]
    return image


def mesh_panels(truth, answers: dict, size: int = 160) -> list[tuple[str, np.ndarray]]:
    """(title, image [size, size]) of the ground truth's triangulated depth and of each method's
    surface (its own mesh, or its point maps triangulated) of one scene, moved by the task's
    Sim(3) + ICP alignment, all rendered from one viewpoint behind and above the first view.
    answers: {name: ReconAnswer}."""
    from common.cameras import camera_centers, look_at
    from common.metrics import align_sim3_icp, umeyama

    t = truth
    gt_w2c = torch.from_numpy(t.w2c)
    target = torch.from_numpy(t.points[t.valid].mean(0))
    c0 = camera_centers(gt_w2c[0])
    up = -gt_w2c[0, 1, :3]  # the first view's image "up" in the world
    dist = float((c0 - target).norm())
    w2c = look_at(c0 + 0.6 * (c0 - target) + 0.8 * dist * up, target, up).numpy()
    f = 0.9 * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    panels = [("ground truth", render_mesh(*grid_mesh(t.points, t.valid), K, w2c, size))]
    for name, a in answers.items():
        pred = torch.as_tensor(a.points).double().numpy()
        valid = t.valid & np.isfinite(pred).all(-1)
        if a.valid is not None:
            valid &= torch.as_tensor(a.valid).numpy().astype(bool)
        if valid.sum() < 30:
            panels.append((f"{name} (no surface)", np.ones((size, size))))
            continue
        aligned = align_sim3_icp(pred[valid], t.points[valid])[0]
        s, R, tr = umeyama(pred[valid], aligned, with_scale=True)  # the alignment as one similarity
        if a.mesh is not None:
            verts, faces, kind = np.asarray(a.mesh[0], np.float64), np.asarray(a.mesh[1]), "mesh"
        else:
            own = np.isfinite(pred).all(-1)  # the method's own pixels, not only where the truth has depth
            if a.valid is not None:
                own &= torch.as_tensor(a.valid).numpy().astype(bool)
            (verts, faces), kind = grid_mesh(pred, own), "point maps"
        kind = kind if len(faces) else "no surface: too sparse"
        panels.append((f"{name} ({kind})", render_mesh(s * verts @ R.T + tr, faces, K, w2c, size)))
    return panels


def mesh_figures(items, answers: dict) -> list[tuple[str, bytes]]:
    """The rendered surfaces of the first scene (mesh_panels) in one row."""
    plt = pyplot()
    if not items or not answers:
        return []
    panels = mesh_panels(items[0].truth, {name: ans[0] for name, ans in answers.items()})
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.5), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(textwrap.fill(title, 26), fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{items[0].query.scene_id}: surfaces after Sim(3) + ICP, seen from behind and above view 0",
                 fontsize=8)
    return [("reconstructed surfaces of one scene, rendered", png_bytes(fig))]
