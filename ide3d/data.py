"""Scenes and queries: the one dataset class that synthetic scenes and ScanNet feed.

A `Scene` is a video of F frames sampled uniformly over the scan's views, with z-depth, K, w2c
(OpenCV, metres), the candidate boxes (axis-aligned [cx, cy, cz, dx, dy, dz], world frame) and its
`Query`s: grounding (ScanRefer: one target; Multi3DRefer: zero, one or several) and question
answering (ScanQA / SQA3D style, text answers). `prepare` computes what the model needs at its
input size once per scene: pixel values, depth, K, which patches belong to which box, and each
visual token's mean world point (for the 3D-input variant only).

Synthetic scenes (`common.synthetic`): the candidates are every object's axis-aligned box,
jittered (centre by N(0, jitter * size), size by exp(N(0, jitter))), and `distractors` random
boxes on the floor, shuffled; fixed per (split, scene), as Mask3D proposals are per scan. Each
single-target referring expression is a ScanRefer query (unique / multiple: whether its category
is unique in the scene) and a Multi3DRefer query (st); multi-target ones are Multi3DRefer (mt),
and `zero_target` expressions per scene name an absent colour (zt). Questions of `qa_types` are
QA queries. Texts that name a view are renumbered to its frame in the video (or dropped when the
view is not sampled).
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
from common.synthetic import PALETTE, generate_split
from ide3d.grounding import patch_membership, token_world_points, world_points
from ide3d.processing import GROUND_TOKEN, ground_prompt, qa_prompt


@dataclass
class Query:
    kind: str  # "ground" or "qa"
    prompt: str  # the user turn as the model reads it
    text: str  # the description or question alone
    dataset: str  # scanrefer | multi3drefer | scanqa | sqa3d
    qtype: str  # unique / multiple; zt / st / mt; the question type
    # Candidate indices of the referred objects; None where the candidates are proposals without a
    # label (evaluated against target_boxes, never trained on).
    targets: list[int] | None = field(default_factory=list)
    target_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))  # [T, 6] ground truth
    answers: list[str] = field(default_factory=list)
    qid: str = ""

    @property
    def reply(self) -> str:
        return GROUND_TOKEN if self.kind == "ground" else self.answers[0]


@dataclass
class SceneInputs:
    """One scene at the model's input size S (g = S / patch patches, p = ceil(g / 2) tokens a side)."""

    pixel_values: torch.Tensor  # [F, 3, S, S] normalised
    depth: torch.Tensor  # [F, S, S] z-depth, 0 = invalid
    K: torch.Tensor  # [F, 3, 3] at S x S
    membership: torch.Tensor  # [N, F, g, g] bool
    token_xyz: torch.Tensor  # [F, p, p, 3] mean world point per visual token
    token_has_points: torch.Tensor  # [F, p, p] bool


@dataclass
class Scene:
    scene_id: str
    frame_ids: list[int]  # the scan's views that became the frames
    frames: torch.Tensor  # [F, 3, H, W] in [0, 1]
    depth: torch.Tensor  # [F, H, W] z-depth, 0 = invalid
    K: torch.Tensor  # [F, 3, 3]
    w2c: torch.Tensor  # [F, 4, 4]
    boxes: torch.Tensor  # [N, 6] candidates
    queries: list[Query]
    objects: list = field(default_factory=list)  # synthetic: the annotated objects (for pictures)
    inputs: SceneInputs | None = None


def uniform_frames(num_views: int, frames: int) -> list[int]:
    """Indices of `frames` views spread uniformly over 0 .. num_views - 1 (Video-3D LLM's "uniform")."""
    if num_views < 1:
        raise ValueError("scene: no views")
    return sorted({int(round(x)) for x in np.linspace(0, num_views - 1, min(frames, num_views))})


def prepare(scene: Scene, processor) -> Scene:
    """Fill `scene.inputs` for a processor's image size and patch size (module docstring)."""
    S, patch = processor.image_size, processor.patch_size
    H, W = scene.frames.shape[-2:]
    depth, K = resize(scene.depth[:, None], scene.K, (S, S), mode="nearest")  # [F, 1, S, S], [F, 3, 3]
    depth = depth[:, 0]
    points = world_points(depth, K, scene.w2c)  # [F, S, S, 3]
    valid = depth > 0
    xyz, has = token_world_points(points, valid, patch, processor.pooled)
    scene.inputs = SceneInputs(
        pixel_values=processor.video(scene.frames),
        depth=depth,
        K=K,
        membership=patch_membership(points, valid, scene.boxes.to(points), patch),
        token_xyz=xyz,
        token_has_points=has,
    )
    return scene


# -------------------------------------------------------------------------------------------------
# Synthetic scenes
# -------------------------------------------------------------------------------------------------


def ensure_data(dcfg) -> None:
    """Generate the synthetic splits (as `make data` does) when they are absent."""
    if dcfg.source != "synthetic":
        return
    root = Path(dcfg.root)
    for split in (dcfg.train_split, dcfg.test_split):
        if not (root / split / "index.json").is_file():
            n = dcfg.generate_scenes.get(split)
            if n is None:
                raise ValueError(
                    f"{root / split}: no index.json, and data.generate_scenes has no entry for {split!r}"
                )
            generate_split(root, split, scenes=int(n), views=8, size=128, seed=0)


def object_boxes(objects: list[dict]) -> np.ndarray:
    """Axis-aligned boxes [O, 6] enclosing each annotated object's oriented box."""
    out = []
    for o in objects:
        corners = box_corners(np.array(o["center"]), np.array(o["size"]), np.array(o["R"]))  # [8, 3]
        lo, hi = corners.min(0), corners.max(0)
        out.append(np.concatenate([(lo + hi) / 2, hi - lo]))
    return np.array(out).reshape(-1, 6)


def candidate_boxes(gt: np.ndarray, rng: np.random.Generator, jitter: float, distractors: int) -> np.ndarray:
    """Jittered ground-truth boxes followed by random distractor boxes on the floor (z from 0),
    each overlapping no object box by IoU > 0.05. Returns [O + D, 6] (not yet shuffled)."""
    c = gt[:, :3] + rng.normal(size=gt[:, :3].shape) * jitter * gt[:, 3:]
    s = gt[:, 3:] * np.exp(rng.normal(size=gt[:, 3:].shape) * jitter)
    boxes = [np.concatenate([c, s], 1)]
    lo, hi = gt[:, :2].min(0) - 1.0, gt[:, :2].max(0) + 1.0
    sizes = gt[:, 3:]
    made, tries = [], 0
    while len(made) < distractors and tries < 200 * max(1, distractors):
        tries += 1
        size = sizes[rng.integers(len(sizes))] * rng.uniform(0.7, 1.3, 3)
        center = np.array([*rng.uniform(lo, hi), size[2] / 2])
        if np.all(box_iou_3d_axis_aligned(center, size, gt[:, :3], gt[:, 3:]) <= 0.05):
            made.append(np.concatenate([center, size]))
    return np.concatenate(boxes + [np.array(made).reshape(-1, 6)], 0)


def _renumber(text: str, view, frame_of: dict) -> str | None:
    """Rename "view k" to its frame position; None when the view is not among the frames."""
    if view is None:
        return text
    if int(view) not in frame_of:
        return None
    return re.sub(r"\bview (\d+)\b", lambda m: f"view {frame_of[int(m.group(1))]}", text)


def synthetic_queries(
    ann: dict,
    order: np.ndarray,
    num_objects: int,
    gt: np.ndarray,
    frame_of: dict,
    dcfg,
    rng: np.random.Generator,
) -> list[Query]:
    """The grounding and QA queries of one synthetic scene (module docstring). `order[j]` is the
    original index (objects first, then distractors) of candidate j."""
    objects = ann["objects"]
    ids = [o["id"] for o in objects]
    cand_of = {int(order[j]): j for j in range(len(order))}  # original index -> candidate index
    cats = [o["category"] for o in objects]
    queries: list[Query] = []
    for r in ann["referring"]:
        text = _renumber(r["text"], r.get("view"), frame_of)
        if text is None:
            continue
        k = [ids.index(t) for t in r["target_ids"]]
        targets, boxes = [cand_of[i] for i in k], gt[k]
        qid = f"{ann['generator'].get('index', 0)}-{r['id']}"
        if not r["multi"]:
            unique = cats.count(cats[k[0]]) == 1
            queries.append(
                Query(
                    "ground",
                    ground_prompt(text, False),
                    text,
                    "scanrefer",
                    "unique" if unique else "multiple",
                    targets,
                    boxes,
                    qid=qid,
                )
            )
            queries.append(
                Query(
                    "ground",
                    ground_prompt(text, True),
                    text,
                    "multi3drefer",
                    "st_wo_d" if unique else "st_w_d",
                    targets,
                    boxes,
                    qid=qid,
                )
            )
        else:
            queries.append(
                Query(
                    "ground", ground_prompt(text, True), text, "multi3drefer", "mt", targets, boxes, qid=qid
                )
            )
    absent = [c for c in PALETTE if c not in {o["color_name"] for o in objects}]
    for n in range(min(dcfg.zero_target, len(absent))):
        color = absent[int(rng.integers(len(absent)))]
        absent.remove(color)
        text = f"all {color} objects"
        queries.append(
            Query(
                "ground",
                ground_prompt(text, True),
                text,
                "multi3drefer",
                "zt_w_d",
                [],
                np.zeros((0, 6)),
                qid=f"{ann['generator'].get('index', 0)}-zt{n}",
            )
        )
    for q in ann["questions"]:
        text = _renumber(q["question"], q.get("view"), frame_of) if q["type"] in dcfg.qa_types else None
        if text is not None:
            queries.append(
                Query(
                    "qa",
                    qa_prompt(text),
                    text,
                    "synthetic-qa",
                    q["type"],
                    answers=[q["answer"]],
                    qid=f"{ann['generator'].get('index', 0)}-q{q['id']}",
                )
            )
    return queries


def load_synthetic(dcfg, split: str, seed: int = 0) -> list[Scene]:
    """The scenes of a synthetic split (`data.root`), candidates fixed per (split, scene)."""
    dataset = SceneDataset(dcfg.root, split, load=("depth",))
    n = len(dataset) if dcfg.max_scenes <= 0 else min(dcfg.max_scenes, len(dataset))
    scenes = []
    for i in range(n):
        sample = dataset[i]
        ann = sample.annotations
        if ann.get("poses_known") is False:
            raise ValueError(
                f"{Path(dcfg.root) / split / sample.scene_id / 'scene.json'}: annotations.poses_known is "
                "false; grounding pools proposals by their 3D points and the cross-view loss reprojects "
                "between frames: both need camera poses"
            )
        if not ann.get("objects"):
            raise ValueError(
                f"{Path(dcfg.root) / split / sample.scene_id}: scene.json has no annotated objects "
                "(3D-IDE needs objects for its candidate boxes)"
            )
        rng = np.random.default_rng([seed, zlib.crc32(split.encode()), i])
        frame_ids = uniform_frames(sample.num_views, dcfg.frames)
        gt = object_boxes(ann["objects"])
        cand = candidate_boxes(gt, rng, dcfg.jitter, dcfg.distractors)
        order = rng.permutation(len(cand))
        queries = synthetic_queries(
            ann, order, len(gt), gt, {v: j for j, v in enumerate(frame_ids)}, dcfg, rng
        )
        scenes.append(
            Scene(
                scene_id=sample.scene_id,
                frame_ids=frame_ids,
                frames=sample.images[frame_ids],
                depth=sample.depth[frame_ids],
                K=sample.K[frame_ids],
                w2c=sample.w2c[frame_ids],
                boxes=torch.from_numpy(cand[order]).float(),
                queries=queries,
                objects=ann["objects"],
            )
        )
    return scenes


def load_scenes(dcfg, split: str, seed: int = 0, processor=None) -> list[Scene]:
    """The scenes of a split from `data.source`, prepared for `processor` when given."""
    if dcfg.source == "synthetic":
        scenes = load_synthetic(dcfg, split, seed)
    elif dcfg.source in ("scannet", "video3dllm"):
        from ide3d.scannet import load_scannet

        scenes = load_scannet(dcfg, split)
    else:
        raise ValueError(f"data.source: {dcfg.source!r}; expected 'synthetic', 'scannet' or 'video3dllm'")
    if not scenes:
        raise ValueError(f"data ({dcfg.source}, split {split!r}): no scenes")
    if processor is not None:
        for s in scenes:
            prepare(s, processor)
    return scenes


# -------------------------------------------------------------------------------------------------
# Items and batches
# -------------------------------------------------------------------------------------------------


def items(scenes: list[Scene], kind: str | None = None, trainable: bool = False) -> list[tuple[int, int]]:
    """(scene index, query index) of every query (of `kind`; with a training label when
    `trainable`), in a fixed order."""
    return [
        (i, j)
        for i, s in enumerate(scenes)
        for j, q in enumerate(s.queries)
        if (kind is None or q.kind == kind) and not (trainable and q.kind == "ground" and q.targets is None)
    ]


def collate(scenes: list[Scene], chosen: list[tuple[int, int]], processor, with_answers: bool = True) -> dict:
    """Model inputs for (scene, query) pairs. Each distinct scene of the batch is stored once (U of
    them, in order of first appearance) and `video_index` [B] maps a sample to its scene: the video
    encoder and the training-only losses run once per scene, however many of its queries the batch
    holds (the visual tokens come before the text, so their states do not depend on the query)."""
    order = list(dict.fromkeys(i for i, _ in chosen))  # distinct scenes, first appearance first
    us = [scenes[i] for i in order]
    qs = [scenes[i].queries[j] for i, j in chosen]
    for s in us:
        if s.inputs is None:
            raise ValueError(f"scene {s.scene_id}: not prepared (call ide3d.data.prepare first)")
        if s.frames.shape[0] != us[0].frames.shape[0]:
            raise ValueError(
                f"scenes {us[0].scene_id} and {s.scene_id}: {us[0].frames.shape[0]} and "
                f"{s.frames.shape[0]} frames; a batch needs one frame count (data.frames)"
            )
    batch = processor.text(
        [q.prompt for q in qs], [q.reply for q in qs] if with_answers else None, us[0].frames.shape[0]
    )
    batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp_min(0)  # [B, L] left padding
    batch["video_index"] = torch.tensor([order.index(i) for i, _ in chosen])  # [B] -> scene of the batch
    batch["scene_ids"] = order  # [U] indices into `scenes`
    batch["pixel_values_videos"] = torch.stack([s.inputs.pixel_values for s in us])  # [U, F, 3, S, S]
    batch["token_xyz"] = torch.stack([s.inputs.token_xyz for s in us])  # [U, F, p, p, 3]
    batch["token_has_points"] = torch.stack([s.inputs.token_has_points for s in us])  # [U, F, p, p]
    batch["depth"] = torch.stack([s.inputs.depth for s in us])  # [U, F, S, S]
    batch["K"] = torch.stack([s.inputs.K for s in us])  # [U, F, 3, 3]
    batch["w2c"] = torch.stack([s.w2c for s in us])  # [U, F, 4, 4]
    batch["membership"] = [s.inputs.membership for s in us]  # U x [N_u, F, g, g]
    batch["boxes"] = [s.boxes for s in us]  # U x [N_u, 6]
    batch["targets"] = [q.targets for q in qs]  # B
    return batch
