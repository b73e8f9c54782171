"""A simulation run in the browser (`common.viewer`): the particles at every frame under a time
slider, the rendered frame beside it, the static Gaussians (support, tool) and the reference camera.

    python -m endogsim.simulate --scene synthetic --action poke --out OUT --view

Reads what `simulate.save_run` wrote (states.npz, frames/%04d.png). The scene frame is the
reference camera's (OpenCV: y down), so the viewer's up is -y.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.viewer import Viewer

from .scene import PhysicsScene, SceneError

__all__ = ["view_simulation"]


def particle_colors(scene: PhysicsScene) -> np.ndarray:
    """[P, 3] in [0, 1]: a particle carrying a Gaussian takes its colour; the filled interior a darker
    shade of its object's mean colour."""
    P = len(scene.particles.x)
    colors = np.zeros((P, 3))
    bound = scene.gaussian_particle >= 0  # [N]
    colors[scene.gaussian_particle[bound]] = scene.colors[bound]
    carried = np.zeros(P, bool)
    carried[scene.gaussian_particle[bound]] = True
    for o in np.unique(scene.particles.object_id):
        mine = scene.particles.object_id == o
        shade = colors[mine & carried].mean(0) if (mine & carried).any() else np.array([0.7, 0.4, 0.4])
        colors[mine & ~carried] = 0.6 * shade
    return np.clip(colors, 0, 1)


def view_simulation(run_dir, scene: PhysicsScene, port: int = 8080, serve: bool = True) -> Viewer:
    """Show the run in run_dir; serves until Ctrl-C unless serve=False (the caller stops the viewer)."""
    from PIL import Image

    run_dir = Path(run_dir)
    if not (run_dir / "states.npz").is_file():
        raise SceneError(f"{run_dir}: no states.npz (expected a folder written by endogsim.simulate)")
    states = np.load(run_dir / "states.npz")
    positions, times = states["positions"], states["times"]  # [F, P, 3], [F]
    if positions.shape[1] != len(scene.particles.x):
        raise SceneError(f"{run_dir}: {positions.shape[1]} particles in states.npz, the scene has "
                         f"{len(scene.particles.x)}")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((run_dir / "frames").glob("*.png"))]
    viewer = Viewer(port=port, up=(0.0, -1.0, 0.0), title="endogsim")
    try:
        viewer.add_frames("simulation", positions, particle_colors(scene), times,
                          frames if len(frames) == len(positions) else None)
        static = scene.gaussian_particle < 0  # [N] support, tool
        if static.any():
            viewer.add_point_cloud("static", scene.means[static], np.clip(scene.colors[static], 0, 1))
        viewer.add_cameras("camera", scene.K, scene.w2c, scene.height, scene.width,
                           images=frames[:1] or None, scale=0.25 * float(np.median(positions[0, :, 2])))
    except BaseException:
        viewer.stop()
        raise
    if serve:
        viewer.serve_forever("endogsim")
    return viewer
