"""ScanNet scenes for 3D-IDE in the public layouts: the same `Scene` / `Query` as the synthetic ones.

Frames: `common.datasets.read_scannet_scene` on a SensReader export (`data.scannet_root/<scene_id>`),
F frames uniformly over the exported colour frames, put in ScanNet's axis-aligned frame with the
scene meta file's `axisAlignment` (the frame that ScanRefer's and Video-3D LLM's boxes use).

Boxes: Video-3D LLM's box JSON, `{"scannet/<scene_id>": [[cx, cy, cz, dx, dy, dz], ...]}` (the key
without "scannet/" is accepted too). `data.boxes` gives the candidates: the ground-truth file
(`scannet_train_gt_box.json`, list index = ScanNet object id) for training, or a proposals file
(`scannet_val_pred_box.json`, Mask3D) for evaluation, scored against `data.gt_boxes`. On proposals
a query has no candidate label (`targets` None): it is evaluated, never trained on (as Video-3D LLM
trains on ground-truth boxes only).

Queries, from either
- `data.source: scannet`: ScanRefer / Multi3DRefer / ScanQA / SQA3D files (`common.datasets`
  readers), prompts as Video-3D LLM's records; ScanRefer's unique / multiple label from the record
  (`eval_type`) or, when absent, from the number of distinct annotated objects with the same
  `object_name` in the scene (Video-3D LLM counts nyu40 classes; we have no label map here); or
- `data.source: video3dllm`: Video-3D LLM's llava-style records (`*_llava_style.json`), the human
  turn used as the prompt as it stands.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from common.datasets import (
    read_multi3drefer,
    read_scannet_axis_alignment,
    read_scannet_scene,
    read_scanqa,
    read_scanrefer,
    read_sqa3d,
)
from common.datasets.io import read_json
from common.datasets.scannet import scannet_color_frames
from common.errors import DatasetError
from ide3d.data import Query, Scene, uniform_frames
from ide3d.processing import GROUND_TOKEN, ground_prompt, qa_prompt

SQA3D_SUFFIX = " Answer the question using a single word or phrase."


def read_box_json(path) -> dict[str, np.ndarray]:
    """Video-3D LLM's box file -> {scene_id: [N, 6]} (scene ids without the "scannet/" prefix)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, "expected a JSON object {scene: [[cx, cy, cz, dx, dy, dz], ...]}")
    out = {}
    for key, boxes in data.items():
        arr = np.asarray(boxes, dtype=np.float64) if isinstance(boxes, list) else None
        if arr is None or (arr.size and (arr.ndim != 2 or arr.shape[1] != 6)) or not np.all(np.isfinite(arr)):
            raise DatasetError(path, f"scene {key!r}: expected a list of [cx, cy, cz, dx, dy, dz] boxes")
        if arr.size and np.any(arr[:, 3:] < 0):
            raise DatasetError(path, f"scene {key!r}: negative box size")
        out[key.split("/")[-1]] = arr.reshape(-1, 6)
    return out


def _targets(path, where: str, ids: list[int], gt: np.ndarray) -> np.ndarray:
    bad = [i for i in ids if not 0 <= i < len(gt)]
    if bad:
        raise DatasetError(path, f"{where}: object id {bad[0]} has no box ({len(gt)} boxes for the scene)")
    return gt[ids].reshape(-1, 6)


def annotation_queries(dcfg, gt: dict, on_gt: bool) -> dict[str, list[Query]]:
    """Queries from the ScanRefer / Multi3DRefer / ScanQA / SQA3D files named in `data`."""
    out: dict[str, list[Query]] = defaultdict(list)
    if dcfg.scanrefer:
        grouped = read_scanrefer(dcfg.scanrefer)
        for scene_id, records in grouped.items():
            names = defaultdict(set)
            for r in records:
                names[r["object_name"]].add(r["object_id"])
            for n, r in enumerate(records):
                boxes = _targets(
                    dcfg.scanrefer,
                    f"scene {scene_id} record {n}",
                    [r["object_id"]],
                    gt.get(scene_id, np.zeros((0, 6))),
                )
                qtype = r.get("eval_type") or ("unique" if len(names[r["object_name"]]) == 1 else "multiple")
                out[scene_id].append(
                    Query(
                        "ground",
                        ground_prompt(r["description"], False),
                        r["description"],
                        "scanrefer",
                        qtype,
                        [r["object_id"]] if on_gt else None,
                        boxes,
                        qid=f"{scene_id}-{r['object_id']}-{r['ann_id']}",
                    )
                )
    if dcfg.multi3drefer:
        for scene_id, records in read_multi3drefer(dcfg.multi3drefer).items():
            for n, r in enumerate(records):
                boxes = _targets(
                    dcfg.multi3drefer,
                    f"scene {scene_id} record {n}",
                    r["object_ids"],
                    gt.get(scene_id, np.zeros((0, 6))),
                )
                out[scene_id].append(
                    Query(
                        "ground",
                        ground_prompt(r["description"], True),
                        r["description"],
                        "multi3drefer",
                        r["eval_type"],
                        list(r["object_ids"]) if on_gt else None,
                        boxes,
                        qid=f"{scene_id}-{r['ann_id']}",
                    )
                )
    if dcfg.scanqa:
        for scene_id, records in read_scanqa(dcfg.scanqa).items():
            for r in records:
                out[scene_id].append(
                    Query(
                        "qa",
                        qa_prompt(r["question"]),
                        r["question"],
                        "scanqa",
                        "scanqa",
                        answers=[str(a) for a in r["answers"]],
                        qid=str(r["question_id"]),
                    )
                )
    if dcfg.sqa3d_questions:
        grouped = read_sqa3d(dcfg.sqa3d_questions, dcfg.sqa3d_annotations or None)
        for scene_id, records in grouped.items():
            for r in records:
                if "answers" not in r:
                    raise DatasetError(dcfg.sqa3d_questions, "SQA3D questions without data.sqa3d_annotations")
                first = r["question"].split()[0].lower() if r["question"].split() else ""
                text = f"{r['situation']} {r['question']}"
                out[scene_id].append(
                    Query(
                        "qa",
                        text + SQA3D_SUFFIX,
                        text,
                        "sqa3d",
                        first if first in ("what", "is", "how", "can", "which") else "others",
                        answers=[str(a) for a in r["answers"]],
                        qid=str(r["question_id"]),
                    )
                )
    return out


def record_queries(path, gt: dict, on_gt: bool) -> dict[str, list[Query]]:
    """Queries from Video-3D LLM's llava-style records: {id, video: "scannet/<scene>",
    conversations: [human, gpt], box, metadata: {dataset, question_type, object_id[, answers]}}."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetError(path, "expected a JSON list of llava-style records")
    out: dict[str, list[Query]] = defaultdict(list)
    for n, r in enumerate(data):
        try:
            scene_id = r["video"].split("/")[-1]
            human, gpt = r["conversations"][0]["value"], r["conversations"][1]["value"]
            meta = r["metadata"]
            dataset = str(meta["dataset"]).lower()
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise DatasetError(
                path,
                f"record {n}: missing or malformed field ({exc!r}); expected video, "
                "conversations [human, gpt] and metadata.dataset",
            ) from None
        prompt = human.replace("<image>", "").strip()
        if gpt.strip() == GROUND_TOKEN:
            ids = meta.get("object_id", [])
            ids = [int(i) for i in (ids if isinstance(ids, list) else [ids])]
            boxes = np.asarray(r.get("box", []), dtype=np.float64).reshape(-1, 6)
            if len(boxes) != len(ids):
                raise DatasetError(path, f"record {n}: {len(ids)} object ids but {len(boxes)} boxes")
            if on_gt:
                _targets(path, f"record {n}", ids, gt.get(scene_id, np.zeros((0, 6))))
            out[scene_id].append(
                Query(
                    "ground",
                    prompt,
                    prompt.split("\n")[-1],
                    dataset,
                    str(meta.get("question_type", "")),
                    ids if on_gt else None,
                    boxes,
                    qid=str(r.get("id", n)),
                )
            )
        else:
            answers = meta.get("answers") or [gpt]
            out[scene_id].append(
                Query(
                    "qa",
                    prompt,
                    prompt,
                    dataset,
                    str(meta.get("question_type", "")),
                    answers=[str(a) for a in answers],
                    qid=str(r.get("id", n)),
                )
            )
    return out


def load_scannet(dcfg, split: str) -> list[Scene]:
    """The scenes that have queries, with their frames, boxes and queries (module docstring)."""
    for key in ("scannet_root", "boxes"):
        if not getattr(dcfg, key):
            raise ValueError(f"data.{key}: needed for data.source {dcfg.source!r}")
    root = Path(dcfg.scannet_root)
    candidates = read_box_json(dcfg.boxes)
    on_gt = not dcfg.gt_boxes or Path(dcfg.gt_boxes).resolve() == Path(dcfg.boxes).resolve()
    gt = candidates if on_gt else read_box_json(dcfg.gt_boxes)
    if dcfg.source == "video3dllm":
        if not dcfg.records:
            raise ValueError("data.records: needed for data.source 'video3dllm'")
        queries = record_queries(dcfg.records, gt, on_gt)
    else:
        queries = annotation_queries(dcfg, gt, on_gt)
    ids = sorted(queries)
    if dcfg.max_scenes > 0:
        ids = ids[: dcfg.max_scenes]
    scenes = []
    for scene_id in ids:
        if scene_id not in candidates:
            raise DatasetError(dcfg.boxes, f"no boxes for scene {scene_id}, which has queries")
        scene_dir = root / scene_id
        if not scene_dir.is_dir():
            raise DatasetError(scene_dir, "scene folder not found (expected a SensReader export)")
        frame_numbers = list(scannet_color_frames(scene_dir))
        chosen = [frame_numbers[i] for i in uniform_frames(len(frame_numbers), dcfg.frames)]
        sample = read_scannet_scene(scene_dir, frames=chosen)
        align = torch.from_numpy(np.linalg.inv(read_scannet_axis_alignment(scene_dir))).float()
        scenes.append(
            Scene(
                scene_id=scene_id,
                frame_ids=[int(v) for v in sample.view_names],
                frames=sample.images,
                depth=sample.depth,
                K=sample.K,
                w2c=sample.w2c @ align,
                boxes=torch.from_numpy(candidates[scene_id]).float(),
                queries=queries[scene_id],
            )
        )
    return scenes
