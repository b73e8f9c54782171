"""Multi-view reconstruction (indoor scenes).

Protocol: a method is given the 4 views of the depth task (RGB at 128 px and K; no depth, no poses)
and returns a point map per view [V, H, W, 3]: the 3D point seen at each pixel, in any frame and
scale, with a validity mask [V, H, W]. Scored as Pi3 / G2VLM score point maps (`mv_recon/eval.py`):
Umeyama Sim(3) on the pixel correspondences (pixels valid in both, subsampled to 20000, fixed per
scene), point-to-point ICP at 0.1 m, then accuracy and completeness (mean nearest-neighbour
distances, metres) and normal consistency against all of the ground truth's valid pixels (so a
sparse answer pays for what it misses; for a dense answer this is the official protocol); on the
same aligned points Chamfer (mean of the two) and F-score at 5 cm
(`common.metrics.point_cloud_metrics`) and occupancy IoU of 10 cm voxels. An answer with fewer than
30 valid points (a peer that failed) scores F-score and IoU 0, no distances, and the fraction of
scenes scored is shown. Outdoor scenes
(tens of metres of open ground) are left out: 5 cm thresholds mean little there. Baseline: the
train split's median depth at every pixel, identity cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData, scene_rng
from benchmarks.tasks.depth import VIEWS
from common.cameras import depth_to_points
from common.metrics import (
    multiview_reconstruction_metrics,
    occupancy_iou,
    point_cloud_metrics,
)

MAX_POINTS = 20000
MIN_POINTS = 30  # fewer valid points: the answer cannot be aligned, it scores as failed
ICP_THRESHOLD = 0.1
FSCORE_THRESHOLD = 0.05
VOXEL = 0.1


@dataclass
class ReconQuery:
    scene_id: str
    images: torch.Tensor  # [V, 3, H, W]
    K: torch.Tensor  # [V, 3, 3]


@dataclass
class ReconAnswer:
    points: torch.Tensor  # [V, H, W, 3] any frame and scale
    valid: torch.Tensor | None = None  # [V, H, W] bool; None = all finite points
    # The method's own surface, (vertices [N, 3], faces [F, 3] int) in the points' frame, where it
    # makes one (IVGT's SDF, the TSDF peer); only drawn, never scored. None: the figure
    # triangulates the point maps.
    mesh: tuple | None = None


@dataclass
class ReconTruth:
    points: np.ndarray  # [V, H, W, 3] world, metres
    valid: np.ndarray  # [V, H, W] bool
    index: int
    w2c: np.ndarray  # [V, 4, 4] world -> camera (only for the figures' viewpoint)


class ReconTask(Task):
    name = "recon"
    title = "Multi-view reconstruction (indoor)"
    protocol = (
        "4 RGB views + K at 128 px -> point maps [V, H, W, 3] in any frame and scale; "
        "Umeyama Sim(3) + ICP (0.1 m), then Acc / Comp / NC, Chamfer, F-score@5cm, voxel IoU@10cm"
    )
    metrics = [
        Metric("acc", False, "Pi3 / G2VLM mv_recon (Sim(3) + ICP), metres"),
        Metric("comp", False, "Pi3 / G2VLM mv_recon (Sim(3) + ICP), metres"),
        Metric("nc", True, "Pi3 / G2VLM mv_recon (PCA normals, k = 30)"),
        Metric("chamfer", False, "after the same alignment, metres"),
        Metric("fscore", True, "at 5 cm after the same alignment"),
        Metric("iou", True, "10 cm voxels after the same alignment"),
        Metric("scored", True, "fraction of scenes with >= 30 valid points (else F-score = IoU = 0)"),
    ]
    participants = [
        Participant("ivgt", "surface of the SDF rendered at the input views"),
        Participant("ivgt-explicit", "the depth head's point maps fused (the paper's foil)"),
        Participant("g2vlm", "RGB-only mode"),
        Participant("colmap", "peer (pycolmap): sparse points at the keypoints that triangulated"),
        Participant("tsdf-fusion", "peer (Open3D TSDF) fusing g2vlm's RGB-only depth and cameras"),
    ]

    def items(self, data: TaskData) -> list[Item]:
        out = []
        for i, s in enumerate(data.samples):
            if s.annotations.get("domain", "indoor") != "indoor":
                continue
            v = s.select(VIEWS)
            points = depth_to_points(v.depth, v.K, v.w2c).double().numpy()
            truth = ReconTruth(points, v.depth.numpy() > 0, i, v.w2c.double().numpy())
            out.append(Item(ReconQuery(s.scene_id, v.images, v.K), truth))
        return out

    def score(self, item: Item, answer: ReconAnswer) -> dict[str, float]:
        t = item.truth
        pred = torch.as_tensor(answer.points).double().numpy()
        if pred.shape != t.points.shape:
            raise ValueError(
                f"recon answer: expected points of shape {list(t.points.shape)}, got {list(pred.shape)}"
            )
        valid = t.valid & np.isfinite(pred).all(-1)
        if answer.valid is not None:
            valid &= torch.as_tensor(answer.valid).numpy().astype(bool)
        p, g = pred[valid], t.points[valid]
        if len(p) < MIN_POINTS:  # nothing to align: F-score and IoU are 0, the distances undefined
            return {"fscore": 0.0, "iou": 0.0, "scored": 0.0}
        if len(p) > MAX_POINTS:
            keep = scene_rng(self.name, t.index).choice(len(p), MAX_POINTS, replace=False)
            p, g = p[keep], g[keep]
        gt_all = t.points[t.valid]  # what completeness is measured against, however much was answered
        if len(gt_all) > MAX_POINTS:
            gt_all = gt_all[
                scene_rng(self.name, "gt", t.index).choice(len(gt_all), MAX_POINTS, replace=False)
            ]
        official, aligned = multiview_reconstruction_metrics(
            p, g, ICP_THRESHOLD, gt_all=gt_all, return_aligned=True
        )
        pc = point_cloud_metrics(aligned, gt_all, threshold=FSCORE_THRESHOLD)
        return {
            "acc": official["acc"],
            "comp": official["comp"],
            "nc": official["nc"],
            "chamfer": pc["chamfer"],
            "fscore": pc["fscore"],
            "iou": occupancy_iou(aligned, gt_all, VOXEL),
            "scored": 1.0,
        }

    def figures(self, items: list[Item], answers: dict) -> list[tuple[str, bytes]]:
        from benchmarks.figures import mesh_figures, recon_figures

        return recon_figures(items, answers) + mesh_figures(items, answers)

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        if train is None:
            return {}
        value = float(
            np.median(
                np.concatenate(
                    [
                        s.depth[s.depth > 0].numpy()
                        for s in train.samples
                        if s.annotations.get("domain", "indoor") == "indoor"
                    ]
                )
            )
        )

        def flat(q: ReconQuery) -> ReconAnswer:
            V, _, H, W = q.images.shape
            eye = torch.eye(4).repeat(V, 1, 1)
            return ReconAnswer(depth_to_points(torch.full((V, H, W), value), q.K, eye))

        return {"train-median-depth-identity-cameras": flat}
