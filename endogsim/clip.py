"""A clip read back: any EndoNeRF-layout clip (`load_clip`), and the synthetic one as what the
pipeline consumes and as its ground truth.

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

from common.cameras import depth_to_points
from common.datasets import read_endonerf
from common.datasets.io import read_json
from common.datasets.sample import Sample
from common.errors import DatasetError

from .physics import Material, MPMConfig, StaticBox, stable_dt
from .refine import Observations
from .scene import PhysicsScene, SceneError, SceneObject
from .synthetic_look import DISC_OPACITY, covars_to_quats_scales
from .synthetic_scene import DEPTH_SCALE, LOOKS, OPACITY, TISSUE_SIGMA, SceneSetup, build_setup

__all__ = [
    "load_clip",
    "setup_from_clip",
    "clip_observations",
    "known_forces",
    "ground_truth_scene",
    "truth_materials",
    "true_surface_tracks",
    "surface_motion_error",
    "depth_scene",
    "synthetic_clip",
]


def load_clip(data_dir, rc) -> Sample:
    """All frames of an EndoNeRF-layout clip read with the ReconConfig's depth units and mask polarity (images [V,3,H,W], depth [V,H,W], masks["tool"] [V,H,W], K, w2c, times).
    Every file is read and checked here, so a missing or mis-sized file fails before training."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(
            data_dir, "clip folder not found (expected images/, depth/, masks/, poses_bounds.npy)"
        )
    if not (data_dir / "masks").is_dir():
        raise DatasetError(
            data_dir / "masks",
            "folder not found: the tool masks (white = tool) are needed "
            "to keep instrument pixels out of the tissue losses",
        )
    sample = read_endonerf(data_dir, depth_scale=rc.depth_scale, tool_is_white=rc.tool_is_white)
    if sample.times is None or sample.num_views < 2:
        raise DatasetError(data_dir, f"expected a video of at least 2 frames, got {sample.num_views}")
    return sample


def _record(clip_dir) -> tuple[Path, dict]:
    path = Path(clip_dir) / "ground_truth.json"
    if not path.is_file():
        raise SceneError(
            f"{path}: not found (expected a clip written by endogsim.synthetic_scene.make_surgical_scene)"
        )
    return path, read_json(path)


def setup_from_clip(clip_dir) -> tuple[SceneSetup, dict]:
    """(the generator's `SceneSetup` rebuilt from the clip's ground_truth.json, that record)."""
    path, gt = _record(clip_dir)
    look = gt.get("look", "blocks")  # clips written before the looks are "blocks"
    if look not in LOOKS:
        raise SceneError(f"{path}: look expected one of {LOOKS}, got {look!r}")
    try:
        sim, cam, objs, inter = gt["simulation"], gt["camera"], gt["objects"], gt["interaction"]
        times = np.asarray(gt["frame_times"], np.float64)
        setup = build_setup(
            int(gt["seed"]),
            len(times),
            (int(cam["height"]), int(cam["width"])),
            E=[o["E"] for o in objs],
            nu=objs[0]["nu"],
            density=[o["density"] for o in objs],
            model=objs[0]["model"],
            duration=float(times[-1]),
            dt=float(sim["dt"]),
            n_grid=int(sim["n_grid"]),
            interaction=inter["kind"],
            force=inter.get("force_N", (0.0, 0.0, 0.0)),
            damping=float(sim["damping"]),
            look=look,
        )
    except (KeyError, TypeError) as e:
        raise SceneError(
            f"{path}: missing or bad field {e} (expected a file written by make_surgical_scene)"
        ) from None
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
    return Observations(
        images=sample.images.permute(0, 2, 3, 1).float()[idx],
        tool_masks=sample.masks["tool"].bool()[idx],
        times=times[idx] - times[idx[0]],
    )


def known_forces(clip_dir) -> list:
    """The tool's force on the tissue as the clip records it (`RegionForce`s; none for "indent")."""
    setup, _ = setup_from_clip(clip_dir)
    return list(setup.scene.forces)


def truth_materials(clip_dir) -> list:
    """The clip's true materials, one per tissue block (left first)."""
    setup, _ = setup_from_clip(clip_dir)
    return list(setup.materials)


def true_surface_tracks(clip_dir) -> np.ndarray:
    """Where the clip's tissue surface is at every frame: the positions [F, G, 3] (m, camera frame)
    of the ground-truth scene's tissue Gaussians, simulated with the true materials under the known
    force as the clip was made (for scoring a prediction's motion, `surface_motion_error`)."""
    from .refine import simulate_scene  # the clip is refine's input type's source; lazy: no cycle

    scene = ground_truth_scene(clip_dir)
    _, positions = simulate_scene(scene, truth_materials(clip_dir), clip_observations(clip_dir).times.numpy(),
                                  known_forces(clip_dir))  # [F, P, 3]
    gp, tissue = np.asarray(scene.gaussian_particle), _tissue_gaussians(scene)
    return positions[:, gp[tissue]]


def surface_motion_error(scene: PhysicsScene, positions, tracks, frames=slice(None)) -> float:
    """How far a simulation of `scene` (particle positions [F, P, 3]) moves its tissue surface from
    where the clip's surface goes (`true_surface_tracks` [F, G, 3]), m: each tissue Gaussian's
    displacement from frame 0 against that of the true surface point nearest to it at rest, the
    distance averaged over the Gaussians and the frames selected."""
    from scipy.spatial import cKDTree

    positions, tracks = np.asarray(positions), np.asarray(tracks)
    sel = _tissue_gaussians(scene)
    ours = positions[:, np.asarray(scene.gaussian_particle)[sel]]  # [F, S, 3] (offsets are constant)
    _, nearest = cKDTree(tracks[0]).query(np.asarray(scene.means)[sel])  # [S]
    error = np.linalg.norm((ours - ours[:1]) - (tracks[:, nearest] - tracks[:1, nearest]), axis=-1)  # [F, S]
    return float(error[frames].mean())


def _tissue_gaussians(scene: PhysicsScene) -> np.ndarray:
    tissue = [i for i, o in enumerate(scene.objects) if o.kind == "tissue"]
    return np.isin(np.asarray(scene.gaussian_object), tissue) & (np.asarray(scene.gaussian_particle) >= 0)  # [N]


def ground_truth_scene(clip_dir, materials: list | None = None, sources: list | None = None) -> PhysicsScene:
    """The clip's own scene: the generator's particles with its Gaussians, the support's Gaussians
    as a rigid object, the generator's solver settings and support anchors. "blocks": every particle
    carries one isotropic Gaussian of its colour. "endoscopy": the surface discs (the first
    particles, massless tracers) are the tissue's Gaussians, coloured as lit at rest (the clip
    relights them as they turn; these colours do not), the lattice particles are the invisible
    interior. materials: one per tissue (default the truth), with `sources` naming them."""
    setup, gt = setup_from_clip(clip_dir)
    p = setup.particles
    materials = list(setup.materials if materials is None else materials)
    if len(materials) != 2 or not all(isinstance(m, Material) for m in materials):
        raise SceneError("materials: expected two endogsim.physics.Material, one per tissue block")
    sources = sources or (["ground truth"] * 2 if materials == list(setup.materials) else ["given"] * 2)
    objects = [
        SceneObject(o["name"], "tissue", o["name"], m, {"all": s})
        for o, m, s in zip(gt["objects"], materials, sources)
    ] + [SceneObject("support", "rigid", "support")]
    n, s = len(p.x), len(setup.support_points)
    quats = np.tile([1.0, 0, 0, 0], (n + s, 1))  # [n + s, 4]
    scales = np.concatenate([np.full((n, 3), TISSUE_SIGMA), np.full((s, 3), 0.002)])  # [n + s, 3]
    opacity = OPACITY
    if setup.look == "endoscopy":
        app, opacity = setup.appearance, DISC_OPACITY
        n = app.n_discs
        quats, scales = covars_to_quats_scales(np.concatenate([app.disc_covars, app.support_covars]))
    means = np.concatenate([p.x[:n], setup.support_points]).astype(np.float32)  # [n + s, 3]
    colors = np.concatenate([setup.tissue_colors[:n], setup.support_colors]).astype(np.float32)
    return PhysicsScene(
        means,
        quats.astype(np.float32),
        scales.astype(np.float32),
        np.full(n + s, opacity, np.float32),
        colors,
        np.concatenate([p.object_id[:n], np.full(s, 2)]).astype(np.int64),
        np.concatenate([np.arange(n), np.full(s, -1)]).astype(np.int64),
        p,
        objects,
        setup.config,
        list(setup.scene.static_boxes),
        setup.K.double().numpy(),
        np.eye(4),
        setup.width,
        setup.height,
        float(gt["simulation"]["particle_spacing"]),
        meta={"source": str(clip_dir), "decomposition": "ground truth (the generator's particles)"},
    )


def depth_scene(
    clip_dir,
    frame: int = 0,
    stride: int = 2,
    materials: list | None = None,
    material_sources: list | None = None,
) -> PhysicsScene:
    """A scene from a synthetic clip (`endogsim.synthetic_scene`), no trained 4DGS needed: one
    isotropic Gaussian per stride-th pixel of frame `frame`, back-projected with its depth
    (radius = the pixel footprint, colour = the pixel). Decomposition by the ground truth:
    tool-mask pixels are the tool, points above the support (ground_truth.json "support") are
    tissue, object 0 at x < 0 and object 1 at x > 0 (the recorded sides), the rest the support.
    Tissue is filled down to the support, which anchors it (as in the generator); the MPM settings
    are the recorded ones with dt lowered if the materials need it. materials: one Material per
    tissue (default: the ground truth's), e.g. a prior's, with `material_sources` naming them."""
    clip_dir = Path(clip_dir)
    gt_path = clip_dir / "ground_truth.json"
    if not gt_path.is_file():
        raise SceneError(f"{gt_path}: not found (depth_scene needs a clip written by make_surgical_scene)")
    gt = read_json(gt_path)
    try:
        objs, sim, support_z = gt["objects"], gt["simulation"], float(gt["support"]["z_min"])
        depth_scale = float(gt["depth_scale"])
    except (KeyError, TypeError, ValueError) as e:
        raise SceneError(f"{gt_path}: missing or bad field {e}") from None
    if len(objs) != 2:
        raise SceneError(f"{gt_path}: objects expected the two tissue blocks, got {len(objs)}")
    if not isinstance(stride, int) or stride < 1:
        raise SceneError(f"stride: expected an int >= 1, got {stride!r}")
    sample = read_endonerf(clip_dir, frames=[frame], depth_scale=depth_scale)
    image = sample.images[0].permute(1, 2, 0)  # [H, W, 3]
    depth, K, w2c = sample.depth[0], sample.K[0], sample.w2c[0]  # [H, W], [3, 3], [4, 4]
    H, W = depth.shape
    pts = depth_to_points(depth, K, w2c)[::stride, ::stride].reshape(-1, 3).double().numpy()  # [M, 3]
    rgb = image[::stride, ::stride].reshape(-1, 3).numpy()  # [M, 3]
    z = depth[::stride, ::stride].reshape(-1).double().numpy()  # [M]
    tool = sample.masks["tool"][0][::stride, ::stride].reshape(-1).numpy()  # [M]
    ok = z > 0
    pts, rgb, z, tool = pts[ok], rgb[ok], z[ok], tool[ok]
    spacing = float(sim["particle_spacing"])
    tissue = ~tool & (pts[:, 2] < support_z - 0.5 * spacing)
    go = np.where(tissue, np.where(pts[:, 0] < 0, 0, 1), np.where(tool, 3, 2)).astype(np.int64)  # [M]
    if materials is None:
        materials = [
            Material(model=o["model"], E=float(o["E"]), nu=float(o["nu"]), density=float(o["density"]))
            for o in objs
        ]
        material_sources = ["ground truth"] * 2
    if len(materials) != 2 or not all(isinstance(m, Material) for m in materials):
        raise SceneError("materials: expected two endogsim.physics.Material, one per tissue block")
    sources = material_sources or ["given"] * 2
    objects = [
        SceneObject(o["name"], "tissue", o["name"], m, {"all": s})
        for o, m, s in zip(objs, materials, sources)
    ]
    objects += [SceneObject("support", "rigid"), SceneObject("tool", "rigid")]
    radius = stride * z / float(K[0, 0])  # [M] the pixel footprint
    dx = float(sim["domain_size"]) / int(sim["n_grid"])
    mpm = MPMConfig(
        n_grid=int(sim["n_grid"]),
        domain_size=float(sim["domain_size"]),
        origin=tuple(sim["origin"]),
        dt=min(float(sim["dt"]), stable_dt(materials, dx, safety=0.9)),
        damping=float(sim["damping"]),
        wall=sim["wall"],
        gravity=tuple(sim.get("gravity", (0.0, 0.0, 0.0))),
        check_every=50,
    )
    return PhysicsScene.build(
        pts,
        np.tile([1.0, 0.0, 0.0, 0.0], (len(pts), 1)),
        np.repeat(radius[:, None], 3, 1),
        np.full(len(pts), 0.9),
        rgb,
        go,
        objects,
        K,
        w2c,
        W,
        H,
        thickness=np.maximum(support_z - pts[:, 2], 0.0),
        spacing=spacing,
        mpm=mpm,
        anchors=[StaticBox((-1.0, -1.0, support_z), (1.0, 1.0, 1.0))],
        meta={
            "source": str(clip_dir),
            "frame": frame,
            "stride": stride,
            "decomposition": "ground truth (x < 0: object 0, x > 0: object 1; tool mask; support)",
        },
    )


def synthetic_clip(out_dir, seed: int = 0) -> Path:
    """`endogsim.reproduce`'s synthetic clip (`config.DataConfig`'s frames, size and look, this seed) written
    to out_dir, unless the clip of this seed is already there; returns out_dir (`--scene synthetic`)."""
    from .config import DataConfig
    from .synthetic_scene import make_surgical_scene

    out_dir, data = Path(out_dir), DataConfig(seed=seed)
    gt = out_dir / "ground_truth.json"
    if not gt.is_file() or (read_json(gt).get("seed"), read_json(gt).get("look", "blocks")) != (seed, data.look):
        make_surgical_scene(out_dir, seed=data.seed, frames=data.frames, size=(data.height, data.width),
                            look=data.look)
    return out_dir
