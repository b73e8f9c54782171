"""The project's on-disk scene format (documented in common/datasets/README.md).

    <root>/<split>/index.json            {"format", "format_version", "generator", "scenes": [...]}
    <root>/<split>/<scene_id>/scene.json cameras, file names, annotations
    <root>/<split>/<scene_id>/rgb/00000.png, depth/00000.png, normals/00000.png,
                              instances/00000.png, masks/<name>/00000.png, mesh.ply
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from common.datasets import io
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

FORMAT = "common-scene"
FORMAT_VERSION = 1


def write_scene(scene_dir, sample: Sample, depth_scale: float = 1000.0, mesh=None) -> Path:
    """Write `sample` (and an optional trimesh `mesh`) as one scene folder, atomically.

    The folder is first written under a temporary name and renamed at the end, so a crash never
    leaves a half-written scene that readers would take for a whole one. `depth_scale` is the
    16-bit depth PNG unit per metre (1000: millimetres up to 65.5 m; 256 as KITTI, up to 256 m).
    """
    scene_dir = Path(scene_dir)
    tmp = scene_dir.with_name(scene_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    V, _, H, W = sample.images.shape
    names = sample.view_names or [f"{i:05d}" for i in range(V)]
    views = []
    for i, name in enumerate(names):
        view: dict[str, Any] = {
            "name": name,
            "width": W,
            "height": H,
            "K": sample.K[i].tolist(),
            "w2c": sample.w2c[i].tolist(),
            "rgb": f"rgb/{name}.png",
        }
        io.write_rgb(tmp / view["rgb"], sample.images[i])
        if sample.depth is not None:
            depth = sample.depth[i] if sample.valid is None else sample.depth[i] * sample.valid[i]
            view["depth"] = f"depth/{name}.png"
            io.write_depth_png(tmp / view["depth"], depth, depth_scale)
        if sample.normals is not None:
            view["normals"] = f"normals/{name}.png"
            io.write_normals_png(tmp / view["normals"], sample.normals[i])
        if sample.instances is not None:
            view["instances"] = f"instances/{name}.png"
            io.write_ids_png(tmp / view["instances"], sample.instances[i])
        if sample.masks:
            view["masks"] = {k: f"masks/{k}/{name}.png" for k in sample.masks}
            for k, m in sample.masks.items():
                io.write_mask(tmp / view["masks"][k], m[i])
        if sample.times is not None:
            view["time"] = float(sample.times[i])
        views.append(view)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "scene_id": sample.scene_id or scene_dir.name,
        "depth_scale": depth_scale,
        "views": views,
        "annotations": sample.annotations,
    }
    if mesh is not None:
        mesh.export(tmp / "mesh.ply")
        meta["mesh"] = "mesh.ply"
    io.write_json(tmp / "scene.json", meta)
    shutil.rmtree(scene_dir, ignore_errors=True)
    os.replace(tmp, scene_dir)
    return scene_dir


def read_scene(
    scene_dir,
    views: Sequence[int] | None = None,
    load: Sequence[str] = ("depth", "normals", "instances", "masks"),
) -> Sample:
    """Read a scene folder as a `Sample`; `views` picks view indices, `load` the optional layers."""
    scene_dir = Path(scene_dir)
    meta = io.read_json(scene_dir / "scene.json")
    where = scene_dir / "scene.json"
    if meta.get("format") != FORMAT:
        raise DatasetError(where, f"field 'format': expected {FORMAT!r}, got {meta.get('format')!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            where, f"field 'format_version': expected {FORMAT_VERSION}, got {meta.get('format_version')!r}"
        )
    all_views = _field(meta, "views", list, where)
    if not all_views:
        raise DatasetError(where, "field 'views': expected at least one view")
    picked = range(len(all_views)) if views is None else views
    scale = io.check_depth_scale(where, meta.get("depth_scale", 1000.0), "field 'depth_scale'")
    images, Ks, w2cs, depths, normals, instances, times, names = [], [], [], [], [], [], [], []
    masks: dict[str, list] = {}
    for i in picked:
        if not 0 <= i < len(all_views):
            raise DatasetError(where, f"view index {i} out of range (the scene has {len(all_views)} views)")
        v = all_views[i]
        field_at = f"{where} views[{i}]"
        size = (_field(v, "height", int, field_at), _field(v, "width", int, field_at))
        Ks.append(_matrix(v, "K", (3, 3), field_at))
        w2cs.append(_matrix(v, "w2c", (4, 4), field_at))
        images.append(io.read_rgb(scene_dir / _field(v, "rgb", str, field_at), size))
        names.append(str(v.get("name", f"{i:05d}")))
        if "depth" in load and "depth" in v:
            depths.append(io.read_depth_png(scene_dir / v["depth"], scale, size))
        if "normals" in load and "normals" in v:
            normals.append(io.read_normals_png(scene_dir / v["normals"], size))
        if "instances" in load and "instances" in v:
            instances.append(io.read_ids_png(scene_dir / v["instances"], size))
        if "masks" in load:
            for k, path in v.get("masks", {}).items():
                masks.setdefault(k, []).append(io.read_mask(scene_dir / path, size))
        if "time" in v:
            times.append(float(v["time"]))
    n = len(images)
    if len({tuple(im.shape) for im in images}) > 1:
        raise DatasetError(where, "views have different image sizes; read them as separate samples")
    for name, layer in (("depth", depths), ("normals", normals), ("instances", instances), ("time", times)):
        if layer and len(layer) != n:
            raise DatasetError(where, f"'{name}' is given for some views but not all")
    depth = valid = None
    if depths:
        depth, valid = valid_from_depth(torch.stack(depths))  # [V, H, W]
    return Sample(
        images=torch.stack(images),
        K=torch.stack(Ks),
        w2c=torch.stack(w2cs),
        depth=depth,
        valid=valid,
        normals=torch.stack(normals) if normals else None,
        instances=torch.stack(instances) if instances else None,
        masks={k: torch.stack(m) for k, m in masks.items() if len(m) == n},
        times=torch.tensor(times) if times else None,
        scene_id=str(meta.get("scene_id", scene_dir.name)),
        view_names=names,
        annotations=meta.get("annotations", {}),
    )


def scene_mesh_path(scene_dir) -> Path | None:
    """The scene's watertight ground-truth mesh (PLY), or None where the scene has none."""
    meta = io.read_json(Path(scene_dir) / "scene.json")
    return Path(scene_dir) / meta["mesh"] if meta.get("mesh") else None


def write_index(split_dir, scene_ids: Sequence[str], generator: dict | None = None) -> None:
    io.write_json(
        Path(split_dir) / "index.json",
        {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": generator or {}, "scenes": list(scene_ids)},
    )


def read_index(split_dir) -> dict:
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DatasetError(split_dir, "split folder not found (generate it with `make data`)")
    index = io.read_json(split_dir / "index.json")
    scenes = _field(index, "scenes", list, split_dir / "index.json")
    for s in scenes:
        if not (split_dir / s / "scene.json").is_file():
            raise DatasetError(split_dir / s, "scene listed in index.json has no scene.json")
    return index


class SceneDataset(torch.utils.data.Dataset):
    """The scenes of one split of the on-disk format, as `Sample`s (all views unless `views`)."""

    def __init__(self, root, split: str = "train", views: Sequence[int] | None = None, load=("depth", "normals", "instances", "masks")):
        self.split_dir = Path(root) / split
        self.index = read_index(self.split_dir)
        self.scene_ids: list[str] = list(self.index["scenes"])
        self.views = views
        self.load = load

    def __len__(self) -> int:
        return len(self.scene_ids)

    def __getitem__(self, i: int) -> Sample:
        return read_scene(self.split_dir / self.scene_ids[i], self.views, self.load)


def _field(meta: dict, key: str, kind, where):
    if not isinstance(meta, dict) or key not in meta:
        raise DatasetError(where, f"missing field {key!r}")
    value = meta[key]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(where, f"field {key!r}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _matrix(meta: dict, key: str, shape: tuple[int, int], where) -> torch.Tensor:
    value = _field(meta, key, list, where)
    try:
        m = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        m = None
    if m is None or tuple(m.shape) != shape or not all(math.isfinite(x) for x in m.flatten().tolist()):
        raise DatasetError(where, f"field {key!r}: expected a finite {shape[0]}x{shape[1]} matrix")
    return m
