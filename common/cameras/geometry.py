"""Pinhole intrinsics, projection, poses and rays (conventions: common.cameras)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_shape(name: str, x, trailing: tuple) -> None:
    """Raise ValueError unless `x` is a tensor of shape [..., *trailing] (str entries: any size)."""
    expected = "[..., " + ", ".join(str(t) for t in trailing) + "]"
    if not torch.is_tensor(x):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    shape = tuple(x.shape)
    if len(shape) < len(trailing) or any(
        isinstance(t, int) and s != t for s, t in zip(shape[len(shape) - len(trailing):], trailing)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {list(shape)}")


def _broadcast_shapes(*shapes) -> tuple:
    """torch.broadcast_shapes without its first-call import of sympy (~0.3 s per process)."""
    out = []
    for i in range(1, max(len(s) for s in shapes) + 1):
        sizes = {s[-i] for s in shapes if len(s) >= i} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(reversed(out))


# ----------------------------------------------------------------------------------------------
# Intrinsics
# ----------------------------------------------------------------------------------------------


def make_K(fx, fy, cx, cy) -> torch.Tensor:
    """Pinhole intrinsics from focal lengths and principal point (floats or tensors [...]).

    Returns K [..., 3, 3]; dtype/device follow the first tensor argument (default dtype if none).
    """
    ref = next((v for v in (fx, fy, cx, cy) if torch.is_tensor(v)), None)
    floating = ref is not None and ref.is_floating_point()
    dtype = ref.dtype if floating else torch.get_default_dtype()
    device = ref.device if ref is not None else None
    fx, fy, cx, cy = torch.broadcast_tensors(
        *(torch.as_tensor(v, dtype=dtype, device=device) for v in (fx, fy, cx, cy))
    )
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [fx, zero, cx, zero, fy, cy, zero, zero, one]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))  # [..., 3, 3]


def intrinsics_from_fov(fov_x, fov_y, width: int, height: int) -> torch.Tensor:
    """K [..., 3, 3] from full fields of view (radians, floats or tensors [...]).

    The principal point is the image centre (W/2, H/2); fx = (W/2) / tan(fov_x/2).
    """
    ref = fov_x if torch.is_tensor(fov_x) else fov_y
    floating = torch.is_tensor(ref) and ref.is_floating_point()
    dtype = ref.dtype if floating else torch.get_default_dtype()
    device = ref.device if torch.is_tensor(ref) else None
    fov_x = torch.as_tensor(fov_x, dtype=dtype, device=device)
    fov_y = torch.as_tensor(fov_y, dtype=dtype, device=device)
    fx = 0.5 * width / torch.tan(0.5 * fov_x)
    fy = 0.5 * height / torch.tan(0.5 * fov_y)
    return make_K(fx, fy, 0.5 * width, 0.5 * height)


def fov_from_intrinsics(K: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Full fields of view (fov_x [...], fov_y [...]) in radians of an image of size (height, width).

    Measured from the left edge to the right edge, so an off-centre principal point is handled:
    fov_x = atan(cx / fx) + atan((W - cx) / fx), which is 2 atan(W / (2 fx)) when cx = W/2.
    """
    _check_shape("K", K, (3, 3))
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    fov_x = torch.atan(cx / fx) + torch.atan((width - cx) / fx)
    fov_y = torch.atan(cy / fy) + torch.atan((height - cy) / fy)
    return fov_x, fov_y


def pixel_centers(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Continuous coordinates (u + 0.5, v + 0.5) of every pixel centre, [H, W, 2] with x first."""
    v = torch.arange(height, device=device, dtype=dtype) + 0.5  # [H]
    u = torch.arange(width, device=device, dtype=dtype) + 0.5  # [W]
    vv, uu = torch.meshgrid(v, u, indexing="ij")  # [H, W] each
    return torch.stack([uu, vv], dim=-1)  # [H, W, 2]


# ----------------------------------------------------------------------------------------------
# Projection and poses
# ----------------------------------------------------------------------------------------------


def _unproject_z1(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points at depth 1 seen at pixels uv [..., N, 2]: inv(K) @ [u, v, 1], [..., N, 3].

    Closed form for an upper-triangular K (exact, no matrix inverse).
    """
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]  # [..., 1]
    skew, cx, cy = K[..., 0, 1, None], K[..., 0, 2, None], K[..., 1, 2, None]  # [..., 1]
    y = (uv[..., 1] - cy) / fy  # [..., N]
    x = (uv[..., 0] - cx - skew * y) / fx  # [..., N]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [..., N, 3]


def _pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """4x4 transforms [..., 4, 4] from rotations R [..., 3, 3] and translations t [..., 3]."""
    T = R.new_zeros(*_broadcast_shapes(R.shape[:-2], t.shape[:-1]), 4, 4)  # [..., 4, 4]
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def project(points_cam: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates uv [..., N, 2] of camera-frame points [..., N, 3].

    Plain perspective divide: points behind the camera or at z = 0 are not clamped or masked
    (they give mirrored or infinite coordinates); the caller masks them with `z > 0`.
    """
    _check_shape("points_cam", points_cam, ("N", 3))
    _check_shape("K", K, (3, 3))
    p = points_cam @ K.transpose(-1, -2)  # [..., N, 3]
    return p[..., :2] / p[..., 2:3]


def unproject(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Camera-frame points [..., N, 3] at pixels uv [..., N, 2] with z-depth [..., N]."""
    _check_shape("uv", uv, ("N", 2))
    _check_shape("K", K, (3, 3))
    if not torch.is_tensor(depth) or depth.ndim < 1 or depth.shape[-1] != uv.shape[-2]:
        got = list(depth.shape) if torch.is_tensor(depth) else type(depth).__name__
        raise ValueError(f"depth must have shape [..., N] with N = {uv.shape[-2]} (from uv), got {got}")
    return depth[..., None] * _unproject_z1(uv, K)


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply rigid/affine transforms T [..., 4, 4] to points [..., N, 3]; returns [..., N, 3]."""
    _check_shape("T", T, (4, 4))
    _check_shape("points", points, ("N", 3))
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def invert_pose(T: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid transforms [..., 4, 4]: [R^T, -R^T t; 0, 1]."""
    _check_shape("T", T, (4, 4))
    R_inv = T[..., :3, :3].transpose(-1, -2)  # [..., 3, 3]
    return _pose(R_inv, -(R_inv @ T[..., :3, 3:4])[..., 0])


def camera_centers(w2c: torch.Tensor) -> torch.Tensor:
    """World positions [..., 3] of the cameras w2c [..., 4, 4]: -R^T t."""
    _check_shape("w2c", w2c, (4, 4))
    return -(w2c[..., :3, :3].transpose(-1, -2) @ w2c[..., :3, 3:4])[..., 0]


def relative_pose(w2c_a: torch.Tensor, w2c_b: torch.Tensor) -> torch.Tensor:
    """w2c_b @ inv(w2c_a) [..., 4, 4]: maps camera-a coordinates to camera-b coordinates.

    `relative_pose(w2c[0], w2c)` re-expresses all cameras with the first camera as the world.
    """
    _check_shape("w2c_a", w2c_a, (4, 4))
    _check_shape("w2c_b", w2c_b, (4, 4))
    return w2c_b @ invert_pose(w2c_a)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """w2c [..., 4, 4] of cameras at eye [..., 3] looking at target [..., 3].

    Camera z points at the target, camera y ("down" in the image) points against `up` [..., 3],
    x = y cross z completes a right-handed frame. Raises ValueError where up is parallel to the
    viewing direction or eye == target.
    """
    for name, x in (("eye", eye), ("target", target), ("up", up)):
        _check_shape(name, x, (3,))
    eye, target, up = torch.broadcast_tensors(eye, target, up)
    forward = target - eye  # [..., 3]
    right = torch.cross(forward, up, dim=-1)  # [..., 3]; = (-up) x forward up to scale
    f_norm = forward.norm(dim=-1, keepdim=True)  # [..., 1]
    r_norm = right.norm(dim=-1, keepdim=True)  # [..., 1]
    if bool((r_norm <= 1e-9 * f_norm * up.norm(dim=-1, keepdim=True)).any()) or bool((f_norm == 0).any()):
        raise ValueError("look_at: up must not be parallel to target - eye, and eye must differ from target")
    z = forward / f_norm
    x = right / r_norm
    y = torch.cross(z, x, dim=-1)  # [..., 3], unit since z and x are orthonormal
    R = torch.stack([x, y, z], dim=-2)  # [..., 3, 3], rows are the camera axes in world
    return _pose(R, -(R @ eye[..., None])[..., 0])


def pixel_rays(K: torch.Tensor, w2c: torch.Tensor, height: int,
               width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays through every pixel centre.

    K [..., 3, 3], w2c [..., 4, 4] -> origins [..., H, W, 3] (the camera centre) and unit
    directions [..., H, W, 3].
    """
    _check_shape("K", K, (3, 3))
    _check_shape("w2c", w2c, (4, 4))
    batch = _broadcast_shapes(K.shape[:-2], w2c.shape[:-2])
    uv = pixel_centers(height, width, device=K.device, dtype=K.dtype).reshape(-1, 2)  # [H*W, 2]
    dirs_cam = _unproject_z1(uv, K)  # [..., H*W, 3]
    dirs = dirs_cam @ w2c[..., :3, :3]  # [..., H*W, 3]; row-vector form of R^T d
    dirs = F.normalize(dirs, dim=-1).unflatten(-2, (height, width))  # [..., H, W, 3]
    dirs = dirs.expand(*batch, height, width, 3)
    origins = camera_centers(w2c)[..., None, None, :].expand_as(dirs)  # [..., H, W, 3]
    return origins, dirs


def depth_to_points(depth: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor | None = None) -> torch.Tensor:
    """Back-project a z-depth map [..., H, W] to points [..., H, W, 3].

    Camera frame when w2c is None, else world frame (w2c [..., 4, 4]). Invalid depth 0 gives the
    camera centre; mask it with `depth > 0`.
    """
    _check_shape("depth", depth, ("H", "W"))
    _check_shape("K", K, (3, 3))
    H, W = depth.shape[-2:]
    uv = pixel_centers(H, W, device=depth.device, dtype=K.dtype).reshape(-1, 2)  # [H*W, 2]
    rays = _unproject_z1(uv, K)  # [..., H*W, 3]
    points = depth.flatten(-2)[..., None] * rays  # [..., H*W, 3]
    if w2c is not None:
        _check_shape("w2c", w2c, (4, 4))
        points = transform_points(invert_pose(w2c), points)
    return points.unflatten(-2, (H, W))  # [..., H, W, 3]


def _ray_length_per_depth(K: torch.Tensor, height: int, width: int, device) -> torch.Tensor:
    """|inv(K) [u, v, 1]| at every pixel centre, [..., H, W]: distance = depth * this."""
    uv = pixel_centers(height, width, device=device, dtype=K.dtype).reshape(-1, 2)  # [H*W, 2]
    return _unproject_z1(uv, K).norm(dim=-1).unflatten(-1, (height, width))  # [..., H, W]


def depth_to_distance(depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Distance along the ray [..., H, W] from z-depth [..., H, W] (0 stays 0)."""
    _check_shape("depth", depth, ("H", "W"))
    _check_shape("K", K, (3, 3))
    return depth * _ray_length_per_depth(K, *depth.shape[-2:], depth.device)


def distance_to_depth(distance: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """z-depth [..., H, W] from distance along the ray [..., H, W] (0 stays 0)."""
    _check_shape("distance", distance, ("H", "W"))
    _check_shape("K", K, (3, 3))
    return distance / _ray_length_per_depth(K, *distance.shape[-2:], distance.device)
