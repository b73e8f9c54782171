"""Whole scenes (views, mesh, annotations) and splits written in the project's scene format."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import trimesh
from tqdm import tqdm

from common.datasets.sample import Sample
from common.datasets.scene_format import write_index, write_scene
from common.synthetic.language import ViewGeometry, make_questions, make_referring
from common.synthetic.mesh import scene_mesh
from common.synthetic.paths import sample_intrinsics, sample_path
from common.synthetic.render import render_views
from common.synthetic.scene import Scene, sample_scene

GENERATOR_NAME = "common.synthetic"
GENERATOR_VERSION = "1"
DEPTH_RANGE = {"indoor": (0.3, 10.0), "outdoor": (1.0, 80.0)}  # metres, guaranteed for every valid pixel
# 16-bit depth PNG units per metre: 1 mm steps up to 65.5 m indoors; 1.25 mm steps up to 81.9 m
# outdoors (depth never exceeds 80 m there).
DEPTH_SCALE = {"indoor": 1000.0, "outdoor": 800.0}


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def generate_scene(seed: int, domain: str = "indoor", num_views: int = 8, size: int | tuple = 128,
                   max_attempts: int = 30) -> tuple[Sample, trimesh.Trimesh]:
    """One scene: `num_views` rendered views of size (H, W) = size, and its ground-truth mesh.

    Deterministic per (GENERATOR_VERSION, seed, domain, num_views, size). Camera paths are redrawn
    until every view has its depth inside DEPTH_RANGE[domain] and at least one object in sight.
    """
    H, W = _size(size)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, domain, seed)
    K, intrinsics_info = sample_intrinsics(rng, H, W)
    # Render with the float32 cameras that the sample stores, so its ground truth is exact for them.
    K = K.float().double()
    lo, hi = DEPTH_RANGE[domain]
    for _ in range(max_attempts):
        _, w2c, path = sample_path(rng, scene, num_views)
        w2c = w2c.float().double()  # [V, 4, 4]
        Ks = K.expand(num_views, 3, 3).clone()  # [V, 3, 3]
        out = render_views(scene, Ks, w2c, H, W)
        depth, valid = out["depth"], out["valid"]
        in_range = bool(((depth[valid] >= lo) & (depth[valid] <= hi)).all())
        sees_objects = bool((out["instances"] > 0).flatten(1).any(1).all())  # in every view
        if in_range and sees_objects and (domain == "outdoor" or bool(valid.all())):
            break
    else:
        raise RuntimeError(f"scene seed {seed} ({domain}): no camera path in {max_attempts} tries kept the "
                           f"depth in {DEPTH_RANGE[domain]} m with an object in every view")
    annotations = scene_annotations(rng, scene, Ks.numpy(), w2c.numpy(), out, path, intrinsics_info)
    sample = Sample(
        images=out["images"],
        K=Ks.float().clone(),
        w2c=w2c.float(),
        depth=out["depth"],
        valid=out["valid"],
        normals=out["normals"],
        instances=out["instances"],
        scene_id=f"{domain}_{seed}",
        annotations=annotations,
    )
    return sample, scene_mesh(scene)


def scene_annotations(rng, scene: Scene, K: np.ndarray, w2c: np.ndarray, out: dict, path: dict,
                      intrinsics_info: dict) -> dict:
    """Objects, light, camera path, per-view visibility, questions and referring expressions."""
    instances = out["instances"].numpy()
    geo = ViewGeometry(scene.objects, K, w2c, instances)
    views = []
    for v in range(instances.shape[0]):
        seen = []
        for o in scene.objects:
            rows, cols = np.nonzero(instances[v] == o.id)
            if len(rows):
                box2d = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
                seen.append({"id": o.id, "pixels": int(len(rows)), "box2d": box2d})
        views.append({"index": v, "objects": seen})
    ann = scene.to_annotations()
    ann.update({
        "generator": {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": int(scene.seed)},
        "camera_path": {**path, **intrinsics_info},
        "depth_range": list(DEPTH_RANGE[scene.domain]),
        "visibility": {"min_pixels": geo.min_pixels, "views": views,
                       "note": "box2d = [x0, y0, x1, y1) of the visible pixels; an object is 'in view' "
                               "with at least min_pixels pixels"},
        "questions": make_questions(rng, scene.objects, geo, out["depth"].numpy(), instances),
        "referring": make_referring(rng, scene.objects, geo),
    })
    return ann


def scene_seed(seed: int, split: str, index: int) -> int:
    """The seed of scene `index` of `split`: SeedSequence of (seed, crc32(split), index)."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))  # < 2^63


def generate_split(out_dir, split: str, scenes: int, views: int, size: int | tuple = 128, seed: int = 0,
                   domains: Sequence[str] = ("indoor", "outdoor"), progress: bool = True) -> Path:
    """Write `scenes` scenes to out_dir/split/ plus index.json; scene i has domain
    domains[i % len(domains)] and seed `scene_seed(seed, split, i)`. Returns the split folder."""
    domains = tuple(domains)
    for d in domains:
        if d not in DEPTH_SCALE:
            raise ValueError(f"unknown domain {d!r}; expected some of {sorted(DEPTH_SCALE)}")
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "index.json").unlink(missing_ok=True)  # readers see the split only once it is whole
    ids = []
    for i in tqdm(range(scenes), desc=f"synthetic {split}", unit="scene", disable=not progress):
        domain = domains[i % len(domains)]
        sample, mesh = generate_scene(scene_seed(seed, split, i), domain, views, size)
        scene_id = f"{i:05d}_{domain}"
        sample.scene_id = scene_id
        sample.annotations["generator"]["split"] = split
        sample.annotations["generator"]["index"] = i
        write_scene(split_dir / scene_id, sample, depth_scale=DEPTH_SCALE[domain], mesh=mesh)
        ids.append(scene_id)
    write_index(split_dir, ids, {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": int(seed),
                                 "split": split, "views": int(views), "size": list(_size(size)),
                                 "domains": list(domains)})
    return split_dir
