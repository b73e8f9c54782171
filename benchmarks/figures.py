"""The leaderboard's figures beyond the bar charts, as PNG bytes: depth error against depth range,
the same view's depth maps side by side, pose-error CDFs, and each method's reconstructed points
of one scene after the task's alignment. Each function takes a task's items and {method: answers}
(only rows that answered) and returns (title, png) pairs."""

from __future__ import annotations

import io

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
