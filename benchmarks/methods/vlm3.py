"""VLM3 (`vlm3/`): 3D answers as text, through its own `vlm3.demo.Predictor` (focal-length unification,
text pixel coordinates, its parsers).

- Depth at the query pixels: one prompt per pixel (its evaluation's single-point questions,
  batched per view). VLM3 answers the ray distance ("how far ... from the camera", its and
  DepthLM's label); the adapter turns it into z-depth with the view's own K (the ray is the same
  before and after focal unification). No dense map: VLM3 answers points.
- Pose: each view is asked against view 0 (yaw / pitch / roll and the translation direction and
  distance, `vlm3.data.pose_targets` convention); view 0 is the world frame. A view whose answer
  does not parse counts as unregistered.
- QA: the question about one view (the one it names, else view 0), as text.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.methods import Method, Unavailable, find_run

RUNS = ["results/vlm3/vlm3/checkpoint", "results/vlm3/run/checkpoint", "results/vlm3/benchmark/checkpoint"]


def distance_to_z(distance: np.ndarray, pixels: np.ndarray, K: torch.Tensor) -> np.ndarray:
    """Ray distances [N] at integer pixels [N, 2] (x, y; centres at +0.5) -> z-depth [N]."""
    Kinv = np.linalg.inv(K.double().numpy())
    rays = np.c_[pixels + 0.5, np.ones(len(pixels))] @ Kinv.T  # [N, 3] with z = 1
    return distance / np.linalg.norm(rays, axis=1)


def pose_from_answer(ypr, direction, distance) -> np.ndarray | None:
    """w2c [4, 4] of the second camera with the first at the identity: R21 = R1 R2^T is its
    orientation in camera 1's frame, t = R1 (C2 - C1) its centre there (`vlm3.data.pose_targets`)."""
    from vlm3.data import ypr_to_matrix

    if ypr is None or direction is None:
        return None
    R2 = ypr_to_matrix(ypr).T
    C2 = np.asarray(direction, float) * (distance if distance else 1.0)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R2, -R2 @ C2
    return w2c


class VLM3Method(Method):
    name = "vlm3"
    paper = "vlm3"
    tasks = ("depth", "pose", "qa")

    def load(self) -> None:
        from vlm3.demo import SETTINGS_FILE, Predictor

        path = self.checkpoint or find_run(RUNS, SETTINGS_FILE)
        if path is None and self.train_missing:
            from pathlib import Path

            import vlm3
            from vlm3.config import load_config
            from vlm3.train import train

            tiny = Path(vlm3.__file__).parent / "configs" / "tiny.yaml"
            train(load_config(tiny, ["train.out_dir=results/vlm3/benchmark"]), progress=False)
            path = find_run(RUNS[-1:], SETTINGS_FILE)
        if path is None:
            raise Unavailable(f"no trained run (looked for {RUNS[0]}; run make reproduce-vlm3)")
        self.predictor = Predictor.load(path)
        self.model = self.predictor.vlm.model  # transformers' Qwen3-VL module

    def answer(self, task: str, queries: list) -> list:
        from benchmarks.tasks.depth import DepthAnswer
        from benchmarks.tasks.pose import PoseAnswer

        p = self.predictor
        out = []
        for q in queries:
            if task == "depth":
                at = np.zeros(len(q.pixels))
                for v in range(q.images.shape[0]):
                    rows = np.nonzero(q.pixels[:, 0] == v)[0]
                    xy = q.pixels[rows][:, 1:3]
                    values, _ = p.depth(q.images[v], q.K[v].double(), xy, one_prompt=False)
                    d = np.array([np.nan if x is None else x for x in values], float)
                    if p.settings.get("depth_target", "distance") == "distance":
                        d = distance_to_z(d, xy, q.K[v])
                    at[rows] = np.nan_to_num(d, nan=0.0)  # unparsed: 0, scored as a miss
                out.append(DepthAnswer(at_pixels=at))
            elif task == "pose":
                V = q.images.shape[0]
                w2c, reg = np.tile(np.eye(4), (V, 1, 1)), np.ones(V, bool)
                for v in range(1, V):
                    ans = p.pose(q.images[0], q.K[0].double(), q.images[v], q.K[v].double())
                    T = pose_from_answer(ans["ypr"][0], ans["direction"][0], ans["distance"][0])
                    if T is None:
                        reg[v] = False
                    else:
                        w2c[v] = T
                out.append(PoseAnswer(torch.from_numpy(w2c), reg))
            else:
                v = q.view if q.view is not None else 0
                img, _ = p._input(q.images[v], q.K[v].double(), p.settings["focal_depth"])
                out.append(p.ask([img], q.question))
        return out
