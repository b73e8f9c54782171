"""Metric depth, dense and at query pixels, indoor and outdoor.

Protocol: a method is given 4 views of a held-out scene (RGB [V, 3, H, W] at the split's 128 px and
their intrinsics K [V, 3, 3]; no depth, no poses) and a list of query pixels [Q, 3] (view, column,
row; the pixel's centre is +0.5). It returns a z-depth map [V, H, W] in metres and/or the depth at
each query pixel [Q] (a method that answers pixels alone, VLM3, returns no map). A method whose
depth has no metric scale sets `scale_free` and is scored only after per-image median alignment.

Scores (`common.metrics.depth_metrics`, pixels pooled within a scene, then the mean over scenes):
AbsRel and delta1 per domain, metric (no alignment: DepthVLM's and Depth Anything's metric
protocol) and median-aligned (per image, the MiDaS / MoGe protocol of relative depth), on the
pixels with ground-truth depth (the outdoor sky has none); at the query pixels, AbsRel and delta1.
Baselines: the train split's median depth everywhere, and the same per domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.metrics import depth_metrics
from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData, scene_rng

VIEWS = (0, 2, 5, 7)  # 4 views spread over the 8 of each scene (the inputs of depth, pose and recon)
PIXELS_PER_VIEW = 4


@dataclass
class DepthQuery:
    scene_id: str
    images: torch.Tensor  # [V, 3, H, W] in [0, 1]
    K: torch.Tensor  # [V, 3, 3] pixels
    pixels: np.ndarray  # [Q, 3] int (view index into `images`, column, row)


@dataclass
class DepthAnswer:
    depth: torch.Tensor | None = None  # [V, H, W] z-depth, metres (relative when scale_free)
    at_pixels: np.ndarray | None = None  # [Q] z-depth at the query pixels
    scale_free: bool = False


@dataclass
class DepthTruth:
    domain: str
    depth: np.ndarray  # [V, H, W], 0 = none
    at_pixels: np.ndarray  # [Q]


class DepthTask(Task):
    name = "depth"
    title = "Metric depth (dense and at query pixels)"
    protocol = (
        "4 RGB views + K at 128 px -> z-depth [V, H, W] in metres and/or depth at [Q] query pixels; "
        "metric scores without alignment, relative scores after per-image median alignment"
    )
    metrics = [
        *(
            Metric(f"{d}_{m}{a}", hib, proto)
            for d in ("indoor", "outdoor")
            for a, proto in (("", "metric (DepthVLM)"), ("_aligned", "median-aligned (MoGe)"))
            for m, hib in (("abs_rel", False), ("delta1", True))
        ),
        Metric("pixel_abs_rel", False, "metric, at query pixels (VLM3 / DepthLM)"),
        Metric("pixel_delta1", True, "metric, at query pixels (VLM3 / DepthLM)"),
    ]
    participants = [
        Participant("ivgt", "scale-free: aligned rows only"),
        Participant("depthvlm"),
        Participant("vlm3", "query pixels only"),
        Participant("g2vlm", "RGB-only mode"),
    ]

    def items(self, data: TaskData) -> list[Item]:
        out = []
        for i, s in enumerate(data.samples):
            v = s.select(VIEWS)
            rng = scene_rng(self.name, data.split, i)
            depth = v.depth.numpy()
            pixels = []
            for k in range(len(VIEWS)):
                rows, cols = np.nonzero(depth[k] > 0)
                pick = rng.choice(len(rows), min(PIXELS_PER_VIEW, len(rows)), replace=False)
                pixels += [(k, int(cols[p]), int(rows[p])) for p in pick]
            pixels = np.array(pixels, dtype=np.int64).reshape(-1, 3)
            query = DepthQuery(s.scene_id, v.images, v.K, pixels)
            truth = DepthTruth(
                s.annotations.get("domain", "indoor"), depth, depth[pixels[:, 0], pixels[:, 2], pixels[:, 1]]
            )
            out.append(Item(query, truth))
        return out

    def score(self, item: Item, answer: DepthAnswer) -> dict[str, float]:
        t, out = item.truth, {}
        if answer.depth is not None:
            pred = torch.as_tensor(answer.depth).float().numpy()
            if pred.shape != t.depth.shape:
                raise ValueError(
                    f"depth answer: expected shape {list(t.depth.shape)}, got {list(pred.shape)}"
                )
            pred = np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0)
            aligned = depth_metrics(pred, t.depth, align="median", per_image=False)
            out.update(
                {
                    f"{t.domain}_abs_rel_aligned": aligned["abs_rel"],
                    f"{t.domain}_delta1_aligned": aligned["delta1"],
                }
            )
            if not answer.scale_free:
                metric = depth_metrics(pred, t.depth)
                out.update({f"{t.domain}_abs_rel": metric["abs_rel"], f"{t.domain}_delta1": metric["delta1"]})
        at = answer.at_pixels
        if at is None and answer.depth is not None and not answer.scale_free:
            px = item.query.pixels
            at = torch.as_tensor(answer.depth).float().numpy()[px[:, 0], px[:, 2], px[:, 1]]
        if at is not None and not answer.scale_free:
            at = np.nan_to_num(np.asarray(at, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            m = depth_metrics(at[None], t.at_pixels[None])
            out.update(pixel_abs_rel=m["abs_rel"], pixel_delta1=m["delta1"])
        return out

    def figures(self, items: list[Item], answers: dict) -> list[tuple[str, bytes]]:
        from benchmarks.figures import depth_figures

        return depth_figures(items, answers)

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        if train is None:
            return {}
        by_domain: dict[str, list] = {}
        for s in train.samples:
            d = s.depth[s.depth > 0].numpy()
            by_domain.setdefault(s.annotations.get("domain", "indoor"), []).append(d)
        overall = float(np.median(np.concatenate([np.concatenate(v) for v in by_domain.values()])))
        per = {k: float(np.median(np.concatenate(v))) for k, v in by_domain.items()}
        domain_of = {s.scene_id: s.annotations.get("domain", "indoor") for s in data.samples}

        def constant(value_of):
            def answer(q: DepthQuery) -> DepthAnswer:
                value = value_of(q)
                return DepthAnswer(torch.full((q.images.shape[0], *q.images.shape[-2:]), value))

            return answer

        return {
            "train-median-depth": constant(lambda q: overall),
            "train-median-depth-per-domain": constant(lambda q: per.get(domain_of[q.scene_id], overall)),
        }
