"""3D grounding of referring expressions among candidate boxes.

Protocol: a method is given the scene as an RGB-D video with poses (all 8 views at 128 px: RGB, z-depth,
K, w2c; the inputs of Video-3D LLM / 3D-IDE, whose object features pool patches by depth and pose),
the candidate boxes [N, 6] (axis-aligned centre + size, world frame, metres) and one referring
expression; `multi` says the expression may name several objects (Multi3DRefer). It returns the
indices of the chosen candidates (one for a single-target expression).

Candidates are fixed by the task for every method: each object's axis-aligned box jittered (centre
by N(0, 0.08 size), size by exp(N(0, 0.08))) plus 4 random floor boxes that overlap no object, shuffled
(the scheme 3D-IDE and G2VLM train with, copied here on purpose so the task owns its inputs).
Scores (`common.metrics`): Acc@0.25 / Acc@0.5 of the chosen box over single-target expressions
(ScanRefer), F1@0.25 / F1@0.5 over multi-target ones (Multi3DRefer, Hungarian matching).
Baselines: a random candidate, the largest box, the candidate nearest the candidates' mean centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData, scene_rng
from common.metrics import box_corners, box_iou_3d_axis_aligned, multi3drefer_f1

JITTER = 0.08
DISTRACTORS = 4


@dataclass
class GroundingQuery:
    scene_id: str
    images: torch.Tensor  # [F, 3, H, W]
    depth: torch.Tensor  # [F, H, W] z-depth, 0 = none
    K: torch.Tensor  # [F, 3, 3]
    w2c: torch.Tensor  # [F, 4, 4]
    candidates: torch.Tensor  # [N, 6]
    text: str
    multi: bool


@dataclass
class GroundingAnswer:
    chosen: list[int]


def object_boxes(objects: list[dict]) -> np.ndarray:
    """Axis-aligned boxes [O, 6] enclosing the annotated oriented boxes."""
    out = []
    for o in objects:
        corners = box_corners(np.array(o["center"]), np.array(o["size"]), np.array(o["R"]))
        lo, hi = corners.min(0), corners.max(0)
        out.append(np.concatenate([(lo + hi) / 2, hi - lo]))
    return np.array(out).reshape(-1, 6)


def candidate_boxes(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[O + D, 6], shuffled (module docstring)."""
    c = gt[:, :3] + rng.normal(size=gt[:, :3].shape) * JITTER * gt[:, 3:]
    s = gt[:, 3:] * np.exp(rng.normal(size=gt[:, 3:].shape) * JITTER)
    lo, hi = gt[:, :2].min(0) - 1.0, gt[:, :2].max(0) + 1.0
    made, tries = [], 0
    while len(made) < DISTRACTORS and tries < 200 * DISTRACTORS:
        tries += 1
        size = gt[rng.integers(len(gt)), 3:] * rng.uniform(0.7, 1.3, 3)
        center = np.array([*rng.uniform(lo, hi), size[2] / 2])
        if np.all(box_iou_3d_axis_aligned(center, size, gt[:, :3], gt[:, 3:]) <= 0.05):
            made.append(np.concatenate([center, size]))
    boxes = np.concatenate([np.concatenate([c, s], 1), np.array(made).reshape(-1, 6)], 0)
    return boxes[rng.permutation(len(boxes))]


def _iou(a, b) -> float:
    return float(box_iou_3d_axis_aligned(a[:3], a[3:], b[:3], b[3:]))


class GroundingTask(Task):
    name = "grounding"
    title = "3D grounding among candidate boxes"
    protocol = (
        "8 RGB-D views with K and w2c, candidate boxes [N, 6] and a referring expression -> chosen "
        "candidate indices; Acc@IoU (single target), Multi3DRefer F1@IoU (multi-target)"
    )
    metrics = [
        Metric("acc@0.25", True, "ScanRefer, axis-aligned IoU"),
        Metric("acc@0.5", True, "ScanRefer, axis-aligned IoU"),
        Metric("f1@0.25", True, "Multi3DRefer (Hungarian), multi-target expressions"),
        Metric("f1@0.5", True, "Multi3DRefer (Hungarian), multi-target expressions"),
    ]
    participants = [Participant("ide3d"), Participant("g2vlm", "sensor-depth mode, 4 of the 8 views")]

    def items(self, data: TaskData) -> list[Item]:
        out = []
        for i, s in enumerate(data.samples):
            ann = s.annotations
            if not ann.get("objects") or s.depth is None:
                continue
            gt = object_boxes(ann["objects"])
            cand = torch.from_numpy(candidate_boxes(gt, scene_rng(self.name, data.split, i))).float()
            ids = [o["id"] for o in ann["objects"]]
            for r in ann.get("referring", []):
                targets = gt[[ids.index(t) for t in r["target_ids"]]]
                q = GroundingQuery(
                    s.scene_id, s.images, s.depth, s.K, s.w2c, cand, r["text"], bool(r["multi"])
                )
                out.append(Item(q, targets))
        return out

    def score(self, item: Item, answer: GroundingAnswer) -> dict[str, float]:
        boxes = item.query.candidates.numpy().astype(np.float64)
        chosen = [int(k) for k in answer.chosen]
        if any(not 0 <= k < len(boxes) for k in chosen):
            raise ValueError(f"grounding answer: candidate index out of range 0..{len(boxes) - 1}: {chosen}")
        if not item.query.multi:
            iou = _iou(boxes[chosen[0]], item.truth[0]) if chosen else 0.0
            return {"acc@0.25": float(iou >= 0.25), "acc@0.5": float(iou >= 0.5)}
        pred = boxes[chosen].reshape(-1, 6)
        return {f"f1@{t:g}": multi3drefer_f1(pred, item.truth, threshold=t) for t in (0.25, 0.5)}

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        def random_candidate(q: GroundingQuery) -> GroundingAnswer:
            return GroundingAnswer([int(scene_rng("random", q.scene_id, q.text).integers(len(q.candidates)))])

        def largest(q: GroundingQuery) -> GroundingAnswer:
            return GroundingAnswer([int(q.candidates[:, 3:].prod(1).argmax())])

        def nearest_centre(q: GroundingQuery) -> GroundingAnswer:
            c = q.candidates[:, :3]
            return GroundingAnswer([int((c - c.mean(0)).norm(dim=1).argmin())])

        return {
            "random-candidate": random_candidate,
            "largest-box": largest,
            "nearest-centre-box": nearest_centre,
        }
