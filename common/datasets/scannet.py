"""ScanNet frames exported by the official SensReader, and the language annotations on ScanNet.

Frames (`python reader.py --export_color_images --export_depth_images --export_poses
--export_intrinsics`):

    <scene_id>/color/<i>.jpg                     1296x968 colour, i = 0, 1, 2, ... (frame number)
    <scene_id>/depth/<i>.png                     640x480 16-bit depth in millimetres, 0 = invalid
    <scene_id>/pose/<i>.txt                      4x4 camera-to-world, OpenCV axes, metres
    <scene_id>/intrinsic/intrinsic_color.txt     4x4, K of the colour images in its top-left 3x3
    <scene_id>/intrinsic/intrinsic_depth.txt     4x4, K of the depth images

Conversions to the `Sample` conventions:
- depth: PNG value / 1000 -> metres; 0 stays 0 and invalid;
- poses: ScanNet poses are camera-to-world with OpenCV axes (x right, y down, z forward), so
  `w2c = invert_pose(c2w)`. Frames whose pose holds -inf or nan (tracking lost) are skipped with
  a `warnings.warn` and named in `annotations["skipped_frames"]`;
- colour is resized to the depth resolution (bilinear, antialiased where the resize helper
  does so) so that each view has one size; K is the colour K adjusted to the new size by
  `resize_intrinsics` (`intrinsics="color"`, default) or ScanNet's own depth K
  (`intrinsics="depth"`). The two agree to within about 1% in fy (the colour aspect ratio
  1296/968 is not exactly 640/480); both are kept in `annotations["K_color"]` (at 1296x968) and
  `annotations["K_depth"]`;
- intrinsics are used as ScanNet stores them; ScanNet does not document its pixel-centre
  convention (cx = 648 for a 1296-pixel-wide image suggests the centre convention we use).
Depth and colour come from two sensors and are registered only approximately (ScanNet's known
sub-pixel-to-few-pixel misalignment, worst at depth edges).

Frame selection: `frames` (frame numbers as in the file names) and/or `stride` (every n-th of
the listed or selected frames).

Language annotations, each read into `{scene_id: [record, ...]}` in file order, with the keys
below validated (a missing key is a DatasetError naming the file, the record index and the key)
and ids converted to int; other keys are kept as they are:
- ScanRefer (`ScanRefer_filtered_*.json`): list of {scene_id, object_id, object_name, ann_id,
  description, ...}. `object_id` is the ScanNet aggregation objectId (0-based; instance label
  images use objectId + 1);
- Multi3DRefer (`multi3drefer_*.json`): list of {scene_id, object_ids: [...], ann_id,
  description, eval_type, ...}; `object_ids` may be empty (zero-target expressions);
- ScanQA (`ScanQA_v1.0_*.json`): list of {scene_id, question_id, question, answers: [...],
  object_ids, object_names}; the test files have no answers (pass `answers_required=False`);
- SQA3D: a questions file {"questions": [{scene_id, question_id, situation, question, ...}]}
  and an annotations file {"annotations": [{question_id, answers: [{answer: ...}], ...}]}, joined
  by question_id; the merged record has `answers` as a list of strings and keeps the
  annotation's other keys (position, rotation, question_type, ...) under their own names.
`attach_annotations(sample, scanrefer=..., ...)` stores a scene's records in
`sample.annotations["scanrefer" | "multi3drefer" | "scanqa" | "sqa3d"]`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from common.cameras import invert_pose, resize
from common.datasets import io
from common.datasets.io import read_matrix_txt
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

DEPTH_SCALE = 1000.0  # ScanNet depth PNGs hold millimetres


def scannet_color_frames(scene_dir) -> dict[int, Path]:
    """{frame number: colour file} of a scene, from `color/<i>.jpg` (any image suffix), ascending."""
    scene_dir = Path(scene_dir)
    frames = {}
    for p in io.list_images(scene_dir / "color"):
        if not p.stem.isdigit():
            raise DatasetError(p, "expected a colour frame named <frame number>.jpg")
        frames[int(p.stem)] = p
    if not frames:
        raise DatasetError(scene_dir / "color", "no colour frames")
    return dict(sorted(frames.items()))


def _select(ids: list[int], frames: Sequence[int] | None, stride: int, where) -> list[int]:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if frames is not None:
        missing = sorted(set(frames) - set(ids))
        if missing:
            raise DatasetError(
                where, f"frames {missing[:10]} not found (the scene has frames {ids[0]}..{ids[-1]})"
            )
        ids = list(frames)
    return ids[::stride]


def _read_pose(path) -> np.ndarray | None:
    """The 4x4 camera-to-world pose, or None where ScanNet marks it invalid (-inf / nan)."""
    c2w = read_matrix_txt(path, (4, 4), allow_nonfinite=True)
    return c2w if np.isfinite(c2w).all() else None


def _read_K(path) -> torch.Tensor:
    return torch.from_numpy(read_matrix_txt(path, (4, 4))[:3, :3]).float()


def read_scannet_scene(
    scene_dir,
    frames: Sequence[int] | None = None,
    stride: int = 1,
    intrinsics: str = "color",
) -> Sample:
    """Read the selected frames of an exported ScanNet scene as one `Sample` (module docstring).

    All frames by default; a whole scan is thousands of frames, so pass `frames` or `stride`.
    """
    if intrinsics not in ("color", "depth"):
        raise ValueError(f"intrinsics must be 'color' or 'depth', got {intrinsics!r}")
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise DatasetError(scene_dir, "scene folder not found")
    color = scannet_color_frames(scene_dir)
    ids = _select(list(color), frames, stride, scene_dir / "color")
    K_color = _read_K(scene_dir / "intrinsic" / "intrinsic_color.txt")
    K_depth = _read_K(scene_dir / "intrinsic" / "intrinsic_depth.txt")

    kept, skipped, c2ws = [], [], []
    for i in ids:
        c2w = _read_pose(scene_dir / "pose" / f"{i}.txt")
        if c2w is None:
            skipped.append(str(i))
        else:
            kept.append(i)
            c2ws.append(c2w)
    if skipped:
        warnings.warn(f"{scene_dir}: skipped {len(skipped)} frames with non-finite poses: {skipped[:10]}")
    if not kept:
        raise DatasetError(scene_dir / "pose", f"none of the {len(ids)} selected frames has a finite pose")

    images, depths, Ks = [], [], []
    depth_size = color_size = None
    for i in kept:
        depth = io.read_depth_png(scene_dir / "depth" / f"{i}.png", DEPTH_SCALE, depth_size)  # [H, W]
        depth_size = tuple(depth.shape)
        image = io.read_rgb(color[i], color_size)  # [3, Hc, Wc]
        color_size = tuple(image.shape[-2:])
        image, K = resize(image, K_color, depth_size, mode="bilinear")  # [3, H, W]
        images.append(image)
        depths.append(depth)
        Ks.append(K if intrinsics == "color" else K_depth)
    depth, valid = valid_from_depth(torch.stack(depths))  # [V, H, W]
    c2w = torch.from_numpy(np.stack(c2ws))  # [V, 4, 4] float64: invert before rounding
    return Sample(
        images=torch.stack(images),  # [V, 3, H, W]
        K=torch.stack(Ks).float(),  # [V, 3, 3]
        w2c=invert_pose(c2w).float(),  # [V, 4, 4]
        depth=depth,
        valid=valid,
        scene_id=scene_dir.name,
        view_names=[str(i) for i in kept],
        annotations={
            "K_color": K_color.tolist(),
            "K_depth": K_depth.tolist(),
            "intrinsics": intrinsics,
            "skipped_frames": skipped,
        },
    )


def read_scannet_axis_alignment(scene_dir) -> np.ndarray:
    """The 4x4 `axisAlignment` of `<scene_dir>/<scene_id>.txt` (ScanNet's scene meta file), which
    maps the scan's world frame to the axis-aligned frame that ScanRefer boxes and Video-3D LLM's
    box files use: p_aligned = A @ p_world, so an aligned camera is `w2c @ inv(A)`.

    Test scans have no alignment line: the identity is returned with a warning. A missing meta
    file or a line without 16 numbers is a DatasetError.
    """
    scene_dir = Path(scene_dir)
    path = scene_dir / f"{scene_dir.name}.txt"
    if not path.is_file():
        raise DatasetError(path, "scene meta file not found (expected <scene_id>.txt with axisAlignment)")
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "axisAlignment":
            try:
                numbers = [float(x) for x in value.split()]
            except ValueError:
                numbers = []
            if len(numbers) != 16 or not np.all(np.isfinite(numbers)):
                raise DatasetError(path, f"axisAlignment: expected 16 finite numbers, got {value.strip()[:80]!r}")
            return np.array(numbers, dtype=np.float64).reshape(4, 4)
    warnings.warn(f"{path}: no axisAlignment line (a test scan?); using the identity")
    return np.eye(4)


class ScanNetDataset(torch.utils.data.Dataset):
    """Windows of `num_views` consecutive valid frames (after `stride`) from ScanNet scenes.

    `root` holds one exported folder per scene; `scenes` picks scene ids (default: every folder
    with a `color/` subfolder). The constructor reads the selected pose files (small text files)
    so that every window holds frames with finite poses only; windows do not overlap and a scene's
    last incomplete window is dropped. `annotations` maps a key ("scanrefer", ...) to records
    grouped by scene (from the `read_*` functions below), attached to each item.
    """

    def __init__(
        self,
        root,
        scenes: Sequence[str] | None = None,
        stride: int = 1,
        num_views: int = 1,
        intrinsics: str = "color",
        annotations: Mapping[str, Mapping[str, list]] | None = None,
    ):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(root, "ScanNet root folder not found")
        if scenes is None:
            scenes = sorted(p.name for p in root.iterdir() if (p / "color").is_dir())
            if not scenes:
                raise DatasetError(root, "no scene folders with a color/ subfolder")
        self.root, self.intrinsics = root, intrinsics
        self.annotations = dict(annotations or {})
        self.windows: list[tuple[str, list[int]]] = []
        self.skipped_frames: dict[str, list[int]] = {}  # scene -> frames with non-finite poses
        for scene in scenes:
            ids = _select(list(scannet_color_frames(root / scene)), None, stride, root / scene)
            valid = [i for i in ids if _read_pose(root / scene / "pose" / f"{i}.txt") is not None]
            if len(valid) < len(ids):
                self.skipped_frames[scene] = sorted(set(ids) - set(valid))
            for start in range(0, len(valid) - num_views + 1, num_views):
                self.windows.append((scene, valid[start : start + num_views]))
        if self.skipped_frames:
            n, m = sum(map(len, self.skipped_frames.values())), len(self.skipped_frames)
            warnings.warn(f"{root}: skipped {n} frames with non-finite poses in {m} scenes (see .skipped_frames)")
        if not self.windows:
            raise DatasetError(
                root, f"no window of {num_views} frames with finite poses in scenes {list(scenes)[:5]}"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Sample:
        scene, ids = self.windows[i]
        sample = read_scannet_scene(self.root / scene, frames=ids, intrinsics=self.intrinsics)
        return attach_annotations(sample, **self.annotations)


def attach_annotations(sample: Sample, **grouped: Mapping[str, list]) -> Sample:
    """Store `grouped[key][sample.scene_id]` (or []) in `sample.annotations[key]`; returns `sample`."""
    for key, by_scene in grouped.items():
        sample.annotations[key] = list(by_scene.get(sample.scene_id, []))
    return sample


# ---- language annotations ------------------------------------------------------------------------


def _records(path, container: str | None = None) -> list:
    data = io.read_json(path)
    if container is not None:
        if not isinstance(data, dict) or container not in data:
            raise DatasetError(path, f"expected a JSON object with a {container!r} list")
        data = data[container]
    if not isinstance(data, list):
        raise DatasetError(path, f"expected a JSON list of records, got {type(data).__name__}")
    return data


def _check(path, index: int, record, keys: Sequence[str]) -> dict:
    if not isinstance(record, dict):
        raise DatasetError(path, f"record {index}: expected a JSON object, got {type(record).__name__}")
    for key in keys:
        if key not in record:
            raise DatasetError(path, f"record {index}: missing key {key!r}")
    return dict(record)


def _as_int(path, index: int, key: str, value) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = None
    if out is None or (isinstance(value, float) and not value.is_integer()) or isinstance(value, bool):
        raise DatasetError(path, f"record {index}: key {key!r}: expected an integer id, got {value!r}")
    return out


def _int_list(path, index: int, key: str, value) -> list[int]:
    if not isinstance(value, list):
        raise DatasetError(path, f"record {index}: key {key!r}: expected a list of ids, got {value!r}")
    return [_as_int(path, index, key, v) for v in value]


def _group(records: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for r in records:
        grouped.setdefault(str(r["scene_id"]), []).append(r)
    return grouped


def read_scanrefer(path) -> dict[str, list[dict]]:
    """ScanRefer records grouped by scene_id; object_id and ann_id as int."""
    out = []
    for n, raw in enumerate(_records(path)):
        r = _check(path, n, raw, ("scene_id", "object_id", "object_name", "ann_id", "description"))
        r["object_id"] = _as_int(path, n, "object_id", r["object_id"])
        r["ann_id"] = _as_int(path, n, "ann_id", r["ann_id"])
        out.append(r)
    return _group(out)


def read_multi3drefer(path) -> dict[str, list[dict]]:
    """Multi3DRefer records grouped by scene_id; object_ids as a list of int, ann_id as int."""
    out = []
    for n, raw in enumerate(_records(path)):
        r = _check(path, n, raw, ("scene_id", "object_ids", "ann_id", "description", "eval_type"))
        r["object_ids"] = _int_list(path, n, "object_ids", r["object_ids"])
        r["ann_id"] = _as_int(path, n, "ann_id", r["ann_id"])
        out.append(r)
    return _group(out)


def read_scanqa(path, answers_required: bool = True) -> dict[str, list[dict]]:
    """ScanQA records grouped by scene_id; object_ids (where present) as a list of int."""
    keys = ("scene_id", "question_id", "question") + (("answers",) if answers_required else ())
    out = []
    for n, raw in enumerate(_records(path)):
        r = _check(path, n, raw, keys)
        if "answers" in r and not isinstance(r["answers"], list):
            raise DatasetError(path, f"record {n}: key 'answers': expected a list, got {r['answers']!r}")
        if "object_ids" in r:
            r["object_ids"] = _int_list(path, n, "object_ids", r["object_ids"])
        out.append(r)
    return _group(out)


def read_sqa3d(questions_path, annotations_path=None) -> dict[str, list[dict]]:
    """SQA3D questions joined with their answers by question_id, grouped by scene_id.

    Without `annotations_path` the records have no `answers`. With it, every question must have
    an annotation (a DatasetError names the annotations file and the question_id otherwise).
    """
    questions = []
    for n, raw in enumerate(_records(questions_path, "questions")):
        questions.append(_check(questions_path, n, raw, ("scene_id", "question_id", "situation", "question")))
    if annotations_path is not None:
        answers: dict = {}
        for n, raw in enumerate(_records(annotations_path, "annotations")):
            a = _check(annotations_path, n, raw, ("question_id", "answers"))
            if not isinstance(a["answers"], list):
                raise DatasetError(annotations_path, f"record {n}: key 'answers': expected a list")
            texts = []
            for m, ans in enumerate(a["answers"]):
                if not isinstance(ans, dict) or "answer" not in ans:
                    raise DatasetError(annotations_path, f"record {n}: answers[{m}]: missing key 'answer'")
                texts.append(ans["answer"])
            a["answers"] = texts
            answers[a["question_id"]] = a
        for q in questions:
            if q["question_id"] not in answers:
                raise DatasetError(annotations_path, f"no annotation for question_id {q['question_id']!r}")
            extra = {k: v for k, v in answers[q["question_id"]].items() if k not in q}
            q.update(extra)
    return _group(questions)
