"""Interactive simulation of a physics scene: poke, cut, retract, step, render.

Python API:

    sim = Simulation.load("scene_dir")              # a PhysicsScene directory, or a synthetic clip
    sim.poke(center=(0, 0, 0.091), direction=(0, 0, 1), force=0.2, radius=0.004, duration=0.03)
    frames = sim.run(n_frames=12, substeps_per_frame=25)   # list of RGB images [H, W, 3]
    sim.cut(point=(0, 0, 0.095), normal=(1, 0, 0)); sim.step(100); image = sim.render()

CLI (writes OUT/frames/%04d.png, OUT/simulation.gif, OUT/states.npz and OUT/summary.json):

    python -m endogsim.simulate --scene DIR --action poke|cut|retract [action args] --out OUT
    python -m endogsim.simulate --scene synthetic --action poke --out OUT    # the synthetic clip, made

The actions are the physics layer's interactions, started at the current time: `poke` a force on
the particles in a box (EndoGSim's / PhysGaussian's particle impulse, spread by mass), `cut` an
incision (a damage band along a plane), `retract` a grasp whose particles follow a displacement
path and then hold. The MPM simulator takes its interactions when it is built, so adding an action
rebuilds it from the current particle state (x, v, C, F, damage carried over); a grasp still
under way keeps its particles (its box is moved by the offset reached) and path; a force still
acting is re-applied to the particles inside its box at that moment.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import warp as wp

from common.cli import OneLineParser, one_line_errors
from common.viewer import add_view_flag

from .physics import Grasp, Incision, MPMSimulator, Particles, RegionForce, Interactions
from .scene import PhysicsScene, SceneError

__all__ = ["Simulation", "SimulationInputError", "save_run", "main"]


class SimulationInputError(ValueError):
    """A bad action argument (a region with no particle, a zero direction...), naming the argument."""


def _vec(name: str, value, unit: bool = False) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise SimulationInputError(f"{name}: expected 3 finite numbers, got {value!r}")
    if unit:
        n = np.linalg.norm(v)
        if n < 1e-12:
            raise SimulationInputError(f"{name}: expected a non-zero vector, got {value!r}")
        v = v / n
    return v


def _positive(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SimulationInputError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


@dataclass
class _Force:
    lo: np.ndarray
    hi: np.ndarray
    force: np.ndarray
    start: float  # s, absolute
    end: float


@dataclass
class _Grasp:
    lo: np.ndarray
    hi: np.ndarray
    times: np.ndarray  # s, absolute
    offsets: np.ndarray  # [K, 3] from the grasped particles' positions at times[0]


@dataclass
class _Cut:
    point: np.ndarray
    normal: np.ndarray
    half_width: float
    lo: np.ndarray
    hi: np.ndarray
    time: float


class Simulation:
    """A PhysicsScene under the MPM with actions. `time` is the simulated time (s) since the start."""

    def __init__(self, scene: PhysicsScene, device: str = "cpu"):
        if not isinstance(scene, PhysicsScene):
            raise SimulationInputError(f"scene: expected a PhysicsScene, got {type(scene).__name__}")
        self.scene = scene
        self.config = scene.mpm
        if device != self.config.device:
            from dataclasses import replace

            self.config = replace(self.config, device=device)
        self.dt = self.config.dt
        self.substep = 0
        self._forces: list[_Force] = []
        self._grasps: list[_Grasp] = []
        self._cuts: list[_Cut] = []
        self._sim: MPMSimulator | None = None
        p = scene.particles
        P = len(p.x)
        self._carry = {"x": p.x.copy(), "v": p.v.copy(), "C": np.zeros((P, 3, 3)),
                       "F": np.tile(np.eye(3), (P, 1, 1)), "damage": np.zeros(P)}

    @classmethod
    def load(cls, scene_dir, device: str = "cpu", stride: int = 2) -> "Simulation":
        """From a PhysicsScene directory (scene.json), or a synthetic clip (ground_truth.json), which
        is turned into a scene by `endogsim.clip.depth_scene(scene_dir, stride=stride)`."""
        d = Path(scene_dir)
        if not d.is_dir():
            raise SceneError(f"{d}: scene directory not found")
        if (d / "scene.json").is_file():
            return cls(PhysicsScene.load(d), device)
        if (d / "ground_truth.json").is_file():
            from .clip import depth_scene

            return cls(depth_scene(d, stride=stride), device)
        raise SceneError(f"{d}: expected scene.json (a PhysicsScene) or ground_truth.json (a synthetic clip)")

    # ------------------------------------------------------------------ state
    @property
    def time(self) -> float:
        return self.substep * self.dt

    def positions(self) -> np.ndarray:
        """Particle positions [P, 3] now."""
        return self._sim.positions() if self._sim is not None else self._carry["x"].copy()

    def deformation_gradients(self) -> np.ndarray:
        """Particle deformation gradients F [P, 3, 3] now."""
        if self._sim is None:
            return self._carry["F"].copy()
        return self._sim.state.F.numpy().astype(np.float64)

    def damage(self) -> np.ndarray:
        return self._sim.state.damage.numpy().astype(np.float64) if self._sim is not None else self._carry["damage"].copy()

    def render(self, **kw) -> np.ndarray:
        """RGB [H, W, 3] float in [0, 1] of the current state from the reference camera, incised
        material hidden (keywords go to `PhysicsScene.render_state`)."""
        kw.setdefault("damage", self.damage())
        out = self.scene.render_state(self.positions(), self.deformation_gradients(), **kw)
        return out.rgb.detach().clamp(0, 1).cpu().numpy()

    # ------------------------------------------------------------------ actions
    def _region(self, what: str, center, radius) -> tuple[np.ndarray, np.ndarray]:
        c = _vec(f"{what}.center", center)
        if np.ndim(radius) == 0:
            r = np.full(3, _positive(f"{what}.radius", radius))
        else:
            r = _vec(f"{what}.radius", radius)
            if r.min() <= 0:
                raise SimulationInputError(f"{what}.radius: expected a positive number or 3 positive half sizes, got {radius!r}")
        lo, hi = c - r, c + r
        x = self.positions()
        inside = np.all((x >= lo) & (x <= hi), axis=1)
        if not inside.any():
            raise SimulationInputError(
                f"{what}: no particle inside the region [{lo.round(5).tolist()}, {hi.round(5).tolist()}] "
                f"(center {c.tolist()}, radius {r.tolist()}); the scene's particles span "
                f"[{x.min(0).round(5).tolist()}, {x.max(0).round(5).tolist()}] (m, scene frame)")
        return lo, hi

    def poke(self, center, direction, force: float = 0.2, radius: float = 0.004, duration: float = 0.03) -> None:
        """Push the particles within the box `center` +- `radius` (m) with a total `force` (N) along
        `direction` for `duration` s, starting now (spread by mass, `physics.RegionForce`)."""
        lo, hi = self._region("poke", center, radius)
        d = _vec("poke.direction", direction, unit=True)
        f = _positive("poke.force", force)
        T = _positive("poke.duration", duration)
        self._forces.append(_Force(lo, hi, d * f, self.time, self.time + T))
        self._invalidate()

    def cut(self, point, normal, half_width: float | None = None, center=None, radius: float | None = None) -> None:
        """Incise now along the plane through `point` with `normal`: particles within `half_width`
        of it (default: one particle spacing) and inside the box `center` +- `radius` (default: the
        whole scene) are damaged, so the two sides stop transmitting stress (`physics.Incision`)."""
        p = _vec("cut.point", point)
        n = _vec("cut.normal", normal, unit=True)
        hw = _positive("cut.half_width", half_width if half_width is not None else self.scene.spacing)
        if center is None:
            lo = np.asarray(self.config.origin) - 1.0
            hi = np.asarray(self.config.origin) + self.config.domain_size + 1.0
        else:
            lo, hi = self._region("cut", center, radius if radius is not None else self.config.domain_size)
        x = self.positions()
        band = (np.abs((x - p) @ n) <= hw) & np.all((x >= lo) & (x <= hi), axis=1)
        if not band.any():
            raise SimulationInputError(f"cut: no particle within {hw} m of the plane through {p.tolist()} with normal "
                                       f"{n.round(4).tolist()} inside the region; the scene's particles span "
                                       f"[{x.min(0).round(5).tolist()}, {x.max(0).round(5).tolist()}]")
        self._cuts.append(_Cut(p, n, hw, lo, hi, self.time))
        self._invalidate()

    def retract(self, center, path, radius: float = 0.004, duration: float = 0.05, times=None) -> None:
        """Grasp the particles within `center` +- `radius` now and move them along `path`: offsets
        [K, 3] (m) from where they are, reached at `times` [K] (s from now; default evenly over
        `duration`); a single offset [3] is a straight pull. They hold at the last offset after."""
        lo, hi = self._region("retract", center, radius)
        offs = np.asarray(path, dtype=np.float64)
        if offs.shape == (3,):
            offs = offs[None]
        if offs.ndim != 2 or offs.shape[1] != 3 or len(offs) == 0 or not np.all(np.isfinite(offs)):
            raise SimulationInputError(f"retract.path: expected offsets [K, 3] or [3], got shape {offs.shape}")
        if times is None:
            T = _positive("retract.duration", duration)
            times = np.linspace(0.0, T, len(offs) + 1)[1:]
        times = np.asarray(times, np.float64)
        if times.shape != (len(offs),) or np.any(np.diff(np.r_[0.0, times]) <= 0):
            raise SimulationInputError(f"retract.times: expected {len(offs)} increasing times > 0, got {times.tolist()}")
        self._grasps.append(_Grasp(lo, hi, self.time + np.r_[0.0, times], np.vstack([np.zeros(3), offs])))
        self._invalidate()

    # ------------------------------------------------------------------ stepping
    def _invalidate(self) -> None:
        if self._sim is not None:
            self._carry = {"x": self._sim.positions(), "v": self._sim.velocities(),
                           "C": self._sim.state.C.numpy().astype(np.float64),
                           "F": self._sim.state.F.numpy().astype(np.float64),
                           "damage": self._sim.state.damage.numpy().astype(np.float64)}
            self._sim = None

    def _physics_scene(self) -> Interactions:
        """The actions in the new simulator's local time (its substep 0 = now)."""
        t0 = self.time
        forces = [RegionForce(tuple(f.lo), tuple(f.hi), tuple(f.force), max(f.start - t0, 0.0), f.end - t0)
                  for f in self._forces if f.end > t0 + 0.5 * self.dt]
        grasps = []
        for g in self._grasps:
            reached = np.array([np.interp(t0, g.times, g.offsets[:, k]) for k in range(3)])  # [3]
            later = g.times > t0 + 1e-12
            if later.any():
                times = np.r_[0.0, g.times[later] - t0]
                offsets = np.vstack([np.zeros(3), g.offsets[later] - reached])
            else:  # finished: hold where the path ended
                times, offsets = np.array([0.0, 1.0]), np.zeros((2, 3))
            grasps.append(Grasp(tuple(g.lo + reached), tuple(g.hi + reached), tuple(times), tuple(map(tuple, offsets))))
        cuts = [Incision(tuple(c.point), tuple(c.normal), c.half_width, tuple(c.lo), tuple(c.hi), max(c.time - t0, 0.0))
                for c in self._cuts if c.time >= t0 - 1e-12]
        return Interactions(static_boxes=list(self.scene.anchors), forces=forces, grasps=grasps, incisions=cuts)

    def _build(self) -> MPMSimulator:
        p = self.scene.particles
        c = self._carry
        particles = Particles(x=c["x"], volume=p.volume, object_id=p.object_id, v=c["v"])
        sim = MPMSimulator(self.config, particles, self.scene.materials, self._physics_scene())
        dev = sim.device
        sim.state.C.assign(wp.array(c["C"].astype(np.float32), dtype=wp.mat33, device=dev))
        sim.state.F.assign(wp.array(c["F"].astype(np.float32), dtype=wp.mat33, device=dev))
        sim.state.damage.assign(wp.array(c["damage"].astype(np.float32), dtype=float, device=dev))
        self._cuts = [cut for cut in self._cuts if cut.time >= self.time - 1e-12]  # earlier ones live in `damage`
        return sim

    def step(self, n: int = 1) -> None:
        """Advance n substeps of MPMConfig.dt."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise SimulationInputError(f"step: n expected an int >= 0, got {n!r}")
        if self._sim is None:
            self._sim = self._build()
        self._sim.step(n)
        self.substep += n

    def run(self, n_frames: int, substeps_per_frame: int, render: bool = True, on_frame=None) -> dict:
        """Step n_frames x substeps_per_frame, recording the state (and an image) after each frame,
        the current state first. Returns {"times" [F+1], "positions" [F+1, P, 3], "F" [F+1, P, 3, 3],
        "images" list of [H, W, 3] (if render)}."""
        for name, v in (("n_frames", n_frames), ("substeps_per_frame", substeps_per_frame)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SimulationInputError(f"run: {name} expected an int >= 1, got {v!r}")
        out = {"times": [], "positions": [], "F": [], "images": []}
        for f in range(n_frames + 1):
            if f > 0:
                self.step(substeps_per_frame)
            out["times"].append(self.time)
            out["positions"].append(self.positions().astype(np.float32))
            out["F"].append(self.deformation_gradients().astype(np.float32))
            if render:
                out["images"].append(self.render())
            if on_frame is not None:
                on_frame(f)
        out["times"] = np.asarray(out["times"])
        out["positions"] = np.stack(out["positions"])
        out["F"] = np.stack(out["F"])
        return out


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------

def save_run(out_dir, result: dict, sim: Simulation, gif_ms: int = 80) -> Path:
    """Write a `Simulation.run` result: out_dir/frames/%04d.png, simulation.gif (Pillow, looping) and
    states.npz (times [F], positions [F, P, 3], F [F, P, 3, 3], the final damage [P], object_id [P],
    gaussian_particle [N])."""
    from PIL import Image

    out_dir = Path(out_dir)
    if not result.get("images"):
        raise SimulationInputError("save_run: the run has no images (call run(..., render=True))")
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    pngs = []
    for i, img in enumerate(result["images"]):
        im = Image.fromarray((img * 255).round().astype(np.uint8), "RGB")
        im.save(out_dir / "frames" / f"{i:04d}.png")
        pngs.append(im)
    pngs[0].save(out_dir / "simulation.gif", save_all=True, append_images=pngs[1:], duration=gif_ms, loop=0)
    np.savez_compressed(out_dir / "states.npz", times=result["times"], positions=result["positions"], F=result["F"],
                        damage=sim.damage().astype(np.float32), object_id=sim.scene.particles.object_id,
                        gaussian_particle=sim.scene.gaussian_particle)
    return out_dir


# Defaults that show (the camera looks along +z: 4 mm along it moved the synthetic tissue < 1 px): the largest
# displacement is ~19 % (poke) / ~20 % (retract) of the tissue's height, 5-6 px on 64 x 80 (test_simulate.py).
POKE_DIRECTION, POKE_FORCE = (0.0, 1.0, 1.0), 0.3  # N, into the tissue (+z) and down the image (+y)
RETRACT_OFFSET = (0.0, -0.007, -0.003)  # m, 7 mm up the image and 3 mm towards the camera


def run_action(scene: PhysicsScene, action: str, out_dir, center=None, radius: float = 0.004,
               direction=POKE_DIRECTION, force: float = POKE_FORCE, duration: float = 0.03,
               offset=RETRACT_OFFSET, normal=(1.0, 0.0, 0.0), pull: float = 0.003, frames: int = 12,
               frame_dt: float = 0.005, gif_ms: int = 80, device: str = "cpu", progress: bool = True,
               meta: dict | None = None) -> dict:
    """One interaction on a scene, simulated for `frames` frames of `frame_dt` s and saved to out_dir
    (`save_run` + summary.json); returns the summary. poke: `force` N along `direction` on the box
    `center` +- `radius` for `duration` s; retract: that box moved by `offset` over `duration`; cut:
    an incision through `center` with `normal`, both sides then pulled `pull` m apart (0: none).
    center defaults to the surface point at the image centre of the first tissue object."""
    if action not in ("poke", "cut", "retract"):
        raise SimulationInputError(f"action: expected poke, cut or retract, got {action!r}")
    sim = Simulation(scene, device=device)
    center = np.asarray(center, float) if center is not None else scene.visible_center()
    if action == "poke":
        sim.poke(center, direction, force, radius, duration)
    elif action == "retract":
        sim.retract(center, offset, radius, duration)
    else:
        n = _vec("normal", normal, unit=True)
        sim.cut(center, n)
        if pull > 0:
            # grasp a strip on each side of the cut band (half width one spacing) along the plane and pull it
            # away: half sizes radius / 2 across the plane, 5 radius along it, 0.75 radius in depth
            axis = int(np.argmax(np.abs(n)))
            half = np.full(3, 5 * radius)
            half[2] = 0.75 * radius
            half[axis] = 0.5 * radius
            gap = scene.spacing + 0.5 * radius + 0.002
            for side in (-1.0, 1.0):
                sim.retract(center + side * gap * n, side * pull * n, half, duration)
    substeps = max(1, int(round(_positive("frame_dt", frame_dt) / sim.dt)))
    from tqdm import tqdm

    bar = tqdm(total=frames + 1, desc=f"simulate {action}", unit="frame", disable=not progress)
    out = sim.run(frames, substeps, render=True, on_frame=lambda f: bar.update(1))
    bar.close()
    out_dir = save_run(out_dir, out, sim, gif_ms=gif_ms)
    disp_all = np.linalg.norm(out["positions"] - out["positions"][:1], axis=-1)  # [F, P] from the first frame
    disp = disp_all.max(0)  # [P] largest over the run
    cam = out["positions"] @ scene.w2c[:3, :3].T + scene.w2c[:3, 3]  # [F, P, 3] camera frame
    height = float(np.ptp(cam[0, :, 1]))  # m, the tissue's extent down the image
    uv = cam[..., :2] / cam[..., 2:] * np.diag(scene.K)[:2]  # [F, P, 2] pixels from the principal point
    summary = {**(meta or {}), "action": action, "center": center.tolist(), "frames": len(out["images"]),
               "substeps_per_frame": substeps, "dt": sim.dt, "simulated_seconds": float(out["times"][-1]),
               "particles": int(len(disp)), "max_displacement_m": float(disp.max()),
               "mean_max_displacement_m": float(disp.mean()), "final_max_displacement_m": float(disp_all[-1].max()),
               "tissue_height_m": height, "max_displacement_vs_tissue_height": float(disp.max()) / max(height, 1e-12),
               "max_image_displacement_px": float(np.linalg.norm(uv - uv[:1], axis=-1).max())}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _parser() -> argparse.ArgumentParser:
    ap = OneLineParser("endogsim.simulate", description=__doc__)
    ap.add_argument("--scene", required=True, help="a PhysicsScene directory, a synthetic clip (ground_truth.json), "
                    "or 'synthetic': make endogsim.reproduce's synthetic clip in OUT/clip (--seed) and use it")
    ap.add_argument("--action", required=True, choices=["poke", "cut", "retract"],
                    help="poke: a force in a box; cut: an incision along a plane; retract: a grasp that pulls")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--center", type=float, nargs=3, help="m, scene frame: poke/retract region centre, cut point "
                    "(default: the surface point at the image centre of the first tissue object)")
    ap.add_argument("--radius", type=float, default=0.004, help="m, half size of the poke/retract box")
    ap.add_argument("--direction", type=float, nargs=3, default=POKE_DIRECTION,
                    help="poke direction (default 0 1 1: into the tissue, away from the camera, and down the image)")
    ap.add_argument("--force", type=float, default=POKE_FORCE, help="N, poke force")
    ap.add_argument("--duration", type=float, default=0.03, help="s, poke force / retraction duration")
    ap.add_argument("--offset", type=float, nargs=3, default=RETRACT_OFFSET,
                    help="m, retraction displacement (default 7 mm up the image, 3 mm towards the camera)")
    ap.add_argument("--normal", type=float, nargs=3, default=(1.0, 0.0, 0.0), help="cut plane normal")
    ap.add_argument("--pull", type=float, default=0.003,
                    help="m, after a cut both sides next to it are retracted this far along +-normal (0: none)")
    ap.add_argument("--frames", type=int, default=12, help="frames written after the initial one")
    ap.add_argument("--frame-dt", type=float, default=0.005, help="s of simulated time per frame")
    ap.add_argument("--stride", type=int, default=2, help="pixel stride when --scene is a synthetic clip")
    ap.add_argument("--gif-ms", type=int, default=80, help="GIF frame duration (ms)")
    ap.add_argument("--device", default="cpu", help='Warp device, "cpu" or "cuda"')
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of --scene synthetic's clip (the simulation itself is deterministic)")
    add_view_flag(ap)
    return ap


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    np.random.seed(args.seed)
    with one_line_errors("endogsim.simulate"):
        for flag, value in (("--frames", args.frames), ("--gif-ms", args.gif_ms)):
            if value < 1:
                raise SimulationInputError(f"{flag}: expected an int >= 1, got {value}")
        for flag, value in (("--frame-dt", args.frame_dt), ("--radius", args.radius), ("--force", args.force),
                            ("--duration", args.duration)):
            _positive(flag, value)
        if args.scene == "synthetic" and not Path(args.scene).exists():
            from .clip import synthetic_clip
            args.scene = str(synthetic_clip(Path(args.out) / "clip", seed=args.seed))
        sim = Simulation.load(args.scene, device=args.device, stride=args.stride)
        summary = run_action(sim.scene, args.action, args.out, args.center, args.radius, args.direction,
                             args.force, args.duration, args.offset, args.normal, args.pull, args.frames,
                             args.frame_dt, args.gif_ms, args.device,
                             meta={"scene": str(args.scene), "args": dict(vars(args))})
    print(f"wrote {summary['frames']} frames, simulation.gif and states.npz to {args.out} "
          f"(max displacement {1e3 * summary['max_displacement_m']:.2f} mm, "
          f"{100 * summary['max_displacement_vs_tissue_height']:.0f}% of the tissue's height, "
          f"{summary['max_image_displacement_px']:.1f} px in the images)")
    if args.view:  # the frames under a time slider in the browser, until Ctrl-C
        from .view import view_simulation
        view_simulation(args.out, sim.scene)
    return summary


if __name__ == "__main__":
    main()
