"""Scenes for G2VLM: a few views with RGB, sensor depth, cameras, candidate boxes, referring phrases,
questions and the scene graph's ground truth.

From a scene of the project's format (synthetic by default): `views` views uniformly over the scan,
resized to `image_size` (K adjusted; depth and normals nearest). Sensor depth is the ground truth
as a depth camera returns it: a fraction `sensor_dropout` of pixels lost in 4 x 4-pixel holes,
relative noise N(0, sensor_noise), nothing beyond `sensor_max_depth`; fixed per (split, scene).
Candidate boxes (the proposals of the scene graph and of grounding): every object's axis-aligned
box jittered plus random floor boxes, shuffled; the scheme of `ide3d.data`, copied on purpose (a
package imports only `common`). Relations are computed from the objects' boxes seen from the first
view (`relations.py`); a jittered candidate carries its object's relations, a distractor none.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.cameras import resize
from common.datasets import SceneDataset
from common.metrics import box_corners, box_iou_3d_axis_aligned
from common.synthetic import generate_split
from g2vlm.relations import relation_matrix


@dataclass
class Query:
    kind: str  # "refer" (a single-target phrase) or "qa"
    text: str
    qtype: str = ""
    target: int = -1  # candidate index of the referred object
    target_box: np.ndarray | None = None  # [6] ground truth
    answers: list[str] = field(default_factory=list)
    value: float | None = None  # numeric ground truth (MRA), when the answer is a number


@dataclass
class Scene:
    scene_id: str
    rgb: torch.Tensor  # [V, 3, S, S] in [0, 1]
    depth: torch.Tensor  # [V, S, S] ground-truth z-depth (0 = none)
    sensor: torch.Tensor  # [V, S, S] sensor depth (holes, noise)
    normals: torch.Tensor  # [V, S, S, 3] ground-truth camera-frame normals (0 = none)
    K: torch.Tensor  # [V, 3, 3] at S
    w2c: torch.Tensor  # [V, 4, 4]
    boxes: torch.Tensor  # [N, 6] candidates
    is_object: torch.Tensor  # [N] bool
    object_of: list  # [N] the object index of each candidate, -1 for distractors
    object_boxes: np.ndarray  # [O, 6] ground truth
    relations: np.ndarray  # [O, O, R] ground truth between the objects (first view)
    queries: list[Query]
    domain: str = "indoor"
    relation_targets: torch.Tensor | None = None  # [N, N, R] float, between candidates

    def to(self, device) -> "Scene":
        """A copy with every tensor on `device`."""
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.__dict__.items()}
        return Scene(**moved)


def uniform_views(num_views: int, views: int) -> list[int]:
    return sorted({int(round(x)) for x in np.linspace(0, num_views - 1, min(views, num_views))})


def object_boxes(objects: list[dict]) -> np.ndarray:
    """Axis-aligned boxes [O, 6] enclosing the annotated objects' oriented boxes."""
    out = []
    for o in objects:
        corners = box_corners(np.array(o["center"]), np.array(o["size"]), np.array(o["R"]))
        lo, hi = corners.min(0), corners.max(0)
        out.append(np.concatenate([(lo + hi) / 2, hi - lo]))
    return np.array(out).reshape(-1, 6)


def candidate_boxes(gt: np.ndarray, rng: np.random.Generator, jitter: float, distractors: int) -> np.ndarray:
    """Jittered objects, then distractor floor boxes overlapping no object by IoU > 0.05: [O + D, 6]."""
    c = gt[:, :3] + rng.normal(size=gt[:, :3].shape) * jitter * gt[:, 3:]
    s = gt[:, 3:] * np.exp(rng.normal(size=gt[:, 3:].shape) * jitter)
    lo, hi = gt[:, :2].min(0) - 1.0, gt[:, :2].max(0) + 1.0
    made, tries = [], 0
    while len(made) < distractors and tries < 200 * max(1, distractors):
        tries += 1
        size = gt[rng.integers(len(gt)), 3:] * rng.uniform(0.7, 1.3, 3)
        center = np.array([*rng.uniform(lo, hi), size[2] / 2])
        if np.all(box_iou_3d_axis_aligned(center, size, gt[:, :3], gt[:, 3:]) <= 0.05):
            made.append(np.concatenate([center, size]))
    return np.concatenate([np.concatenate([c, s], 1), np.array(made).reshape(-1, 6)], 0)


def sensor_depth(
    depth: torch.Tensor, rng: np.random.Generator, dropout: float, noise: float, max_depth: float
) -> torch.Tensor:
    """A depth camera's view of ground-truth depth [V, H, W]: 4x4 holes, relative noise, a range limit."""
    V, H, W = depth.shape
    holes = torch.from_numpy(rng.random((V, (H + 3) // 4, (W + 3) // 4)) < dropout)
    holes = holes.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :H, :W]
    noisy = depth * (1 + noise * torch.from_numpy(rng.standard_normal((V, H, W))).float())
    return torch.where(holes | (depth > max_depth) | (depth <= 0), torch.zeros_like(depth), noisy)


def ensure_data(dcfg) -> None:
    root = Path(dcfg.root)
    for split in (dcfg.train_split, dcfg.test_split):
        if not (root / split / "index.json").is_file():
            n = dcfg.generate_scenes.get(split)
            if n is None:
                raise ValueError(
                    f"{root / split}: no index.json, and data.generate_scenes has no entry for {split!r}"
                )
            generate_split(root, split, scenes=int(n), views=8, size=128, seed=0)


def _renumber(text: str, view, view_of: dict) -> str | None:
    if view is None:
        return text
    if int(view) not in view_of:
        return None
    return re.sub(r"\bview (\d+)\b", lambda m: f"view {view_of[int(m.group(1))]}", text)


def scene_queries(ann: dict, cand_of_object: list, gt: np.ndarray, view_of: dict, qa_types) -> list[Query]:
    ids = [o["id"] for o in ann["objects"]]
    out = []
    for r in ann["referring"]:
        text = _renumber(r["text"], r.get("view"), view_of)
        if text is None or r["multi"]:
            continue
        k = ids.index(r["target_ids"][0])
        out.append(Query("refer", text, r["kind"], target=cand_of_object[k], target_box=gt[k]))
    for q in ann["questions"]:
        text = _renumber(q["question"], q.get("view"), view_of) if q["type"] in qa_types else None
        if text is not None:
            value = q["answer_value"] if q["type"] in ("distance", "size", "count") else None
            out.append(Query("qa", text, q["type"], answers=[q["answer"]], value=value))
    return out


def load_scenes(cfg, split: str) -> list[Scene]:
    """The scenes of a split (`data.root`) at `model.image_size`, fixed per (split, scene)."""
    d, S = cfg.data, cfg.model.image_size
    dataset = SceneDataset(d.root, split, load=("depth", "normals"))
    n = len(dataset) if d.max_scenes <= 0 else min(d.max_scenes, len(dataset))
    scenes = []
    for i in range(n):
        sample = dataset[i]
        ann = sample.annotations
        where = Path(d.root) / split / sample.scene_id / "scene.json"
        if not ann.get("objects"):
            raise ValueError(f"{where}: no annotated objects (the scene graph and grounding need them)")
        if sample.depth is None:
            raise ValueError(
                f"{where}: views without depth (the sensor-depth mode and the ground truth need it)"
            )
        rng = np.random.default_rng([0, zlib.crc32(split.encode()), i])
        views = uniform_views(sample.num_views, d.views)
        rgb, K = resize(sample.images[views], sample.K[views], (S, S))
        depth, _ = resize(sample.depth[views][:, None], sample.K[views], (S, S), mode="nearest")
        normals = torch.zeros(len(views), S, S, 3)
        if sample.normals is not None:
            normals = resize(sample.normals[views], sample.K[views], (S, S), mode="nearest")[0].permute(
                0, 2, 3, 1
            )
        gt = object_boxes(ann["objects"])
        cand = candidate_boxes(gt, rng, d.jitter, d.distractors)
        order = rng.permutation(len(cand))  # candidate j is original box order[j]
        pos = {int(o): j for j, o in enumerate(order)}
        object_of = [int(o) if o < len(gt) else -1 for o in order]
        w2c = sample.w2c[views]
        scenes.append(
            Scene(
                scene_id=sample.scene_id,
                rgb=rgb.clamp(0, 1),
                depth=depth[:, 0],
                normals=normals,
                K=K,
                w2c=w2c,
                sensor=sensor_depth(depth[:, 0], rng, d.sensor_dropout, d.sensor_noise, d.sensor_max_depth),
                boxes=torch.from_numpy(cand[order]).float(),
                is_object=torch.tensor([o >= 0 for o in object_of]),
                object_of=object_of,
                object_boxes=gt,
                relations=relation_matrix(gt, K[0].double().numpy(), w2c[0].double().numpy(), S),
                queries=scene_queries(
                    ann, [pos[k] for k in range(len(gt))], gt, {v: j for j, v in enumerate(views)}, d.qa_types
                ),
                domain=ann.get("domain", "indoor"),
            )
        )
        scenes[-1].relation_targets = candidate_relations(scenes[-1])
    if not scenes:
        raise ValueError(f"{Path(d.root) / split}: no scenes")
    return scenes


def candidate_relations(scene: Scene) -> torch.Tensor:
    """Relation targets [N, N, R] between candidates: an object's candidates carry its relations."""
    N, R = len(scene.object_of), scene.relations.shape[-1]
    out = torch.zeros(N, N, R)
    for a, oa in enumerate(scene.object_of):
        for b, ob in enumerate(scene.object_of):
            if oa >= 0 and ob >= 0 and a != b:
                out[a, b] = torch.from_numpy(scene.relations[oa, ob].astype(np.float32))
    return out


def load_seven_scenes(cfg) -> list[Scene]:
    """7-Scenes test sequences for the reconstruction evaluation (no objects or questions): frames every
    `data.seven_scenes_stride` (the official sparse protocol: 200; dense: 40), at `model.image_size`,
    sensor depth degraded as for the synthetic scenes. Scenes are the folders with a TestSplit.txt."""
    from common.datasets.seven_scenes import (
        read_seven_scenes_sequence,
        read_seven_scenes_split,
        seven_scenes_frames,
    )

    d, S = cfg.data, cfg.model.image_size
    root = Path(d.seven_scenes_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data.seven_scenes_root folder not found")
    scene_dirs = sorted(p for p in root.iterdir() if (p / "TestSplit.txt").is_file())
    if not scene_dirs:
        raise ValueError(f"{root}: no 7-Scenes scene folders (expected <scene>/TestSplit.txt)")
    out = []
    for scene_dir in scene_dirs:
        for seq in read_seven_scenes_split(scene_dir, "test"):
            n = len(seven_scenes_frames(scene_dir / seq))
            sample = read_seven_scenes_sequence(
                scene_dir / seq, frames=list(range(0, n, d.seven_scenes_stride))
            )
            rgb, K = resize(sample.images, sample.K, (S, S))
            depth = resize(sample.depth[:, None], sample.K, (S, S), mode="nearest")[0][:, 0]
            rng = np.random.default_rng([0, zlib.crc32(sample.scene_id.encode())])
            out.append(
                Scene(
                    scene_id=sample.scene_id,
                    rgb=rgb.clamp(0, 1),
                    depth=depth,
                    sensor=sensor_depth(depth, rng, d.sensor_dropout, d.sensor_noise, d.sensor_max_depth),
                    normals=torch.zeros(*depth.shape, 3),
                    K=K,
                    w2c=sample.w2c,
                    boxes=torch.zeros(0, 6),
                    is_object=torch.zeros(0, dtype=torch.bool),
                    object_of=[],
                    object_boxes=np.zeros((0, 6)),
                    relations=np.zeros((0, 0, 8), dtype=bool),
                    queries=[],
                    domain="indoor",
                )
            )
    return out
