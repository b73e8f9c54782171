"""IVGT (`ivgt/`): poses, depth and point maps from unposed views, two ways.

- `ivgt`: the continuous scene (the paper's representation): depth and point maps are the SDF's
  surface rendered by sphere tracing at the predicted cameras of the input views;
- `ivgt-explicit`: the depth head's per-view depth unprojected with the same cameras and fused by
  concatenation (the explicit point-map representation the IVGT paper argues against).
IVGT's world is the first camera's frame in normalised units (no metric scale): its depth is
scale-free (scored after median alignment), its point maps after the task's Sim(3) alignment.
The views are resized by `IVGT.reconstruct` to the backbone's size (64 px in tiny.yaml); the SDF
is rendered at `RENDER` px and both outputs come back to the task's size by nearest upsampling.
For the recon figure, `ivgt` also answers its marching-cubes mesh (coarse-to-fine at `MESH_RES`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.methods import Method, Unavailable, find_run
from common.cameras import depth_to_points, resize_intrinsics

RUNS = ["results/ivgt/run/model", "results/ivgt/benchmark/model"]
RENDER = 64
MESH_RES = 48


def _up(x: torch.Tensor, size) -> torch.Tensor:
    """[V, h, w] -> [V, H, W] nearest."""
    return F.interpolate(x[:, None].float(), size=tuple(size), mode="nearest")[:, 0]


class IVGTMethod(Method):
    name = "ivgt"
    paper = "ivgt"
    tasks = ("depth", "pose", "recon", "nvs")
    explicit = False

    def load(self) -> None:
        from ivgt.model import IVGT

        path = self.checkpoint or find_run(RUNS, "config.json")
        if path is None and self.train_missing:
            import ivgt
            from ivgt.config import load_config
            from ivgt.train import train

            tiny = Path(ivgt.__file__).parent / "configs" / "tiny.yaml"
            cfg = load_config(tiny, ["train.output_dir=results/ivgt/benchmark"])
            train(cfg, progress=False)
            path = Path("results/ivgt/benchmark/model")
        if path is None:
            raise Unavailable(f"no trained run (looked for {RUNS[0]}; run make reproduce-ivgt)")
        self.model = IVGT.load(path).eval()
        self._cache = {}

    @torch.no_grad()
    def _predict(self, scene_id: str, images: torch.Tensor) -> tuple:
        """-> (depth [V, H, W], w2c [V, 4, 4], K [V, 3, 3], the Scene) at the images' size H, W. The
        depth, pose and recon tasks give the same views of a scene: each scene's answer is kept."""
        if scene_id in self._cache:
            return self._cache[scene_id]
        scene = self.model.reconstruct(images)
        cams = scene.cameras
        H, W = images.shape[-2:]
        if self.explicit:
            depth = _up(scene.depth, (H, W))
        else:
            K_r = resize_intrinsics(scene.K, (scene.height, scene.width), (RENDER, RENDER))
            depth = torch.stack(
                [scene.render(K_r[v], scene.w2c[v], RENDER, RENDER)["depth"] for v in range(len(K_r))]
            )
            depth = _up(depth, (H, W))
        self._cache[scene_id] = (depth.cpu(), cams["w2c"].cpu(), cams["K"].cpu(), scene)
        return self._cache[scene_id]

    @torch.no_grad()
    def _nvs(self, q) -> torch.Tensor:
        """RGB [T, 3, H, W] at the target cameras, mapped into IVGT's frame by the Sim(3) that takes
        its predicted input cameras onto the given ones (benchmarks.tasks.nvs)."""
        from benchmarks.tasks.nvs import sim3_from_cameras

        scene = self.model.reconstruct(q.images)
        s, R, t = sim3_from_cameras(scene.w2c.cpu().double(), q.w2c.double())
        R, t = torch.from_numpy(R), torch.from_numpy(t)
        H, W = q.images.shape[-2:]
        out = []
        for K_t, T in zip(q.target_K, q.target_w2c.double()):
            w2c = torch.eye(4, dtype=torch.float64)
            w2c[:3, :3], w2c[:3, 3] = T[:3, :3] @ R, (T[:3, :3] @ t + T[:3, 3]) / s
            K_r = resize_intrinsics(K_t[None], (H, W), (RENDER, RENDER))[0]
            rgb = scene.render(K_r.float(), w2c.float().to(scene.w2c.device), RENDER, RENDER)["rgb"]
            out.append(
                F.interpolate(rgb[None].float().cpu(), size=(H, W), mode="bilinear", align_corners=False)[0]
            )
        return torch.stack(out).clamp(0, 1)

    def answer(self, task: str, queries: list) -> list:
        if task == "nvs":
            return [self._nvs(q) for q in queries]
        from benchmarks.tasks.depth import DepthAnswer
        from benchmarks.tasks.pose import PoseAnswer
        from benchmarks.tasks.recon import ReconAnswer

        out = []
        for q in queries:
            depth, w2c, K, scene = self._predict(q.scene_id, q.images)
            if task == "depth":
                out.append(DepthAnswer(depth=depth, scale_free=True))
            elif task == "pose":
                out.append(PoseAnswer(w2c=w2c))
            else:
                valid = torch.isfinite(depth) & (depth > 0)
                mesh = None
                if not self.explicit:  # the scene's frame is the cameras' (first view = identity)
                    m = scene.extract_mesh(MESH_RES)
                    mesh = (m.vertices, m.faces)
                points = depth_to_points(depth.clamp_min(1e-6), K, w2c)
                out.append(ReconAnswer(points=points, valid=valid, mesh=mesh))
        return out


class IVGTExplicitMethod(IVGTMethod):
    name = "ivgt-explicit"
    tasks = ("depth", "recon")
    explicit = True
