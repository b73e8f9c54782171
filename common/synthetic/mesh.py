"""The ground-truth mesh of a scene: one trimesh, every component closed (watertight).

The room is a box with inward-facing triangles, the outdoor ground a thin slab, boxes are exact,
and round primitives are tessellated with their vertices on the analytic surface and as many
segments as keep every analytic surface point within `tolerance` (default 1 mm) of the mesh.
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

from common.synthetic.scene import Scene

# 1 - (distance from the centre to the nearest face plane) of a unit icosphere, per subdivision
# level: the largest gap between the sphere and the mesh, relative to the radius.
_ICOSPHERE_GAP = {2: 0.01776, 3: 0.00453, 4: 0.00114, 5: 0.000285, 6: 0.0000713}


def _sections(radius: float, tolerance: float) -> int:
    """Segments of a circle of `radius` whose chords stay within `tolerance` of the arc."""
    if radius <= tolerance:
        return 8
    return max(8, math.ceil(math.pi / math.acos(1 - tolerance / radius)))


def _subdivisions(radius: float, tolerance: float) -> int:
    return next((s for s, gap in _ICOSPHERE_GAP.items() if gap * radius <= tolerance), 6)


def _pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def scene_mesh(scene: Scene, tolerance: float = 1e-3) -> trimesh.Trimesh:
    """Watertight mesh of the room or ground plus every object, world frame (z up, metres)."""
    parts = []
    env = trimesh.creation.box(extents=scene.bounds_size, transform=_pose(np.eye(3), scene.bounds_center))
    if scene.domain == "indoor":
        env.invert()  # faces point into the room, where the cameras are
    parts.append(env)
    for o in scene.objects:
        if o.category == "box":
            m = trimesh.creation.box(extents=o.size, transform=_pose(o.R, o.center))
        elif o.category == "sphere":
            m = trimesh.creation.icosphere(subdivisions=_subdivisions(o.radius, tolerance), radius=o.radius)
            m.apply_translation(o.center)
        elif o.category == "cylinder":
            m = trimesh.creation.cylinder(radius=o.radius, height=o.height,
                                          sections=_sections(o.radius, tolerance))  # centred on the origin
            m.apply_translation(o.center)
        else:
            m = trimesh.creation.cone(radius=o.radius, height=o.height,
                                      sections=_sections(o.radius, tolerance))  # base at z = 0
            m.apply_translation(o.center - np.array([0.0, 0.0, o.height / 2]))
        parts.append(m)
    mesh = trimesh.util.concatenate(parts)
    return mesh
