"""COLMAP through `pycolmap` (a peer nobody here wrote): SIFT features, exhaustive matching and
incremental mapping with the known intrinsics held fixed, on the task's views as PNG files.

Pose: the registered views' world-to-camera matrices; views COLMAP does not register are reported
as such (the task counts their pairs as failed and shows the registered fraction). Reconstruction:
a sparse point map: each registered view's keypoints that triangulated carry their 3D point, every
other pixel is invalid. The views are upsampled `UPSAMPLE` times (bilinear, K scaled) before SIFT,
which finds too few features on 128 px renders; the points are put back at the original pixels.
The mapper's thresholds are lowered for the few matches such renders give (see `reconstruct`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.methods import Method, Unavailable

UPSAMPLE = 4


class COLMAPMethod(Method):
    name = "colmap"
    paper = "peer"
    tasks = ("pose", "recon")

    def load(self) -> None:
        try:
            import pycolmap
        except ImportError as exc:
            raise Unavailable(f"pycolmap is not installed ({exc})") from exc
        self.pycolmap = pycolmap
        self._cache = {}

    def reconstruct(self, scene_id: str, images: torch.Tensor, K: torch.Tensor) -> tuple:
        """-> (w2c [V, 4, 4], registered [V] bool, points [V, H, W, 3], valid [V, H, W] bool)."""
        if scene_id in self._cache:
            return self._cache[scene_id]
        pc = self.pycolmap
        V, _, H, W = images.shape
        big = F.interpolate(images, scale_factor=UPSAMPLE, mode="bilinear", align_corners=False).clamp(0, 1)
        fx, fy, cx, cy = (
            float(K[0, 0, 0]) * UPSAMPLE,
            float(K[0, 1, 1]) * UPSAMPLE,
            float(K[0, 0, 2]) * UPSAMPLE,
            float(K[0, 1, 2]) * UPSAMPLE,
        )
        w2c = torch.eye(4).repeat(V, 1, 1)
        registered = np.zeros(V, bool)
        points = torch.zeros(V, H, W, 3)
        valid = torch.zeros(V, H, W, dtype=torch.bool)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "images").mkdir()
            for v in range(V):
                arr = (big[v].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(arr).save(tmp / "images" / f"{v:03d}.png")
            reader = pc.ImageReaderOptions()
            reader.camera_model = "PINHOLE"
            reader.camera_params = f"{fx},{fy},{cx},{cy}"
            db = tmp / "database.db"
            pc.extract_features(
                db,
                tmp / "images",
                camera_mode=pc.CameraMode.SINGLE,
                reader_options=reader,
                device=pc.Device.cpu,
            )
            pc.match_exhaustive(db, device=pc.Device.cpu)
            options = pc.IncrementalPipelineOptions()
            options.ba_refine_focal_length = False
            options.ba_refine_principal_point = False
            options.ba_refine_extra_params = False
            options.min_model_size = 2
            # COLMAP's defaults are tuned for photos with thousands of features; 4 renders of 128 px
            # give tens of matches, so the two-view initialisation and registration thresholds are
            # lowered (defaults: 100 initial inliers, 30 per registration, 15 matches, 16 deg angle).
            options.min_num_matches = 8
            options.mapper.init_min_num_inliers = 20
            options.mapper.abs_pose_min_num_inliers = 10
            options.mapper.init_min_tri_angle = 4.0
            (tmp / "sparse").mkdir()
            models = pc.incremental_mapping(db, tmp / "images", tmp / "sparse", options=options)
            if models:
                rec = max(models.values(), key=lambda r: r.num_reg_images())
                for image in rec.images.values():
                    if not image.has_pose:
                        continue
                    v = int(Path(image.name).stem)
                    registered[v] = True
                    w2c[v, :3] = torch.from_numpy(np.asarray(image.cam_from_world().matrix())).float()
                    for p2d in image.points2D:
                        if p2d.has_point3D():
                            x, y = int(p2d.xy[0] / UPSAMPLE), int(p2d.xy[1] / UPSAMPLE)
                            if 0 <= x < W and 0 <= y < H:
                                points[v, y, x] = torch.from_numpy(
                                    np.asarray(rec.points3D[p2d.point3D_id].xyz)
                                )
                                valid[v, y, x] = True
        self._cache[scene_id] = (w2c, registered, points, valid)
        return self._cache[scene_id]

    def answer(self, task: str, queries: list) -> list:
        from benchmarks.tasks.pose import PoseAnswer
        from benchmarks.tasks.recon import ReconAnswer

        out = []
        for q in queries:
            w2c, registered, points, valid = self.reconstruct(q.scene_id, q.images, q.K)
            out.append(PoseAnswer(w2c, registered) if task == "pose" else ReconAnswer(points, valid))
        return out
