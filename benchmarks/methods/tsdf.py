"""Classical TSDF fusion (Open3D's `ScalableTSDFVolume`, a peer nobody here wrote) of a dense-depth
method's predictions: the reconstruction peer for the recon task.

The task gives RGB only, so the depth maps and cameras to fuse come from `BASE` (G2VLM's RGB-only
network: metric depth and poses from the same views). They are integrated into a TSDF cube of
`VOXEL` m voxels (at most `MAX_RES` a side) around the predicted points, truncation 3 voxels
(`UniformTSDFVolume`: the scalable volume of Open3D 0.20 extracts nothing on this build), the
mesh extracted by marching cubes, and the point maps
are Open3D's ray casts of that mesh from the same cameras at the task's resolution (pixels whose
ray misses the mesh are invalid). Against `BASE`'s own point maps this measures what classical
fusion adds to the same predictions.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.methods import Method, Unavailable, build

BASE = "g2vlm"
VOXEL = 0.04
MAX_RES = 256


class TSDFFusionMethod(Method):
    name = "tsdf-fusion"
    paper = "peer"
    tasks = ("recon",)

    def load(self) -> None:
        try:
            import open3d as o3d
        except ImportError as exc:
            raise Unavailable(f"open3d is not importable ({exc})") from exc
        self.o3d = o3d
        self.base = build(BASE, checkpoint=self.checkpoint, train_missing=self.train_missing)
        self.base.load()  # raises Unavailable with the base's reason

    def parameters(self) -> int | None:
        return None

    def fuse(self, q) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """-> (points [V, H, W, 3], valid [V, H, W], mesh (vertices, faces)) in the base method's frame."""
        from common.cameras import resize_intrinsics

        o3d = self.o3d
        depth, w2c, world, _ = self.base.rgb_only(q)  # [V, S, S] metres, [V, 4, 4], [V, S, S, 3]
        V, S = depth.shape[0], depth.shape[-1]
        H, W = q.images.shape[-2:]
        K_s = resize_intrinsics(q.K, (H, W), (S, S)).double().numpy()
        rgb = torch.nn.functional.interpolate(q.images, size=(S, S), mode="bilinear", antialias=True)
        pts = world.reshape(-1, 3).double().numpy()
        lo, hi = pts.min(0) - 4 * VOXEL, pts.max(0) + 4 * VOXEL
        length = float((hi - lo).max())
        volume = o3d.pipelines.integration.UniformTSDFVolume(
            length=length,
            resolution=int(min(MAX_RES, np.ceil(length / VOXEL))),
            sdf_trunc=3 * max(VOXEL, length / MAX_RES),
            color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
            origin=lo.reshape(3, 1),
        )
        for v in range(V):
            color = o3d.geometry.Image(
                np.ascontiguousarray((rgb[v].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
            )
            d = o3d.geometry.Image(np.ascontiguousarray(depth[v].float().numpy()))
            rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
                color, d, depth_scale=1.0, depth_trunc=1e3, convert_rgb_to_intensity=False
            )
            k = K_s[v]
            intr = o3d.camera.PinholeCameraIntrinsic(S, S, k[0, 0], k[1, 1], k[0, 2], k[1, 2])
            volume.integrate(rgbd, intr, w2c[v].double().numpy())
        mesh = volume.extract_triangle_mesh()
        points = torch.zeros(V, H, W, 3)
        valid = torch.zeros(V, H, W, dtype=torch.bool)
        surface = (np.asarray(mesh.vertices), np.asarray(mesh.triangles))
        if len(mesh.triangles) == 0:
            return points, valid, surface
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
        for v in range(V):
            rays = o3d.t.geometry.RaycastingScene.create_rays_pinhole(
                intrinsic_matrix=o3d.core.Tensor(q.K[v].double().numpy()),
                extrinsic_matrix=o3d.core.Tensor(w2c[v].double().numpy()),
                width_px=W,
                height_px=H,
            )
            hit = scene.cast_rays(rays)["t_hit"].numpy()  # [H, W], inf where the ray misses
            r = rays.numpy()  # [H, W, 6]: origin, direction
            ok = np.isfinite(hit)
            pts = r[..., :3] + np.where(ok, hit, 0.0)[..., None] * r[..., 3:]
            points[v], valid[v] = torch.from_numpy(pts).float(), torch.from_numpy(ok)
        return points, valid, surface

    def answer(self, task: str, queries: list) -> list:
        from benchmarks.tasks.recon import ReconAnswer

        return [ReconAnswer(*self.fuse(q)) for q in queries]  # points, valid, mesh
