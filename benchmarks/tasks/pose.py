"""Relative camera pose.

Protocol: a method is given the same 4 views as the depth task (RGB at 128 px and K; no depth, no
poses) and returns a world-to-camera matrix per view [V, 4, 4] (OpenCV) in any world frame and
scale. A method that estimates poses for only some views (COLMAP registers what it can) returns
`registered` [V] bool; unregistered views count as failed pairs (error 180 degrees), and the
registered fraction is reported.

Scores (VGGT protocol, `common.metrics`): over the 6 view pairs of a scene, RRA@15 and RTA@15 (percent
of pairs with a relative rotation / translation-direction error under 15 degrees) and AUC@30; the
mean over scenes. Baseline: every camera at the identity (rotation error = the true relative
rotation; no translation direction, so RTA fails).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData
from benchmarks.tasks.depth import VIEWS
from common.metrics import pose_auc, relative_pose_errors


@dataclass
class PoseQuery:
    scene_id: str
    images: torch.Tensor  # [V, 3, H, W]
    K: torch.Tensor  # [V, 3, 3]


@dataclass
class PoseAnswer:
    w2c: torch.Tensor  # [V, 4, 4]
    registered: np.ndarray | None = None  # [V] bool; None = all


class PoseTask(Task):
    name = "pose"
    title = "Relative camera pose"
    protocol = "4 RGB views + K at 128 px -> w2c [V, 4, 4] in any frame and scale (pairwise relative errors)"
    metrics = [
        Metric("rra_15", True, "VGGT pairwise, percent"),
        Metric("rta_15", True, "VGGT pairwise, percent"),
        Metric("auc_30", True, "VGGT pairwise (np.histogram AUC), percent"),
        Metric("registered", True, "fraction of views with a pose"),
    ]
    participants = [
        Participant("ivgt"),
        Participant("vlm3", "pairs to view 0, as text"),
        Participant("g2vlm", "RGB-only mode"),
        Participant("colmap", "peer (pycolmap)"),
    ]

    def items(self, data: TaskData) -> list[Item]:
        return [
            Item(PoseQuery(s.scene_id, v.images, v.K), v.w2c.double().numpy())
            for s in data.samples
            for v in [s.select(VIEWS)]
        ]

    def score(self, item: Item, answer: PoseAnswer) -> dict[str, float]:
        gt = item.truth
        pred = torch.as_tensor(answer.w2c).double().numpy()
        if pred.shape != gt.shape:
            raise ValueError(f"pose answer: expected w2c of shape {list(gt.shape)}, got {list(pred.shape)}")
        reg = np.ones(len(gt), bool) if answer.registered is None else np.asarray(answer.registered, bool)
        if not np.isfinite(pred[reg]).all():
            raise ValueError("pose answer: w2c has non-finite entries for registered views")
        pred = np.where(reg[:, None, None], pred, np.eye(4))
        rot, trans = relative_pose_errors(pred, gt)
        i, j = np.triu_indices(len(gt), k=1)
        failed = ~(reg[i] & reg[j])
        rot, trans = np.where(failed, 180.0, rot), np.where(failed, 180.0, trans)
        return {
            "rra_15": 100 * float(np.mean(rot < 15)),
            "rta_15": 100 * float(np.mean(trans < 15)),
            "auc_30": 100 * pose_auc(rot, trans, 30),
            "registered": float(reg.mean()),
        }

    def figures(self, items: list[Item], answers: dict) -> list[tuple[str, bytes]]:
        from benchmarks.figures import pose_figures

        return pose_figures(items, answers)

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        return {"identity-cameras": lambda q: PoseAnswer(torch.eye(4).repeat(q.images.shape[0], 1, 1))}
