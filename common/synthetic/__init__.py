"""Procedural benchmark scenes with exact ground truth: the project's embedded default data.

World frame: metres, z up; the floor (indoor) or the ground (outdoor) is the plane z = 0 and each
scene is centred on the z axis. Cameras are OpenCV (x right, y down, z forward) with w2c
world-to-camera poses and pixel centres at (u + 0.5, v + 0.5), as everywhere in the project.

Two domains: indoor rooms (a closed box of 4-6.5 m x 4-6.5 m x 2.6-3.2 m, depth 0.3-10 m) and
outdoor yards (a ground slab of 90 m x 90 m under an open sky: sky pixels have depth 0, invalid,
instance 0; depth 1-80 m). Objects are boxes (with a yaw), spheres, upright capped cylinders and
cones, resting on z = 0 without touching each other, each with an id >= 1, a category, a colour
from `PALETTE` and an oriented bounding box. Views are rendered by exact ray casting
(`render_views`), the mesh is within 1 mm of the analytic surfaces (`scene_mesh`).

    sample, mesh = generate_scene(seed=0, domain="indoor", num_views=8, size=128)
    out = render_views(Scene.from_annotations(sample.annotations), K, w2c, H, W)  # novel views
    generate_split("data/synthetic", "test", scenes=32, views=8, size=128, seed=0)

Scenes are deterministic per (GENERATOR_VERSION, seed); scene i of a split uses the seed
`scene_seed(seed, split, i)`, so splits never share scenes and the test split is fixed.
"""

from common.synthetic.generate import (
    DEPTH_RANGE,
    DEPTH_SCALE,
    GENERATOR_NAME,
    GENERATOR_VERSION,
    generate_scene,
    generate_split,
    scene_seed,
)
from common.synthetic.mesh import scene_mesh
from common.synthetic.render import render_views
from common.synthetic.scene import CATEGORIES, PALETTE, Primitive, Scene, sample_scene

__all__ = [
    "GENERATOR_NAME", "GENERATOR_VERSION", "DEPTH_RANGE", "DEPTH_SCALE", "CATEGORIES", "PALETTE",
    "Primitive", "Scene", "sample_scene", "render_views", "scene_mesh", "generate_scene", "generate_split",
    "scene_seed",
]
