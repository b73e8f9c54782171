"""Camera intrinsics and paths (orbit or forward) for a scene, OpenCV w2c, world z up."""

from __future__ import annotations

import math

import numpy as np
import torch

from common import cameras
from common.synthetic.scene import Scene

UP = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def sample_intrinsics(rng: np.random.Generator, height: int, width: int) -> tuple[torch.Tensor, dict]:
    """One K [3, 3] (float64) per scene: horizontal field of view 50-80 degrees; 40% of scenes
    have fx != fy (up to 4%), 50% an off-centre principal point (up to 5% of the image size)."""
    fov_x = math.radians(rng.uniform(50, 80))
    fx = 0.5 * width / math.tan(0.5 * fov_x)
    fy = fx * (1 + rng.uniform(-0.04, 0.04)) if rng.random() < 0.4 else fx
    cx, cy = 0.5 * width, 0.5 * height
    if rng.random() < 0.5:
        cx += rng.uniform(-0.05, 0.05) * width
        cy += rng.uniform(-0.05, 0.05) * height
    K = cameras.make_K(torch.tensor(fx, dtype=torch.float64), fy, cx, cy)
    return K, {"fov_x_deg": math.degrees(fov_x)}


def camera_is_clear(scene: Scene, eye: np.ndarray) -> bool:
    """Inside the room (0.5 m from every wall, floor and ceiling) or 1 m above the ground and
    within 16 m of the z axis outdoors, and 0.5 m (indoor) / 1.5 m (outdoor) from every object box."""
    if scene.domain == "indoor":
        lo = scene.bounds_center - scene.bounds_size / 2 + 0.5
        hi = scene.bounds_center + scene.bounds_size / 2 - 0.5
        if (eye < lo).any() or (eye > hi).any():
            return False
        clearance = 0.5
    else:
        if eye[2] < 1.0 or eye[2] > 9.0 or np.hypot(eye[0], eye[1]) > 16.0:
            return False
        clearance = 1.5
    return all(o.distance_to_box(eye) >= clearance for o in scene.objects)


def orbit_path(rng: np.random.Generator, scene: Scene, num_views: int):
    """Eyes on an ellipse about the z axis over an arc, height varying, looking at the centre."""
    V = num_views
    if scene.domain == "indoor":
        half = scene.bounds_size[:2] / 2 - 0.6
        radii = half * rng.uniform(0.75, 1.0, size=2)
        h0, amp = rng.uniform(1.2, 1.9), rng.uniform(0.0, 0.3)
        target = np.array([*rng.uniform(-0.3, 0.3, size=2), rng.uniform(0.3, 0.8)])
    else:
        radii = np.full(2, rng.uniform(11.0, 15.0)) * np.array([1.0, rng.uniform(0.9, 1.0)])
        h0, amp = rng.uniform(2.0, 6.0), rng.uniform(0.0, 1.5)
        target = np.array([*rng.uniform(-1.0, 1.0, size=2), rng.uniform(0.5, 1.5)])
    start, arc = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(60, 200)) * rng.choice([-1, 1])
    phase = rng.uniform(0, 2 * math.pi)
    s = np.linspace(0, 1, V) if V > 1 else np.zeros(1)
    angle = start + arc * s  # [V]
    eyes = np.stack([radii[0] * np.cos(angle), radii[1] * np.sin(angle),
                     h0 + amp * np.sin(2 * math.pi * s + phase)], axis=-1)  # [V, 3]
    targets = np.repeat(target[None], V, axis=0)  # [V, 3]
    return eyes, targets, {"kind": "orbit", "radii": radii.tolist(), "target": target.tolist(),
                           "arc_deg": math.degrees(arc)}


def forward_path(rng: np.random.Generator, scene: Scene, num_views: int):
    """Walking (indoor) or driving (outdoor) along a straight line, looking ahead and a little
    down, with a small sway of the heading. None where the drawn line is not clear."""
    V = num_views
    if scene.domain == "indoor":
        # From near a wall towards the middle of the room, where the objects are.
        half = scene.bounds_size[:2] / 2 - 0.7
        phi = rng.uniform(0, 2 * math.pi)
        ray = np.array([math.cos(phi), math.sin(phi)])
        start = ray * float(np.min(half / np.maximum(np.abs(ray), 1e-9)))  # on the inset rectangle
        aim = rng.uniform(-0.3, 0.3, size=2) * half
        heading = math.atan2(*(aim - start)[::-1]) + math.radians(rng.uniform(-15, 15))
        start = np.array([start[0], start[1], rng.uniform(1.3, 1.8)])
        step, pitch, bob = rng.uniform(0.15, 0.3), math.radians(rng.uniform(10, 25)), 0.03
    else:
        heading = rng.uniform(0, 2 * math.pi)
        ahead = np.array([math.cos(heading), math.sin(heading), 0.0])
        side = np.array([-ahead[1], ahead[0], 0.0])
        start = -rng.uniform(8.0, 13.0) * ahead + rng.uniform(-7.0, 7.0) * side
        start[2] = rng.uniform(1.5, 2.5)
        step, pitch, bob = rng.uniform(1.0, 2.0), math.radians(rng.uniform(3, 12)), 0.0
    ahead = np.array([math.cos(heading), math.sin(heading), 0.0])
    s = np.arange(V, dtype=np.float64)
    eyes = start + s[:, None] * step * ahead  # [V, 3]
    eyes[:, 2] += bob * np.sin(s * 1.7)
    sway = np.radians(rng.uniform(-4, 4, size=V))  # [V] heading wobble of the gaze
    down = np.full(V, -math.tan(pitch))
    look = np.stack([np.cos(heading + sway), np.sin(heading + sway), down], -1)  # [V, 3] gaze directions
    targets = eyes + 3.0 * look
    if not all(camera_is_clear(scene, e) for e in eyes):
        return None
    return eyes, targets, {"kind": "forward", "heading_deg": math.degrees(heading), "step": float(step),
                           "pitch_deg": math.degrees(pitch)}


def sample_path(rng: np.random.Generator, scene: Scene, num_views: int):
    """Orbit or forward path (half the scenes each); eyes [V, 3], w2c [V, 4, 4] float64, info.

    Forward lines are redrawn up to 30 times and orbits up to 100 times until every camera is
    clear (`camera_is_clear`); the caller still checks the rendered depth range.
    """
    kind = "forward" if rng.random() < 0.5 else "orbit"
    path = None
    if kind == "forward":
        for _ in range(30):
            path = forward_path(rng, scene, num_views)
            if path is not None:
                break
    if path is None:
        for _ in range(100):
            path = orbit_path(rng, scene, num_views)
            if all(camera_is_clear(scene, e) for e in path[0]):
                break
        else:
            raise RuntimeError(f"no clear orbit found for scene seed {scene.seed}")
    eyes, targets, info = path
    w2c = cameras.look_at(torch.from_numpy(eyes), torch.from_numpy(targets), UP.expand(len(eyes), 3))
    return eyes, w2c, info
