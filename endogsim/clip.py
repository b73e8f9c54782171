"""A written synthetic clip read back as what the pipeline consumes, and as its ground truth.

The video side (what a user of a real endoscopic clip would have): `clip_observations` (the
frames, tool masks and their timestamps) and `known_forces` (the tool's force, which the clip
records: the force on the tissue under the tool face, its direction, magnitude and when it acts).
The ground-truth side, for scoring and for the upper bound: `setup_from_clip` rebuilds the
generator's inputs from `ground_truth.json`, and `ground_truth_scene` turns them into a
`PhysicsScene` whose particles and Gaussians are the generator's own (an oracle reconstruction:
only the materials are unknown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.datasets import read_endonerf
from common.datasets.io import read_json

from .physics import Material
from .refine import Observations
from .scene import PhysicsScene, SceneError, SceneObject
from .synthetic_scene import DEPTH_SCALE, OPACITY, TISSUE_SIGMA, SceneSetup, build_setup

__all__ = ["setup_from_clip", "clip_observations", "known_forces", "ground_truth_scene", "truth_materials"]


def _record(clip_dir) -> tuple[Path, dict]:
    path = Path(clip_dir) / "ground_truth.json"
    if not path.is_file():
        raise SceneError(f"{path}: not found (expected a clip written by endogsim.synthetic_scene.make_surgical_scene)")
    return path, read_json(path)


def setup_from_clip(clip_dir) -> tuple[SceneSetup, dict]:
    """(the generator's `SceneSetup` rebuilt from the clip's ground_truth.json, that record)."""
    path, gt = _record(clip_dir)
    try:
        sim, cam, objs, inter = gt["simulation"], gt["camera"], gt["objects"], gt["interaction"]
        times = np.asarray(gt["frame_times"], np.float64)
        setup = build_setup(int(gt["seed"]), len(times), (int(cam["height"]), int(cam["width"])),
                            E=[o["E"] for o in objs], nu=objs[0]["nu"], density=[o["density"] for o in objs],
                            model=objs[0]["model"], duration=float(times[-1]), dt=float(sim["dt"]),
                            n_grid=int(sim["n_grid"]), interaction=inter["kind"],
                            force=inter.get("force_N", (0.0, 0.0, 0.0)), damping=float(sim["damping"]))
    except (KeyError, TypeError) as e:
        raise SceneError(f"{path}: missing or bad field {e} (expected a file written by make_surgical_scene)") from None
    if not np.allclose(setup.times, times, atol=1e-9):
        raise SceneError(f"{path}: frame_times do not match the generator's for these settings")
    return setup, gt


def clip_observations(clip_dir, frames=None) -> Observations:
    """The clip's frames [F, H, W, 3], tool masks [F, H, W] and timestamps [F] (s, from the first
    frame), optionally only `frames` (a list of indices starting at 0)."""
    _, gt = _record(clip_dir)
    sample = read_endonerf(clip_dir, depth_scale=float(gt.get("depth_scale", DEPTH_SCALE)))
    times = torch.tensor(gt["frame_times"], dtype=torch.float64)
    idx = list(range(len(times))) if frames is None else list(frames)
    return Observations(images=sample.images.permute(0, 2, 3, 1).float()[idx],
                        tool_masks=sample.masks["tool"].bool()[idx], times=times[idx] - times[idx[0]])


def known_forces(clip_dir) -> list:
    """The tool's force on the tissue as the clip records it (`RegionForce`s; none for "indent")."""
    setup, _ = setup_from_clip(clip_dir)
    return list(setup.scene.forces)


def truth_materials(clip_dir) -> list:
    """The clip's true materials, one per tissue block (left first)."""
    setup, _ = setup_from_clip(clip_dir)
    return list(setup.materials)


def ground_truth_scene(clip_dir, materials: list | None = None, sources: list | None = None) -> PhysicsScene:
    """The clip's own scene: the generator's particles, each carrying one isotropic Gaussian of its
    colour, the support's Gaussians as a rigid object, the generator's solver settings and support
    anchors. materials: one per block (default the truth), with `sources` naming them."""
    setup, gt = setup_from_clip(clip_dir)
    p = setup.particles
    materials = list(setup.materials if materials is None else materials)
    if len(materials) != 2 or not all(isinstance(m, Material) for m in materials):
        raise SceneError("materials: expected two endogsim.physics.Material, one per tissue block")
    sources = sources or (["ground truth"] * 2 if materials == list(setup.materials) else ["given"] * 2)
    objects = [SceneObject(o["name"], "tissue", o["name"], m, {"all": s})
               for o, m, s in zip(gt["objects"], materials, sources)] + [SceneObject("support", "rigid", "support")]
    n, s = len(p.x), len(setup.support_points)
    means = np.concatenate([p.x, setup.support_points]).astype(np.float32)  # [n + s, 3]
    scales = np.concatenate([np.full((n, 3), TISSUE_SIGMA), np.full((s, 3), 0.002)]).astype(np.float32)
    colors = np.concatenate([setup.tissue_colors, setup.support_colors]).astype(np.float32)
    return PhysicsScene(means, np.tile(np.float32([1, 0, 0, 0]), (n + s, 1)), scales,
                        np.full(n + s, OPACITY, np.float32), colors,
                        np.concatenate([p.object_id, np.full(s, 2)]).astype(np.int64),
                        np.concatenate([np.arange(n), np.full(s, -1)]).astype(np.int64), p, objects, setup.config,
                        list(setup.scene.static_boxes), setup.K.double().numpy(), np.eye(4), setup.width,
                        setup.height, float(gt["simulation"]["particle_spacing"]),
                        meta={"source": str(clip_dir), "decomposition": "ground truth (the generator's particles)"})
