"""Configuration of the MPM physics layer: the solver settings, per-object materials, particles and
the surgical scene (walls, static boxes, the tool, forces, incisions, retraction).

Units are SI: metres, seconds, pascals, kg/m^3, newtons. Every dataclass checks its own fields
and raises `PhysicsInputError` naming the field and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The constitutive models, by the integer id the kernels branch on.
MODELS = {"fixed_corotated": 0, "neo_hookean": 1, "stvk_hencky": 2, "viscoplastic_stvk": 3}
WALLS = {"none": 0, "slip": 1, "sticky": 2}


class PhysicsInputError(ValueError):
    """Bad input to the physics layer; the message names the field and what was expected."""


class SimulationError(RuntimeError):
    """The run produced a NaN or an exploding velocity; the message names the substep and the particle."""


def _fail(name: str, expected: str, got) -> None:
    raise PhysicsInputError(f"{name}: expected {expected}, got {got!r}")


def _vec3(name: str, value) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        _fail(name, "3 finite numbers", value)
    return tuple(float(a) for a in arr)


def _positive(name: str, value, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (value >= 0 if allow_zero else value > 0):
        _fail(name, "a finite number " + (">= 0" if allow_zero else "> 0"), value)
    return float(value)


@dataclass
class MPMConfig:
    """Solver settings. The grid covers the cube [origin, origin + domain_size]^3 with n_grid cells
    per axis (n_grid + 1 nodes); particles must start at least one cell inside it."""

    n_grid: int = 32  # cells per axis; dx = domain_size / n_grid
    domain_size: float = 1.0  # m
    origin: tuple = (0.0, 0.0, 0.0)  # m, the grid's lowest corner
    dt: float = 1e-4  # s, one substep; checked against the CFL and elastic-wave limits
    gravity: tuple = (0.0, 0.0, 0.0)  # m/s^2 (EndoGSim's configs use none)
    damping: float = 1.0  # grid velocity multiplier per substep (PhysGaussian's grid_v_damping_scale)
    wall: str = "slip"  # domain walls: "slip" (no outward normal velocity), "sticky" (v = 0), "none"
    wall_cells: int = 2  # nodes within this many cells of a face are wall nodes
    cfl: float = 0.3  # dt <= cfl * dx / speed for both the particle speed and the P-wave speed
    max_speed: float | None = None  # m/s; faster particles stop the run (default dx / dt, a cell per substep)
    check_every: int = 1  # substeps between NaN / explosion checks in forward runs (a device sync each)
    # substeps per checkpoint segment in differentiable rollouts; None keeps the whole tape
    checkpoint_every: int | None = None
    device: str = "cpu"  # Warp device: "cpu" or "cuda" / "cuda:0"

    def __post_init__(self):
        if not isinstance(self.n_grid, int) or self.n_grid < 4:
            _fail("MPMConfig.n_grid", "an int >= 4", self.n_grid)
        _positive("MPMConfig.domain_size", self.domain_size)
        self.origin = _vec3("MPMConfig.origin", self.origin)
        _positive("MPMConfig.dt", self.dt)
        self.gravity = _vec3("MPMConfig.gravity", self.gravity)
        if not (isinstance(self.damping, (int, float)) and 0.0 < self.damping <= 1.0):
            _fail("MPMConfig.damping", "a number in (0, 1]", self.damping)
        if self.wall not in WALLS:
            _fail("MPMConfig.wall", f"one of {sorted(WALLS)}", self.wall)
        if not isinstance(self.wall_cells, int) or not 0 <= self.wall_cells < self.n_grid // 2:
            _fail("MPMConfig.wall_cells", f"an int in [0, {self.n_grid // 2})", self.wall_cells)
        if not (isinstance(self.cfl, (int, float)) and 0.0 < self.cfl <= 1.0):
            _fail("MPMConfig.cfl", "a number in (0, 1]", self.cfl)
        if self.max_speed is not None:
            _positive("MPMConfig.max_speed", self.max_speed)
        if not isinstance(self.check_every, int) or self.check_every < 0:
            _fail("MPMConfig.check_every", "an int >= 0 (0 turns the checks off)", self.check_every)
        ckpt = self.checkpoint_every
        if ckpt is not None and (not isinstance(ckpt, int) or ckpt < 1):
            _fail("MPMConfig.checkpoint_every", "None or an int >= 1", self.checkpoint_every)
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            _fail("MPMConfig.device", '"cpu" or "cuda[:i]"', self.device)

    @property
    def dx(self) -> float:
        return self.domain_size / self.n_grid


@dataclass
class Material:
    """The material of one segmented object (EndoGSim's object-wise material field)."""

    model: str = "fixed_corotated"  # one of MODELS
    E: float = 1e4  # Young's modulus, Pa
    nu: float = 0.3  # Poisson's ratio, in [0, 0.5)
    density: float = 1000.0  # kg/m^3
    yield_stress: float = 1e3  # Pa, von Mises yield stress (viscoplastic_stvk only)
    plastic_viscosity: float = 0.0  # Pa*s, Perzyna viscosity of the return mapping (0 = perfectly plastic)

    def __post_init__(self):
        if self.model not in MODELS:
            _fail("Material.model", f"one of {sorted(MODELS)}", self.model)
        _positive("Material.E", self.E)
        if not (isinstance(self.nu, (int, float)) and 0.0 <= self.nu < 0.5):
            _fail("Material.nu", "a number in [0, 0.5)", self.nu)
        _positive("Material.density", self.density)
        _positive("Material.yield_stress", self.yield_stress, allow_zero=True)
        _positive("Material.plastic_viscosity", self.plastic_viscosity, allow_zero=True)


@dataclass
class Particles:
    """Material points: positions x [N, 3] (m), initial volumes [N] (m^3), the object each belongs
    to [N] (an index into the materials list) and optional initial velocities [N, 3] (m/s)."""

    x: np.ndarray
    volume: np.ndarray
    object_id: np.ndarray
    v: np.ndarray | None = None

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float64)
        if self.x.ndim != 2 or self.x.shape[1] != 3 or len(self.x) == 0 or not np.all(np.isfinite(self.x)):
            _fail("Particles.x", "a finite array of shape [N, 3] with N >= 1", self.x.shape)
        n = len(self.x)
        self.volume = np.asarray(self.volume, dtype=np.float64)
        if self.volume.shape != (n,) or not np.all(self.volume > 0):
            _fail("Particles.volume", f"positive volumes of shape [{n}]", self.volume.shape)
        self.object_id = np.asarray(self.object_id)
        oid = self.object_id
        if oid.shape != (n,) or not np.issubdtype(oid.dtype, np.integer) or oid.min() < 0:
            _fail("Particles.object_id", f"non-negative integers of shape [{n}]", self.object_id.shape)
        self.v = np.zeros((n, 3)) if self.v is None else np.asarray(self.v, dtype=np.float64)
        if self.v.shape != (n, 3) or not np.all(np.isfinite(self.v)):
            _fail("Particles.v", f"a finite array of shape [{n}, 3]", self.v.shape)


def block_particles(lo, hi, spacing: float, object_id: int = 0) -> Particles:
    """Particles on a regular lattice filling the box [lo, hi], one per spacing^3 cell (centred)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    counts = np.maximum(np.round((hi - lo) / spacing).astype(int), 1)
    axes = [lo[d] + (np.arange(counts[d]) + 0.5) * (hi[d] - lo[d]) / counts[d] for d in range(3)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [N, 3]
    volume = np.full(len(x), np.prod((hi - lo) / counts))
    return Particles(x=x, volume=volume, object_id=np.full(len(x), object_id, dtype=np.int64))


def _box(name: str, lo, hi) -> tuple[tuple, tuple]:
    lo, hi = _vec3(f"{name}.lo", lo), _vec3(f"{name}.hi", hi)
    if not all(a < b for a, b in zip(lo, hi)):
        _fail(f"{name}.hi", f"every component greater than lo = {lo}", hi)
    return lo, hi


def _path(name: str, times, points) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(times, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    if times.ndim != 1 or len(times) < 2 or np.any(np.diff(times) <= 0):
        _fail(f"{name}.times", "at least 2 strictly increasing times (s)", times.tolist())
    if points.shape != (len(times), 3) or not np.all(np.isfinite(points)):
        _fail(f"{name}.points", f"a finite array of shape [{len(times)}, 3]", points.shape)
    return times, points


def path_velocity(times: np.ndarray, points: np.ndarray, t: float) -> np.ndarray:
    """Velocity [3] of a piecewise-linear path at time t (zero outside its time span)."""
    if t < times[0] or t >= times[-1]:
        return np.zeros(3)
    k = np.searchsorted(times, t, side="right") - 1
    return (points[k + 1] - points[k]) / (times[k + 1] - times[k])


def path_point(times: np.ndarray, points: np.ndarray, t: float) -> np.ndarray:
    """Position [3] of a piecewise-linear path at time t (held at its ends)."""
    return np.array([np.interp(t, times, points[:, d]) for d in range(3)])


@dataclass
class StaticBox:
    """An axis-aligned obstacle: grid nodes inside it are held at zero velocity (sticky)."""

    lo: tuple
    hi: tuple

    def __post_init__(self):
        self.lo, self.hi = _box("StaticBox", self.lo, self.hi)


@dataclass
class Tool:
    """A rigid box collider (the surgical tool) whose centre follows a piecewise-linear path:
    grid nodes inside the box take the tool's velocity (a sticky collider, as PhysGaussian's cuboid)."""

    half_extent: tuple  # m, half sizes of the box
    times: tuple  # s, [K] increasing
    centers: tuple  # m, [K, 3]

    def __post_init__(self):
        self.half_extent = _vec3("Tool.half_extent", self.half_extent)
        if min(self.half_extent) <= 0:
            _fail("Tool.half_extent", "3 positive numbers", self.half_extent)
        self.times, self.centers = _path("Tool", self.times, self.centers)


@dataclass
class RegionForce:
    """A total force (N) spread over the particles inside a box at t = 0, by mass, during
    [start, end). An impulse J is the force J / dt over one substep (`RegionForce.impulse`)."""

    lo: tuple
    hi: tuple
    force: tuple  # N
    start: float = 0.0  # s
    end: float = math.inf  # s

    def __post_init__(self):
        self.lo, self.hi = _box("RegionForce", self.lo, self.hi)
        self.force = _vec3("RegionForce.force", self.force)
        if not self.end > self.start:
            _fail("RegionForce.end", f"a time after start = {self.start}", self.end)

    @staticmethod
    def impulse(lo, hi, impulse, time: float, dt: float) -> "RegionForce":
        """An impulse (N*s) delivered in the one substep that starts at `time`."""
        return RegionForce(lo, hi, tuple(np.asarray(impulse, float) / dt), time, time + 0.5 * dt)


@dataclass
class Grasp:
    """Retraction: the particles inside a box at t = 0 follow a piecewise-linear displacement path
    (offsets [K, 3] from their start, at times [K]); they hold still outside the path's span."""

    lo: tuple
    hi: tuple
    times: tuple
    offsets: tuple

    def __post_init__(self):
        self.lo, self.hi = _box("Grasp", self.lo, self.hi)
        self.times, self.offsets = _path("Grasp", self.times, self.offsets)


@dataclass
class Incision:
    """A cut along the plane through `point` with normal `normal`, limited to the box [lo, hi],
    made at `time`: particles within `half_width` of the plane (at that time) get the damage value,
    which scales their stress by (1 - damage), so the two sides stop transmitting stress."""

    point: tuple
    normal: tuple
    half_width: float
    lo: tuple
    hi: tuple
    time: float = 0.0
    damage: float = 1.0

    def __post_init__(self):
        self.point = _vec3("Incision.point", self.point)
        n = np.asarray(_vec3("Incision.normal", self.normal))
        if np.linalg.norm(n) < 1e-12:
            _fail("Incision.normal", "a non-zero vector", self.normal)
        self.normal = tuple(n / np.linalg.norm(n))
        _positive("Incision.half_width", self.half_width)
        self.lo, self.hi = _box("Incision", self.lo, self.hi)
        _positive("Incision.time", self.time, allow_zero=True)
        if not (isinstance(self.damage, (int, float)) and 0.0 < self.damage <= 1.0):
            _fail("Incision.damage", "a number in (0, 1]", self.damage)


@dataclass
class Interactions:
    """Everything that acts on the particles besides their material and the domain walls."""

    static_boxes: list = field(default_factory=list)  # [StaticBox]
    tool: Tool | None = None
    forces: list = field(default_factory=list)  # [RegionForce]
    grasps: list = field(default_factory=list)  # [Grasp]
    incisions: list = field(default_factory=list)  # [Incision]

    def __post_init__(self):
        for name, items, cls in [
            ("static_boxes", self.static_boxes, StaticBox),
            ("forces", self.forces, RegionForce),
            ("grasps", self.grasps, Grasp),
            ("incisions", self.incisions, Incision),
        ]:
            for i, item in enumerate(items):
                if not isinstance(item, cls):
                    _fail(f"Interactions.{name}[{i}]", cls.__name__, type(item).__name__)
        if self.tool is not None and not isinstance(self.tool, Tool):
            _fail("Interactions.tool", "a Tool or None", type(self.tool).__name__)
