"""The simulatable scene: Gaussians bound to MPM particles with per-object materials
(EndoGSim's "decomposition and material field"; PhysGaussian's Gaussians-as-particles).

`PhysicsScene` holds the Gaussians (means, quaternions, scales, opacities, RGB), each deformable
Gaussian bound to its own particle, the filled particles, per-object materials, the MPM settings
and the anchors that hold the tissue's far side. It is built from a trained 4DGS
(`from_gaussian_model`: decomposition by `endogsim.decompose`, filling by `endogsim.filling`), from
a synthetic clip (`endogsim.clip`), or from arrays (`build`).
`render_state(positions, F)` moves each Gaussian with its particle and deforms its covariance as
F Sigma F^T (PhysGaussian eq. 2) before rendering with `endogsim.render.render(covars=)`.

Frames: the scene is stored in the reference camera's frame (OpenCV, x right, y down, z forward;
metres), so "into the tissue" is +z; a scene built from another world frame is moved into it.
Rigid objects (tools, the static support) are rendered where they were reconstructed and are not
simulated (tools are kinematic in EndoGSim; a moving tool is `endogsim.physics.Tool`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.cameras import matrix_to_quaternion, quaternion_to_matrix

from .filling import back_anchors, calibrate_volumes, fill_along_rays, plane_anchors
from .lighting import AMBIENT, RestLight, rest_normals
from .physics import Material, MPMConfig, Particles, PhysicsInputError, StaticBox, stable_dt
from .render import RenderOutput, covariance_from_scale_rotation, render

if TYPE_CHECKING:
    from .decompose import SupportPlane

__all__ = ["SceneError", "SceneObject", "PhysicsScene", "fit_mpm_config"]

FORMAT = "endogsim-physics-scene"
FORMAT_VERSION = 1
KINDS = ("tissue", "rigid")

class SceneError(ValueError):
    """Bad input to scene building or a bad scene directory; the message names the file or field."""


@dataclass
class SceneObject:
    """One segmented object. kind "tissue" is simulated by the MPM with `material`; "rigid" (tools,
    a static support) is rendered in place. `label` is what the material prior was asked about;
    `sources` records where each material value came from ("table:...", "mllm:...", "ground truth")."""

    name: str
    kind: str
    label: str = ""
    material: Material | None = None
    sources: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SceneError(f"SceneObject.kind: expected one of {KINDS}, got {self.kind!r} (object {self.name!r})")
        if self.kind == "tissue" and not isinstance(self.material, Material):
            raise SceneError(f"SceneObject.material: tissue object {self.name!r} needs an endogsim.physics.Material")


def fit_mpm_config(x, spacing: float, materials, pad_cells: int = 4, max_grid: int = 96, **overrides) -> MPMConfig:
    """A cubic grid of cell size 2 x spacing around the particles (pad_cells free cells on each side,
    beyond the walls) and a stable dt; `overrides` set any other MPMConfig field."""
    x = np.asarray(x, np.float64)
    dx = 2.0 * spacing
    lo, hi = x.min(0), x.max(0)
    wall = overrides.get("wall_cells", 2)
    n = int(math.ceil((hi - lo).max() / dx)) + 2 * (pad_cells + wall)
    if n > max_grid:
        raise SceneError(f"fit_mpm_config: the particles need a {n}^3 grid at spacing {spacing:.3g} m "
                         f"(extent {(hi - lo).max():.3g} m), above max_grid = {max_grid}; use a larger spacing")
    origin = tuple((lo + hi) / 2 - n * dx / 2)
    cfg = dict(n_grid=n, domain_size=n * dx, origin=origin, dt=stable_dt(materials, dx), wall="slip", check_every=25)
    cfg.update(overrides)
    return MPMConfig(**cfg)


# ---------------------------------------------------------------------------------------------------
# The physics scene
# ---------------------------------------------------------------------------------------------------

@dataclass
class PhysicsScene:
    """Gaussians bound to MPM particles, with per-object materials (see the module docstring).

    Gaussians [N]: means [N, 3], quats [N, 4] (w, x, y, z), scales [N, 3] (activated), opacities [N],
    colors [N, 3] RGB (the SH colour seen from the reference camera), gaussian_object [N] (index into
    objects), gaussian_particle [N] (the particle a deformable Gaussian rides on, -1 for rigid ones).
    Particles [P]: deformable Gaussians first (particle i = the i-th deformable Gaussian), then the
    invisible filled interior; particles.object_id indexes `materials`, which follows the tissue
    objects in order (tissue objects come first in `objects`). K [3, 3], w2c [4, 4] (the reference
    camera, the identity once in the scene frame), width, height."""

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray
    gaussian_object: np.ndarray
    gaussian_particle: np.ndarray
    particles: Particles
    objects: list
    mpm: MPMConfig
    anchors: list
    K: np.ndarray
    w2c: np.ndarray
    width: int
    height: int
    spacing: float
    background: tuple = (0.0, 0.0, 0.0)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ consistency
    @property
    def materials(self) -> list:
        return [o.material for o in self.objects if o.kind == "tissue"]

    @property
    def n_gaussians(self) -> int:
        return len(self.means)

    def validate(self, where: str = "PhysicsScene") -> None:
        N = len(self.means)
        shapes = {"means": (N, 3), "quats": (N, 4), "scales": (N, 3), "opacities": (N,), "colors": (N, 3),
                  "gaussian_object": (N,), "gaussian_particle": (N,), "K": (3, 3), "w2c": (4, 4)}
        for name, shape in shapes.items():
            a = getattr(self, name)
            if not isinstance(a, np.ndarray) or a.shape != shape or not np.all(np.isfinite(a)):
                raise SceneError(f"{where}: {name} expected a finite array of shape {shape}, got "
                                 f"{getattr(a, 'shape', type(a).__name__)}")
        if N == 0:
            raise SceneError(f"{where}: no Gaussians")
        if not self.objects or not all(isinstance(o, SceneObject) for o in self.objects):
            raise SceneError(f"{where}: objects expected a non-empty list of SceneObject")
        kinds = [o.kind for o in self.objects]
        n_t = kinds.count("tissue")
        if n_t == 0 or kinds[:n_t] != ["tissue"] * n_t:
            raise SceneError(f"{where}: objects expected at least one tissue, tissues first; got kinds {kinds}")
        go, gp = self.gaussian_object, self.gaussian_particle
        if go.min() < 0 or go.max() >= len(self.objects):
            raise SceneError(f"{where}: gaussian_object expected ids in [0, {len(self.objects)})")
        deform = go < n_t
        P = len(self.particles.x)
        if np.any(gp[~deform] != -1) or not np.array_equal(gp[deform], np.arange(int(deform.sum()))) or P < deform.sum():
            raise SceneError(f"{where}: gaussian_particle expected 0, 1, ... over the tissue Gaussians in order "
                             "and -1 for rigid ones")
        if self.particles.object_id.max() >= n_t or not np.array_equal(self.particles.object_id[gp[deform]], go[deform]):
            raise SceneError(f"{where}: particles.object_id expected tissue ids < {n_t}, matching the Gaussians'")
        if not (isinstance(self.width, int) and isinstance(self.height, int) and self.width > 0 and self.height > 0):
            raise SceneError(f"{where}: width and height expected positive ints, got {self.width!r}, {self.height!r}")

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, means, quats, scales, opacities, colors, gaussian_object, objects, K, w2c, width, height, *,
              thickness, spacing: float | None = None, mpm: MPMConfig | None = None, anchors: list | None = None,
              support: SupportPlane | None = None, volumes=None, background=(0.0, 0.0, 0.0),
              meta: dict | None = None) -> "PhysicsScene":
        """Bind Gaussians (world frame, numpy or torch) to particles and fill the tissues' interior.

        gaussian_object [N] indexes `objects` (tissues first). thickness: m, a number or one value per
        Gaussian (only the tissue Gaussians' are used). spacing: the fill voxel size (default 1.2x
        the median nearest-neighbour distance of the tissue Gaussians). mpm: the solver settings
        (default `fit_mpm_config`); anchors: static boxes (default: `plane_anchors` of the support
        plane (scene frame) when one is given, else `back_anchors`). volumes [n_tissues] m^3: what
        each tissue's particle volumes are calibrated to add up to (`calibrate_volumes`)."""
        if not isinstance(objects, (list, tuple)) or not objects or not all(isinstance(o, SceneObject) for o in objects):
            raise SceneError("objects: expected a non-empty list of SceneObject (tissues first)")
        arr = {k: np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, np.float32)
               for k, v in dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors).items()}
        K = np.asarray(K.cpu().numpy() if isinstance(K, torch.Tensor) else K, np.float64)
        w2c = np.asarray(w2c.cpu().numpy() if isinstance(w2c, torch.Tensor) else w2c, np.float64)
        go = np.asarray(gaussian_object.cpu().numpy() if isinstance(gaussian_object, torch.Tensor) else gaussian_object)
        N = len(arr["means"])
        if go.shape != (N,) or not np.issubdtype(go.dtype, np.integer):
            raise SceneError(f"gaussian_object: expected integer ids of shape [{N}], got {go.dtype} {go.shape}")
        if w2c.shape != (4, 4):
            raise SceneError(f"w2c: expected [4, 4], got {w2c.shape}")
        if not np.allclose(w2c, np.eye(4)):
            # move everything into the reference camera frame (see the module docstring)
            R, t = w2c[:3, :3], w2c[:3, 3]
            arr["means"] = (arr["means"] @ R.T + t).astype(np.float32)
            Rq = torch.from_numpy(R).float() @ quaternion_to_matrix(torch.from_numpy(arr["quats"]))  # [N, 3, 3]
            arr["quats"] = matrix_to_quaternion(Rq).numpy().astype(np.float32)
            w2c = np.eye(4)
        n_t = sum(o.kind == "tissue" for o in objects)
        deform = go < n_t  # [N]
        if not deform.any():
            raise SceneError("gaussian_object: no Gaussian belongs to a tissue object")
        idx = np.nonzero(deform)[0]
        surface = arr["means"][idx].astype(np.float64)  # [M, 3]
        if spacing is None:
            from scipy.spatial import cKDTree

            d, _ = cKDTree(surface).query(surface, k=2)
            spacing = 1.2 * float(np.median(d[:, 1]))
        thick = np.broadcast_to(np.asarray(thickness, np.float64), (N,))[idx]
        direction = None if support is None else support.normal  # see endogsim.filling
        x_in, obj_in, vol_s, vol_in = fill_along_rays(surface, go[idx], thick, spacing, direction=direction)
        obj = np.concatenate([go[idx], obj_in]).astype(np.int64)
        volume = np.concatenate([vol_s, vol_in])
        if volumes is not None:
            volume = calibrate_volumes(volume, obj, volumes)
        particles = Particles(x=np.concatenate([surface, x_in]), volume=volume, object_id=obj)
        gp = np.full(N, -1, np.int64)
        gp[idx] = np.arange(len(idx))
        materials = [o.material for o in objects[:n_t]]
        if mpm is None:
            mpm = fit_mpm_config(particles.x, spacing, materials)
        if anchors is None and support is not None:
            anchors = plane_anchors(particles.x, mpm.dx, mpm.origin, support, 0.5 * spacing, mpm.domain_size)
        elif anchors is None:
            anchors = back_anchors(particles.x, mpm.dx, mpm.origin, mpm.origin[2] + mpm.domain_size, 0.5 * spacing)
        return cls(arr["means"], arr["quats"], arr["scales"], arr["opacities"], arr["colors"], go.astype(np.int64), gp,
                   particles, list(objects), mpm, list(anchors), K, w2c, int(width), int(height), float(spacing),
                   tuple(float(b) for b in background), dict(meta or {}))

    @classmethod
    def from_gaussian_model(cls, model, sample, t: float = 0.0, **kwargs) -> "PhysicsScene":
        """A scene from a trained `GaussianModel` and its clip (a `common.datasets.Sample`): the
        decomposition, particles and materials of `endogsim.video_scene.scene_from_gaussian_model`,
        whose docstring lists the arguments."""
        from .video_scene import scene_from_gaussian_model

        return scene_from_gaussian_model(model, sample, t, **kwargs)

    def with_materials(self, materials: list, source: str) -> "PhysicsScene":
        """This scene with new tissue materials (one per tissue object, in order), `source` recorded."""
        if len(materials) != len(self.materials) or not all(isinstance(m, Material) for m in materials):
            raise SceneError(f"materials: expected {len(self.materials)} endogsim.physics.Material, one per tissue")
        it = iter(materials)
        objects = [SceneObject(o.name, o.kind, o.label, next(it), {"all": source}) if o.kind == "tissue" else o
                   for o in self.objects]
        return replace(self, objects=objects)

    # ------------------------------------------------------------------ rendering
    def rest_positions(self) -> np.ndarray:
        """Particle positions [P, 3] at rest (the Gaussians' means, then the filled interior)."""
        return self.particles.x.copy()

    def render_state(self, positions=None, F=None, K=None, w2c=None, width: int | None = None,
                     height: int | None = None, hide_rigid: bool = False, damage=None,
                     backend: str = "auto", relight: bool = True) -> RenderOutput:
        """Render a simulated state: positions [P, 3] and deformation gradients F [P, 3, 3] of the
        particles (None: rest / identity), numpy or torch; torch inputs keep their autograd graph (the
        image is differentiable in them) and their device. Deformable Gaussians move to their particle
        and their covariance becomes F Sigma F^T (PhysGaussian eq. 2); rigid ones stay. Camera: the
        reference one unless K [3, 3] / w2c [4, 4] / width / height are given. damage [P] in [0, 1]
        (an incision's band) scales the opacity of the Gaussians on those particles by 1 - damage:
        the cut material is gone from view, so the incision shows as a gap. relight: the light at the
        reference camera shades each moved Gaussian by its turned normal (`endogsim.lighting.RestLight`;
        colours are not differentiated)."""
        P = len(self.particles.x)
        dev = next((a.device for a in (positions, F) if isinstance(a, torch.Tensor)), torch.device("cpu"))
        means = torch.from_numpy(self.means).to(dev)  # [N, 3]
        covars = covariance_from_scale_rotation(torch.from_numpy(self.quats), torch.from_numpy(self.scales)).to(dev)  # [N, 3, 3]
        idx = torch.from_numpy(np.nonzero(self.gaussian_particle >= 0)[0]).to(dev)  # [M] deformable Gaussians
        pid = torch.from_numpy(self.gaussian_particle[self.gaussian_particle >= 0]).to(dev)  # [M] their particles
        if positions is not None:
            pos = positions.float() if isinstance(positions, torch.Tensor) else torch.as_tensor(np.asarray(positions, np.float32))
            if pos.shape != (P, 3) or not torch.isfinite(pos).all():
                raise SceneError(f"render_state: positions expected a finite array [{P}, 3], got {tuple(pos.shape)}")
            means = means.index_put((idx,), pos.to(dev)[pid])
        if F is not None:
            Fp = F.float() if isinstance(F, torch.Tensor) else torch.as_tensor(np.asarray(F, np.float32))
            if Fp.shape != (P, 3, 3) or not torch.isfinite(Fp).all():
                raise SceneError(f"render_state: F expected a finite array [{P}, 3, 3], got {tuple(Fp.shape)}")
            Fg = Fp.to(dev)[pid]  # [M, 3, 3]
            covars = covars.index_put((idx,), Fg @ covars[idx] @ Fg.transpose(-1, -2))
        colors = torch.from_numpy(self.colors).to(dev)  # [N, 3]
        if relight and (positions is not None or F is not None) and len(idx):
            if getattr(self, "_light", None) is None:  # rest normals once per scene: every frame renders
                rest = self.means[self.gaussian_particle >= 0].astype(np.float64)  # [M, 3]
                self._light = RestLight(rest, rest_normals(rest), AMBIENT)
            shift = means[idx].detach().cpu().double().numpy() - self._light.rest_x  # [M, 3]
            Fm = np.broadcast_to(np.eye(3), (len(idx), 3, 3)) if F is None else Fg.detach().cpu().double().numpy()
            colors = colors.index_put((idx,), self._light.colors(colors[idx], shift, Fm))
        opac = torch.from_numpy(self.opacities).to(dev)  # [N]
        if hide_rigid:
            opac = torch.zeros_like(opac).index_put((idx,), opac[idx])
        if damage is not None:
            dmg = torch.as_tensor(np.asarray(damage, np.float32), device=dev)  # [P]
            if dmg.shape != (P,) or not torch.all((dmg >= 0) & (dmg <= 1)):
                raise SceneError(f"render_state: damage expected values in [0, 1] of shape [{P}], got {tuple(dmg.shape)}")
            opac = opac.index_put((idx,), opac[idx] * (1 - dmg[pid]))
        K = torch.as_tensor(self.K if K is None else K, dtype=torch.float32, device=dev)
        w2c = torch.as_tensor(self.w2c if w2c is None else w2c, dtype=torch.float32, device=dev)
        return render(means, None, None, opac, colors, w2c, K, width or self.width,
                      height or self.height, covars=covars,
                      background=torch.tensor(self.background, dtype=torch.float32, device=dev), backend=backend)

    def make_simulator(self, interactions=None, materials: list | None = None, config: MPMConfig | None = None):
        """An `endogsim.physics.MPMSimulator` of this scene's particles with its anchors plus the
        forces / grasps / incisions / tool of `interactions` (an `endogsim.physics.Interactions`); materials
        and config default to the scene's (e.g. refinement passes its current estimates)."""
        from .physics import MPMSimulator, Interactions

        extra = interactions or Interactions()
        if not isinstance(extra, Interactions):
            raise SceneError(f"interactions: expected an endogsim.physics.Interactions, got {type(extra).__name__}")
        full = Interactions(static_boxes=list(self.anchors) + list(extra.static_boxes), tool=extra.tool, forces=list(extra.forces),
                     grasps=list(extra.grasps), incisions=list(extra.incisions))
        return MPMSimulator(config or self.mpm, self.particles, list(materials or self.materials), full)

    def render_static(self, **kw) -> RenderOutput:
        """The Gaussians as reconstructed (quaternions and scales, no particles involved)."""
        K = torch.as_tensor(self.K, dtype=torch.float32)
        w2c = torch.as_tensor(self.w2c, dtype=torch.float32)
        return render(torch.from_numpy(self.means), torch.from_numpy(self.quats), torch.from_numpy(self.scales),
                      torch.from_numpy(self.opacities), torch.from_numpy(self.colors), w2c, K, self.width, self.height,
                      background=torch.tensor(self.background, dtype=torch.float32), **kw)

    def visible_center(self) -> np.ndarray:
        """The visible surface point [3] of the first tissue object nearest its image-space centroid
        (where the simulation CLI acts by default)."""
        cam = self.means.astype(np.float64) @ self.w2c[:3, :3].T + self.w2c[:3, 3]  # [N, 3] camera frame
        uv = cam[:, :2] / cam[:, 2:] * np.diag(self.K)[:2] + self.K[:2, 2]  # [N, 2] pixels
        first = self.gaussian_object == 0  # [N]
        d = np.linalg.norm(uv - uv[first].mean(0), axis=1)
        d[~first] = np.inf
        return self.means[int(np.argmin(d))].astype(np.float64)

    # ------------------------------------------------------------------ save / load
    def save(self, scene_dir) -> Path:
        """Write scene.json, gaussians.safetensors and particles.safetensors into scene_dir."""
        from safetensors.numpy import save_file

        d = Path(scene_dir)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"means": self.means, "quats": self.quats, "scales": self.scales, "opacities": self.opacities,
                   "colors": self.colors, "gaussian_object": self.gaussian_object,
                   "gaussian_particle": self.gaussian_particle}, str(d / "gaussians.safetensors"))
        p = self.particles
        save_file({"x": p.x, "volume": p.volume, "object_id": p.object_id.astype(np.int64)}, str(d / "particles.safetensors"))
        m = self.mpm
        doc = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "objects": [{"name": o.name, "kind": o.kind, "label": o.label, "sources": o.sources,
                         "material": None if o.material is None else {
                             k: getattr(o.material, k) for k in ("model", "E", "nu", "density", "yield_stress",
                                                                 "plastic_viscosity")}} for o in self.objects],
            "mpm": {k: getattr(m, k) for k in ("n_grid", "domain_size", "origin", "dt", "gravity", "damping", "wall",
                                               "wall_cells", "cfl", "max_speed", "check_every")},
            "anchors": [[list(b.lo), list(b.hi)] for b in self.anchors],
            "camera": {"K": self.K.tolist(), "w2c": self.w2c.tolist(), "width": self.width, "height": self.height,
                       "frame": "scene frame = reference camera frame (OpenCV), metres"},
            "spacing": self.spacing, "background": list(self.background), "meta": self.meta,
        }
        tmp = d / "scene.json.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        tmp.replace(d / "scene.json")
        return d

    @classmethod
    def load(cls, scene_dir) -> "PhysicsScene":
        """Read a scene directory written by `save`; every problem is a SceneError naming the file."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        d = Path(scene_dir)
        if not d.is_dir():
            raise SceneError(f"{d}: scene directory not found")
        path = d / "scene.json"
        if not path.is_file():
            raise SceneError(f"{path}: not found (expected a scene written by PhysicsScene.save)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SceneError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise SceneError(f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}, got "
                             f"{doc.get('format') if isinstance(doc, dict) else doc!r}")
        tensors = {}
        for name, keys in (("gaussians.safetensors", ("means", "quats", "scales", "opacities", "colors",
                                                       "gaussian_object", "gaussian_particle")),
                           ("particles.safetensors", ("x", "volume", "object_id"))):
            f = d / name
            if not f.is_file():
                raise SceneError(f"{f}: not found")
            try:
                t = load_file(str(f))
            except (SafetensorError, OSError, ValueError) as e:
                raise SceneError(f"{f}: not a readable safetensors file ({e})") from None
            missing = [k for k in keys if k not in t]
            if missing:
                raise SceneError(f"{f}: missing tensors {missing}")
            tensors.update(t)
        try:
            objects = []
            for i, o in enumerate(doc["objects"]):
                mat = None if o.get("material") is None else Material(**o["material"])
                objects.append(SceneObject(o["name"], o["kind"], o.get("label", ""), mat, o.get("sources", {})))
            m = dict(doc["mpm"])
            m["origin"], m["gravity"] = tuple(m["origin"]), tuple(m["gravity"])
            mpm = MPMConfig(**m)
            anchors = [StaticBox(tuple(lo), tuple(hi)) for lo, hi in doc["anchors"]]
            cam = doc["camera"]
            particles = Particles(tensors["x"], tensors["volume"], tensors["object_id"])
            scene = cls(tensors["means"], tensors["quats"], tensors["scales"], tensors["opacities"], tensors["colors"],
                        tensors["gaussian_object"], tensors["gaussian_particle"], particles, objects, mpm, anchors,
                        np.asarray(cam["K"], np.float64), np.asarray(cam["w2c"], np.float64), cam["width"],
                        cam["height"], float(doc["spacing"]), tuple(doc.get("background", (0, 0, 0))),
                        doc.get("meta", {}))
        except KeyError as e:
            raise SceneError(f"{path}: missing field {e}") from None
        except (SceneError, PhysicsInputError, TypeError, ValueError) as e:
            raise SceneError(f"{d}: {e}") from None
        return scene
