"""Depth maps of a triangle mesh by ray casting (NVIDIA Warp's BVH, CPU or CUDA).

The mesh evaluation protocol (`ivgt.evaluate`) renders every method's mesh from the input
cameras, as the ScanNet protocol re-fuses the predicted mesh from depth rendered at the GT poses.
"""

from __future__ import annotations

import numpy as np
import torch

from common.cameras import pixel_rays

_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        import warp as wp

        wp.config.quiet = True
        wp.init()

        @wp.kernel
        def cast(mesh: wp.uint64, origins: wp.array(dtype=wp.vec3), dirs: wp.array(dtype=wp.vec3),
                 max_t: float, out: wp.array(dtype=float)):
            i = wp.tid()
            q = wp.mesh_query_ray(mesh, origins[i], dirs[i], max_t)
            if q.result:
                out[i] = q.t
            else:
                out[i] = 0.0

        _KERNEL = cast
    return _KERNEL


def mesh_depth(vertices, faces, K: torch.Tensor, w2c: torch.Tensor, height: int, width: int,
               max_distance: float = 1e4) -> torch.Tensor:
    """z-depth [V, H, W] of the first mesh hit along each pixel-centre ray (0 where none).

    vertices [N, 3], faces [F, 3] (numpy or torch); K [V, 3, 3], w2c [V, 4, 4] (OpenCV)."""
    import warp as wp

    kernel = _kernel()
    V = K.shape[0]
    faces = np.asarray(faces, dtype=np.int32)
    if len(faces) == 0:
        return torch.zeros(V, height, width)
    mesh = wp.Mesh(points=wp.array(np.asarray(vertices, dtype=np.float32), dtype=wp.vec3, device="cpu"),
                   indices=wp.array(faces.reshape(-1), dtype=wp.int32, device="cpu"))
    origins, dirs = pixel_rays(K.float().cpu(), w2c.float().cpu(), height, width)  # [V, H, W, 3]
    n = V * height * width
    out = wp.zeros(n, dtype=float, device="cpu")
    wp.launch(kernel, dim=n, device="cpu", inputs=[
        mesh.id, wp.array(origins.reshape(-1, 3).numpy(), dtype=wp.vec3, device="cpu"),
        wp.array(dirs.reshape(-1, 3).numpy(), dtype=wp.vec3, device="cpu"), float(max_distance), out])
    distance = torch.from_numpy(out.numpy().copy()).reshape(V, height, width)  # along the unit ray
    z_axis = w2c[:, 2, :3].float().cpu()  # [V, 3] camera z axis in the world
    cos = (dirs * z_axis[:, None, None]).sum(-1)  # [V, H, W]
    return distance * cos
