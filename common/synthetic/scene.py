"""Scene descriptions: a room or a yard, primitives resting on the floor, a light, materials.

World frame: metres, z up; the floor (indoor) or the ground (outdoor) is the plane z = 0 and
the scene is centred on the z axis. An indoor room is the box [-Lx/2, Lx/2] x [-Ly/2, Ly/2] x
[0, Lz]; an outdoor yard is a ground slab [-45, 45]^2 x [-0.2, 0] under an open sky.

A `Scene` is everything `render_views` and `scene_mesh` need; it round-trips through the
annotations written with each scene (`Scene.to_annotations` / `Scene.from_annotations`), so that
a package can render novel views of a scene it read from disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

CATEGORIES = ("box", "sphere", "cylinder", "cone")
PLURALS = {"box": "boxes", "sphere": "spheres", "cylinder": "cylinders", "cone": "cones"}

# Object colours (linear RGB in [0, 1]); none of them is a floor, wall or ground colour.
PALETTE = {
    "red": (0.80, 0.12, 0.12),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.82, 0.15),
    "green": (0.15, 0.60, 0.22),
    "cyan": (0.10, 0.70, 0.78),
    "blue": (0.12, 0.25, 0.80),
    "purple": (0.50, 0.22, 0.70),
    "pink": (0.95, 0.52, 0.72),
    "black": (0.10, 0.10, 0.10),
}

FLOORS = (  # (colour A, colour B) of the checker tiles
    ((0.55, 0.38, 0.22), (0.66, 0.49, 0.31)),  # wood
    ((0.78, 0.78, 0.75), (0.46, 0.46, 0.48)),  # grey and white tiles
    ((0.62, 0.34, 0.23), (0.76, 0.57, 0.42)),  # terracotta
)
WALLS = ((0.86, 0.83, 0.76), (0.80, 0.84, 0.86), (0.88, 0.80, 0.72))
GROUNDS = (
    ((0.56, 0.56, 0.54), (0.44, 0.44, 0.43)),  # paving
    ((0.76, 0.68, 0.50), (0.64, 0.57, 0.41)),  # sand
    ((0.58, 0.36, 0.29), (0.47, 0.30, 0.25)),  # brick
)

GROUND_HALF = 45.0  # outdoor ground slab half-size (m): with cameras within 16 m of the z axis,
GROUND_THICKNESS = 0.2  # the farthest ground corner is 16 + 45 * sqrt(2) = 79.6 m away horizontally.


@dataclass
class Primitive:
    """One object resting on the floor. `center` is the centre of its oriented bounding box."""

    id: int  # >= 1, the value of its pixels in the instance maps
    category: str  # one of CATEGORIES
    color_name: str  # a key of PALETTE
    center: np.ndarray  # [3] world, metres
    size: np.ndarray  # [3] box extents along its own x, y, z (z = height; round: x = y = diameter)
    yaw: float = 0.0  # rotation about world z, radians (0 for round primitives)

    @property
    def color(self) -> tuple[float, float, float]:
        return PALETTE[self.color_name]

    @property
    def R(self) -> np.ndarray:
        """Object-to-world rotation [3, 3] (a yaw about z)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def height(self) -> float:
        return float(self.size[2])

    @property
    def radius(self) -> float:
        """Radius of a sphere, of a cylinder, of a cone's base."""
        return float(self.size[0]) / 2

    @property
    def footprint_radius(self) -> float:
        """Radius of a circle about the centre that contains the object's footprint."""
        return float(np.hypot(self.size[0], self.size[1])) / 2 if self.category == "box" else self.radius

    @property
    def volume(self) -> float:
        sx, sy, sz = (float(v) for v in self.size)
        r = sx / 2
        return {
            "box": sx * sy * sz,
            "sphere": 4 / 3 * math.pi * r**3,
            "cylinder": math.pi * r**2 * sz,
            "cone": math.pi * r**2 * sz / 3,
        }[self.category]

    def corners(self) -> np.ndarray:
        """The 8 corners [8, 3] of its oriented bounding box, world frame."""
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return self.center + (signs * self.size / 2) @ self.R.T  # [8, 3]

    def distance_to_box(self, point: np.ndarray) -> float:
        """Distance (m) from a world point [3] to its oriented bounding box (0 inside)."""
        local = (np.asarray(point, dtype=np.float64) - self.center) @ self.R  # [3], R^T (p - c)
        outside = np.maximum(np.abs(local) - self.size / 2, 0.0)  # [3]
        return float(np.linalg.norm(outside))

    def to_annotation(self) -> dict:
        return {
            "id": self.id,
            "category": self.category,
            "color_name": self.color_name,
            "color": list(self.color),
            "center": [float(v) for v in self.center],
            "size": [float(v) for v in self.size],
            "R": self.R.tolist(),
            "yaw": float(self.yaw),
            "height": self.height,
        }

    @classmethod
    def from_annotation(cls, a: dict) -> "Primitive":
        return cls(int(a["id"]), a["category"], a["color_name"], np.array(a["center"], dtype=np.float64),
                   np.array(a["size"], dtype=np.float64), float(a["yaw"]))


@dataclass
class Scene:
    """A procedural scene. `bounds_*` is the room box (indoor) or the ground slab (outdoor)."""

    domain: str  # "indoor" | "outdoor"
    seed: int
    objects: list[Primitive]
    bounds_center: np.ndarray  # [3]
    bounds_size: np.ndarray  # [3]
    light_direction: np.ndarray  # [3] unit, from the surface towards the light
    ambient: float
    diffuse: float
    materials: dict = field(default_factory=dict)

    def object(self, object_id: int) -> Primitive:
        return next(o for o in self.objects if o.id == object_id)

    def light_annotation(self) -> dict:
        return {
            "type": "directional",
            "direction": [float(v) for v in self.light_direction],
            "ambient": self.ambient,
            "diffuse": self.diffuse,
            "model": "rgb = clip(albedo * (ambient + diffuse * max(0, n . direction)), 0, 1), no shadows; "
            "direction is a world unit vector from the surface towards the light",
        }

    def to_annotations(self) -> dict:
        """The scene description as JSON-able annotations (see `from_annotations`)."""
        bounds = {"center": [float(v) for v in self.bounds_center],
                  "size": [float(v) for v in self.bounds_size]}
        return {
            "domain": self.domain,
            "world_frame": "metres, z up, floor/ground is the plane z = 0, scene centred on the z axis",
            "objects": [o.to_annotation() for o in self.objects],
            ("room" if self.domain == "indoor" else "ground"): bounds,
            "light": self.light_annotation(),
            "materials": self.materials,
        }

    @classmethod
    def from_annotations(cls, ann: dict) -> "Scene":
        bounds = ann["room"] if ann["domain"] == "indoor" else ann["ground"]
        light = ann["light"]
        return cls(
            domain=ann["domain"],
            seed=int(ann.get("generator", {}).get("seed", 0)),
            objects=[Primitive.from_annotation(a) for a in ann["objects"]],
            bounds_center=np.array(bounds["center"], dtype=np.float64),
            bounds_size=np.array(bounds["size"], dtype=np.float64),
            light_direction=np.array(light["direction"], dtype=np.float64),
            ambient=float(light["ambient"]),
            diffuse=float(light["diffuse"]),
            materials=ann["materials"],
        )


def _object_size(rng: np.random.Generator, category: str, scale: float) -> np.ndarray:
    """Extents [3] of a new object; `scale` is 1 indoors, larger outdoors."""
    u = lambda a, b: rng.uniform(a, b) * scale  # noqa: E731
    if category == "box":
        return np.array([u(0.3, 1.1), u(0.3, 1.1), u(0.25, 1.1)])
    if category == "sphere":
        d = 2 * u(0.15, 0.45)
        return np.array([d, d, d])
    if category == "cylinder":
        d = 2 * u(0.12, 0.35)
        return np.array([d, d, u(0.3, 1.3)])
    d = 2 * u(0.15, 0.40)  # cone
    return np.array([d, d, u(0.35, 1.2)])


def _structure_size(rng: np.random.Generator, category: str) -> np.ndarray:
    """Extents [3] of a large outdoor structure (a building or a tower)."""
    if category == "box":
        return np.array([rng.uniform(5, 12), rng.uniform(5, 12), rng.uniform(4, 14)])
    d = 2 * rng.uniform(2, 4)
    return np.array([d, d, rng.uniform(6, 18)])


def _place(rng, objects, category, size, sample_xy, gap, tries=200):
    """Rejection-sample a footprint that keeps `gap` metres from every other footprint."""
    for _ in range(tries):
        yaw = float(rng.uniform(0, math.pi)) if category == "box" else 0.0
        obj = Primitive(0, category, "", np.zeros(3), size, yaw)
        xy = sample_xy(obj.footprint_radius)
        if xy is None:
            continue
        r = obj.footprint_radius
        if all(np.hypot(*(xy - o.center[:2])) >= r + o.footprint_radius + gap for o in objects):
            obj.center = np.array([xy[0], xy[1], size[2] / 2])  # resting on z = 0
            return obj
    return None


def sample_scene(rng: np.random.Generator, domain: str, seed: int = 0) -> Scene:
    """Draw a room or yard layout from `rng` (deterministic given its state)."""
    if domain not in ("indoor", "outdoor"):
        raise ValueError(f"domain must be 'indoor' or 'outdoor', got {domain!r}")
    # (colour, category) pairs are drawn without replacement, so "the <colour> <category>" is a
    # unique description of every object.
    combos = [(c, k) for c in PALETTE for k in CATEGORIES]
    order = rng.permutation(len(combos))
    objects: list[Primitive] = []

    def add(obj, color_name):
        obj.id, obj.color_name = len(objects) + 1, color_name
        objects.append(obj)

    if domain == "indoor":
        size = np.array([rng.uniform(4.0, 6.5), rng.uniform(4.0, 6.5), rng.uniform(2.6, 3.2)])
        center = np.array([0.0, 0.0, size[2] / 2])
        inner = size[:2] / 2 - 1.0  # objects keep 1 m from the walls: room for orbiting cameras

        def sample_xy(r):
            lim = inner - r
            return None if (lim <= 0).any() else rng.uniform(-lim, lim)

        wanted = int(rng.integers(4, 8))
        for j in order:
            if len(objects) == wanted:
                break
            color_name, category = combos[j]
            obj = _place(rng, objects, category, _object_size(rng, category, 1.0), sample_xy, gap=0.15)
            if obj is not None:
                add(obj, color_name)
        elevation = rng.uniform(50, 80)
        floor = FLOORS[int(rng.integers(len(FLOORS)))]
        wall = WALLS[int(rng.integers(len(WALLS)))]
        materials = {
            "floor_colors": [list(floor[0]), list(floor[1])],
            "tile_size": float(rng.uniform(0.4, 0.8)),
            "wall_color": list(wall),
            "stripe_width": float(rng.uniform(0.12, 0.35)),
            "ceiling_color": [0.90, 0.90, 0.88],
            "texture_seed": int(rng.integers(0, 2**31 - 1)),
        }
    else:
        G = GROUND_HALF
        size = np.array([2 * G, 2 * G, GROUND_THICKNESS])
        center = np.array([0.0, 0.0, -GROUND_THICKNESS / 2])

        def near_xy(r):  # near objects within 9 m of the centre, orbiting cameras outside
            rho, phi = 9.0 * math.sqrt(rng.uniform(0, 1)), rng.uniform(0, 2 * math.pi)
            return None if rho + r > 9.0 else np.array([rho * math.cos(phi), rho * math.sin(phi)])

        def far_xy(r):  # structures in a ring between 22 m and the edge of the ground
            rho, phi = rng.uniform(22.0, G - 1.0), rng.uniform(0, 2 * math.pi)
            if rho - r < 20.0 or rho + r > G - 1.0:
                return None
            return np.array([rho * math.cos(phi), rho * math.sin(phi)])

        wanted_near, wanted_far = int(rng.integers(5, 9)), int(rng.integers(2, 5))
        picked = iter(order)
        for j in picked:
            color_name, category = combos[j]
            obj = _place(rng, objects, category, _object_size(rng, category, 2.5), near_xy, gap=0.5)
            if obj is not None:
                add(obj, color_name)
            if len(objects) == wanted_near:
                break
        for j in picked:
            if len(objects) >= wanted_near + wanted_far:
                break
            color_name, category = combos[j]
            if category not in ("box", "cylinder"):  # buildings and towers
                continue
            obj = _place(rng, objects, category, _structure_size(rng, category), far_xy, gap=2.0)
            if obj is not None:
                add(obj, color_name)
        elevation = rng.uniform(30, 65)
        ground = GROUNDS[int(rng.integers(len(GROUNDS)))]
        materials = {
            "ground_colors": [list(ground[0]), list(ground[1])],
            "slab_size": float(rng.uniform(1.0, 2.0)),
            "sky_zenith": [0.25, 0.45, 0.85],
            "sky_horizon": [0.78, 0.86, 0.95],
            "texture_seed": int(rng.integers(0, 2**31 - 1)),
        }
    azimuth = rng.uniform(0, 2 * math.pi)
    el = math.radians(elevation)
    light = np.array([math.cos(el) * math.cos(azimuth), math.cos(el) * math.sin(azimuth), math.sin(el)])
    ambient = float(rng.uniform(0.35, 0.45))
    diffuse = float(rng.uniform(0.55, 0.70))
    return Scene(domain, seed, objects, center, size, light, ambient, diffuse, materials)
