"""Batched pinhole cameras in PyTorch: intrinsics, poses, projection, rays, rotations, converters.

Conventions (the whole monorepo uses them):

- Camera frame is OpenCV: x right, y down, z forward. Units are metres.
- Extrinsics are world-to-camera 4x4 matrices, `w2c`: `x_cam = R @ x_world + t`.
- Intrinsics `K` are 3x3 in pixels, `[[fx, s, cx], [0, fy, cy], [0, 0, 1]]` (skew `s` is usually 0).
- Pixel (row v, column u) covers the square [u, u + 1) x [v, v + 1); its centre is at continuous
  coordinates (u + 0.5, v + 0.5). The top-left corner of the image is (0, 0), as in COLMAP. With
  this convention resizing an image by W2/W scales every coordinate, cx included, by exactly W2/W.
- `uv` holds (x, y) = (column, row) continuous pixel coordinates, x first.
- `depth` is the z coordinate in the camera frame; the length along the ray is `distance`.
- Rotations are 3x3 matrices; quaternions are (w, x, y, z); axis-angle is a rotation vector
  (unit axis times angle in radians).
- Every function accepts arbitrary leading batch dims `...` (broadcast between arguments) and
  keeps the dtype and device of its inputs.

Converters to and from OpenGL/Blender cameras, LLFF `poses_bounds.npy` and COLMAP text models
are at the end, followed by image resampling and the focal-length unification of DepthLM / VLM3.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import DatasetError

__all__ = [
    "make_K", "intrinsics_from_fov", "fov_from_intrinsics", "pixel_centers",
    "project", "unproject", "transform_points", "invert_pose", "camera_centers",
    "relative_pose", "look_at", "pixel_rays", "depth_to_points", "depth_to_distance",
    "distance_to_depth", "quaternion_to_matrix", "matrix_to_quaternion",
    "axis_angle_to_matrix", "matrix_to_axis_angle", "rotation_angle",
    "relative_rotation_angle", "w2c_to_opengl_c2w", "opengl_c2w_to_w2c",
    "read_llff_poses_bounds", "write_llff_poses_bounds", "read_colmap_text",
    "write_colmap_text", "resize_intrinsics", "crop_intrinsics", "resample_to_intrinsics",
    "resize", "crop", "unify_focal", "map_pixels",
]


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


# ----------------------------------------------------------------------------------------------
# Rotations
# ----------------------------------------------------------------------------------------------


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions (w, x, y, z) [..., 4] (normalised here)."""
    _check_shape("q", q, (4,))
    w, x, y, z = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)  # [...]; 2 / |q|^2 normalises non-unit quaternions
    R = [
        1 - s * (y * y + z * z), s * (x * y - w * z), s * (x * z + w * y),
        s * (x * y + w * z), 1 - s * (x * x + z * z), s * (y * z - w * x),
        s * (x * z - w * y), s * (y * z + w * x), 1 - s * (x * x + y * y),
    ]
    return torch.stack(R, dim=-1).unflatten(-1, (3, 3))  # [..., 3, 3]


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w, x, y, z) [..., 4] with w >= 0 from rotation matrices [..., 3, 3].

    Entries of R give the symmetric matrix 4 q q^T; its row with the largest diagonal entry
    (4 q_i^2 >= 1, since the four sum to 4) is divided by 2 |q_i|. This is Shepperd's
    branch-on-the-largest-component method, accurate at every angle including 180 degrees.
    At exactly 180 degrees w = 0 and q, -q are both canonical; the sign is then the method's.
    """
    _check_shape("R", R, (3, 3))
    r = R.flatten(-2).unbind(-1)  # r[3 * i + j] = R[i, j]
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r
    Q = torch.stack([  # 4 q q^T for unit q = (w, x, y, z)
        1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01,
        r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20,
        r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21,
        r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22,
    ], dim=-1).unflatten(-1, (4, 4))  # [..., 4, 4]
    diag = Q.diagonal(dim1=-2, dim2=-1)  # [..., 4]
    best = diag.argmax(dim=-1, keepdim=True)  # [..., 1]
    row = Q.gather(-2, best[..., None].expand(*best.shape[:-1], 1, 4))[..., 0, :]  # [..., 4]
    q = row / (2 * diag.gather(-1, best).clamp_min(1e-12).sqrt())  # [..., 4]
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from rotation vectors [..., 3] (Rodrigues).

    R = I + sinc(a) [v]x + 0.5 sinc(a/2)^2 [v]x^2 with a = |v|, using torch.sinc so that it is
    exact and differentiable at a = 0.
    """
    _check_shape("rotvec", rotvec, (3,))
    angle = rotvec.norm(dim=-1)[..., None, None]  # [..., 1, 1]
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))  # [..., 3, 3]
    a = torch.sinc(angle / math.pi)  # sin(a) / a
    b = 0.5 * torch.sinc(angle / (2 * math.pi)) ** 2  # (1 - cos a) / a^2 without cancellation
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a * cross + b * (cross @ cross)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation vectors [..., 3] with angle in [0, pi] from rotation matrices [..., 3, 3].

    Goes through the (robust) quaternion: angle = 2 atan2(|xyz|, w), accurate near 0 and pi.
    At exactly pi, v and -v are the same rotation; either may be returned.
    """
    _check_shape("R", R, (3, 3))
    q = matrix_to_quaternion(R)  # [..., 4], w >= 0
    w, xyz = q[..., :1], q[..., 1:]  # [..., 1], [..., 3]
    s = xyz.norm(dim=-1, keepdim=True)  # [..., 1], sin(angle / 2)
    small = s < 1e-6
    s_safe = torch.where(small, torch.ones_like(s), s)
    factor = 2 * torch.atan2(s_safe, w) / s_safe  # angle / sin(angle / 2)
    factor_small = 2 / w * (1 - s * s / (3 * w * w))  # Taylor series of the above, error O(s^4)
    return xyz * torch.where(small, factor_small, factor)


def rotation_angle(R: torch.Tensor) -> torch.Tensor:
    """Geodesic angle [...] in radians, in [0, pi], of rotations [..., 3, 3].

    acos((trace - 1) / 2) with the cosine clamped to [-1, 1] against rounding. For metrics; as a
    loss, mind that the acos gradient is infinite at 0 and pi.
    """
    _check_shape("R", R, (3, 3))
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1.0, 1.0))


def relative_rotation_angle(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle [...] in radians between rotations R_a and R_b [..., 3, 3]."""
    _check_shape("R_a", R_a, (3, 3))
    _check_shape("R_b", R_b, (3, 3))
    cos = ((R_a * R_b).sum((-2, -1)) - 1) / 2  # trace(R_a^T R_b) = sum of elementwise products
    return torch.acos(cos.clamp(-1.0, 1.0))


# ----------------------------------------------------------------------------------------------
# Converters: OpenGL/Blender, LLFF, COLMAP
# ----------------------------------------------------------------------------------------------


def _flip_yz(T: torch.Tensor) -> torch.Tensor:
    """T @ diag(1, -1, -1, 1): negates the y and z axis columns (OpenCV <-> OpenGL camera axes)."""
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=T.dtype, device=T.device)
    return T * sign


def w2c_to_opengl_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """OpenGL/Blender camera-to-world [..., 4, 4] (x right, y up, z backward) from OpenCV w2c."""
    _check_shape("w2c", w2c, (4, 4))
    return _flip_yz(invert_pose(w2c))


def opengl_c2w_to_w2c(c2w: torch.Tensor) -> torch.Tensor:
    """OpenCV w2c [..., 4, 4] from an OpenGL/Blender camera-to-world (x right, y up, z backward)."""
    _check_shape("c2w", c2w, (4, 4))
    return invert_pose(_flip_yz(c2w))


def read_llff_poses_bounds(path) -> dict:
    """Read LLFF `poses_bounds.npy`: [N, 17] rows of a 3x5 [R | t | (H, W, focal)] (row-major),
    then near and far.

    R, t are camera-to-world with rotation columns (down, right, backwards); the principal point
    is the image centre and fx = fy = focal. Returns float64 tensors
    dict(K [N, 3, 3], w2c [N, 4, 4], near_far [N, 2], height, width) with OpenCV w2c.
    Raises DatasetError if the file is missing, not [N, 17], not finite, or mixes image sizes.
    """
    path = Path(path)
    expected = "an LLFF poses_bounds.npy array of shape [N, 17]"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(path, f"could not load ({error}); expected {expected}") from error
    if array.ndim != 2 or array.shape[1] != 17 or array.shape[0] == 0:
        raise DatasetError(path, f"got shape {list(array.shape)}; expected {expected}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise DatasetError(path, f"holds non-finite or non-numeric values; expected {expected}")
    data = torch.from_numpy(array.astype(np.float64))  # [N, 17]
    mat = data[:, :15].reshape(-1, 3, 5)  # [N, 3, 5]
    hwf = mat[:, :, 4]  # [N, 3]
    heights, widths = hwf[:, 0].round(), hwf[:, 1].round()
    if (heights != heights[0]).any() or (widths != widths[0]).any() or heights[0] < 1 or widths[0] < 1:
        raise DatasetError(path, "expected one positive image size (H, W) shared by all cameras")
    height, width = int(heights[0]), int(widths[0])
    down, right, back = mat[:, :, 0], mat[:, :, 1], mat[:, :, 2]  # [N, 3] each
    # OpenCV c2w columns are (right, down, forward).
    c2w = _pose(torch.stack([right, down, -back], dim=-1), mat[:, :, 3])  # [N, 4, 4]
    focal = hwf[:, 2]
    K = make_K(focal, focal, torch.full_like(focal, width / 2), torch.full_like(focal, height / 2))
    return {"K": K, "w2c": invert_pose(c2w), "near_far": data[:, 15:17].clone(),
            "height": height, "width": width}


def write_llff_poses_bounds(path, K: torch.Tensor, w2c: torch.Tensor, height: int, width: int,
                            near_far: torch.Tensor) -> None:
    """Write LLFF `poses_bounds.npy` [N, 17] (float64) from K [N, 3, 3], w2c [N, 4, 4], near_far [N, 2].

    LLFF stores one focal length and assumes the principal point at (W/2, H/2), so this raises
    ValueError where fx != fy, the principal point is off-centre, or K has skew (relative
    tolerance 1e-5) rather than writing a camera that reads back differently.
    """
    _check_shape("K", K, ("N", 3, 3))
    _check_shape("w2c", w2c, ("N", 4, 4))
    _check_shape("near_far", near_far, ("N", 2))
    if not (K.ndim == 3 and w2c.ndim == 3 and near_far.ndim == 2 and len(K) == len(w2c) == len(near_far)):
        raise ValueError(f"K [N, 3, 3], w2c [N, 4, 4] and near_far [N, 2] must share N, got "
                         f"{list(K.shape)}, {list(w2c.shape)}, {list(near_far.shape)}")
    K64 = K.detach().cpu().double()
    fx, fy, cx, cy, skew = K64[:, 0, 0], K64[:, 1, 1], K64[:, 0, 2], K64[:, 1, 2], K64[:, 0, 1]
    scale = max(float(fx.abs().max()), float(width), float(height))
    tol = 1e-5 * scale
    if (fx - fy).abs().max() > tol:
        raise ValueError("K: LLFF stores one focal length, but fx != fy; resample first (unify_focal)")
    if (cx - width / 2).abs().max() > tol or (cy - height / 2).abs().max() > tol:
        raise ValueError(f"K: LLFF assumes the principal point at (W/2, H/2) = ({width / 2}, {height / 2})")
    if skew.abs().max() > tol:
        raise ValueError("K: LLFF cannot store a skewed K")
    c2w = invert_pose(w2c.detach().cpu().double())  # [N, 4, 4]
    right, down, forward = c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2]  # [N, 3] each
    hwf = torch.stack([torch.full_like(fx, height), torch.full_like(fx, width), fx], dim=-1)  # [N, 3]
    mat = torch.stack([down, right, -forward, c2w[:, :3, 3], hwf], dim=-1)  # [N, 3, 5]
    array = torch.cat([mat.reshape(-1, 15), near_far.detach().cpu().double()], dim=-1).numpy()  # [N, 17]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object, so np.save does not append ".npy"
        np.save(f, array)


# COLMAP camera models: name -> (parameter names); the first ones give K, the rest are distortion.
_COLMAP_MODELS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}


def _parse_colmap_cameras(path: Path) -> dict:
    """cameras.txt -> {camera_id: (model, width, height, fx, fy, cx, cy, distortion)}."""
    cameras = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        where = f"line {number}"
        if len(tokens) < 4:
            raise DatasetError(path, f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]', "
                                     f"got {line!r}")
        model = tokens[1]
        if model not in _COLMAP_MODELS:
            raise DatasetError(path, f"{where}: camera model {model!r} is not supported; expected one of "
                                     f"{', '.join(_COLMAP_MODELS)}")
        names = _COLMAP_MODELS[model]
        if len(tokens) != 4 + len(names):
            raise DatasetError(path, f"{where}: {model} expects {len(names)} parameters "
                                     f"({' '.join(names)}), got {len(tokens) - 4}")
        try:
            camera_id, width, height = int(tokens[0]), int(tokens[2]), int(tokens[3])
            params = [float(t) for t in tokens[4:]]
        except ValueError as error:
            raise DatasetError(path, f"{where}: expected integer CAMERA_ID, WIDTH, HEIGHT and float "
                                     f"PARAMS, got {line!r}") from error
        if camera_id in cameras:
            raise DatasetError(path, f"{where}: camera id {camera_id} appears twice; expected unique ids")
        if names[0] == "f":
            fx = fy = params[0]
            cx, cy, distortion = params[1], params[2], params[3:]
        else:
            fx, fy, cx, cy, distortion = *params[:4], params[4:]
        cameras[camera_id] = (model, width, height, fx, fy, cx, cy, distortion)
    return cameras


def read_colmap_text(folder) -> dict:
    """Read a COLMAP text model (cameras.txt and images.txt in `folder`).

    Supports the camera models SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL and OPENCV. In
    images.txt each image has two lines: `IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME` (a
    world-to-camera pose) and its 2D points, which may be empty. COLMAP uses the same pixel
    convention as this module (pixel centres at +0.5), so K is taken as it is.

    Returns a dict, images in file order: names (list[str]), image_ids and camera_ids (list[int]),
    K [N, 3, 3] and w2c [N, 4, 4] (float64), heights and widths [N] (int64), camera_models
    (list[str]) and distortion (list of lists of floats in COLMAP's order, e.g. OPENCV
    [k1, k2, p1, p2], empty for pinhole models). Raises DatasetError naming the file and line.
    """
    folder = Path(folder)
    cameras_path, images_path = folder / "cameras.txt", folder / "images.txt"
    for path in (cameras_path, images_path):
        if not path.is_file():
            raise DatasetError(path, "file not found; expected a COLMAP text model (cameras.txt, images.txt)")
    cameras = _parse_colmap_cameras(cameras_path)

    lines = images_path.read_text().splitlines()
    out = {key: [] for key in ("names", "image_ids", "camera_ids", "camera_models", "distortion")}
    qvecs, tvecs, intrinsics, sizes = [], [], [], []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        where = f"line {i}"
        tokens = line.split(maxsplit=9)  # the name is the rest of the line
        if len(tokens) != 10:
            raise DatasetError(images_path, f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID "
                                            f"NAME', got {line!r}")
        try:
            image_id, camera_id = int(tokens[0]), int(tokens[8])
            values = [float(t) for t in tokens[1:8]]
        except ValueError as error:
            raise DatasetError(images_path, f"{where}: expected integer IMAGE_ID and CAMERA_ID and float "
                                            f"QW..TZ, got {line!r}") from error
        if camera_id not in cameras:
            raise DatasetError(images_path, f"{where}: camera id {camera_id} is not in cameras.txt")
        # The next line holds the 2D points as (X, Y, POINT3D_ID) triples; it may be empty.
        points_line = lines[i] if i < len(lines) else ""
        i += 1
        if len(points_line.split()) % 3 != 0:
            raise DatasetError(images_path, f"line {i}: expected the 2D points of image {image_id} as "
                                            f"'X Y POINT3D_ID' triples (or an empty line)")
        model, width, height, fx, fy, cx, cy, distortion = cameras[camera_id]
        out["names"].append(tokens[9].strip())
        out["image_ids"].append(image_id)
        out["camera_ids"].append(camera_id)
        out["camera_models"].append(model)
        out["distortion"].append(list(distortion))
        qvecs.append(values[:4])
        tvecs.append(values[4:])
        intrinsics.append((fx, fy, cx, cy))
        sizes.append((height, width))
    if not qvecs:
        raise DatasetError(images_path, "no images found; expected two lines per image")

    q = torch.tensor(qvecs, dtype=torch.float64)  # [N, 4]
    if (q.norm(dim=-1) < 1e-6).any():
        raise DatasetError(images_path, "a quaternion QW QX QY QZ is zero; expected a unit quaternion")
    w2c = _pose(quaternion_to_matrix(q), torch.tensor(tvecs, dtype=torch.float64))  # [N, 4, 4]
    fx, fy, cx, cy = torch.tensor(intrinsics, dtype=torch.float64).unbind(-1)  # [N] each
    size = torch.tensor(sizes, dtype=torch.int64)  # [N, 2]
    out.update(K=make_K(fx, fy, cx, cy), w2c=w2c, heights=size[:, 0], widths=size[:, 1])
    return out


def write_colmap_text(folder, names, K: torch.Tensor, w2c: torch.Tensor, heights, widths) -> None:
    """Write a COLMAP text model: cameras.txt (one PINHOLE camera per image), images.txt (empty
    2D points lines) and an empty points3D.txt.

    names: N strings; K [N, 3, 3] without skew; w2c [N, 4, 4]; heights, widths: ints or N ints.
    Numbers are written with full float64 precision, so `read_colmap_text` gives them back.
    """
    _check_shape("K", K, ("N", 3, 3))
    _check_shape("w2c", w2c, ("N", 4, 4))
    names = list(names)
    n = len(names)
    if K.shape != (n, 3, 3) or w2c.shape != (n, 4, 4):
        raise ValueError(f"K must be [N, 3, 3] and w2c [N, 4, 4] with N = len(names) = {n}, "
                         f"got {list(K.shape)} and {list(w2c.shape)}")
    heights = torch.as_tensor(heights, dtype=torch.int64).expand(n).tolist()
    widths = torch.as_tensor(widths, dtype=torch.int64).expand(n).tolist()
    for name in names:
        if not name or "\n" in name or "\r" in name or name != name.strip():
            raise ValueError(f"names: {name!r} cannot be written to images.txt (empty, newline or "
                             f"surrounding whitespace)")
    K64 = K.detach().cpu().double()
    if K64[:, 0, 1].abs().max() > 1e-9 * K64[:, 0, 0].abs().max():
        raise ValueError("K: COLMAP's PINHOLE model has no skew")
    w2c64 = w2c.detach().cpu().double()
    q = matrix_to_quaternion(w2c64[:, :3, :3])  # [N, 4]
    t = w2c64[:, :3, 3]  # [N, 3]

    def fmt(values) -> str:
        return " ".join(repr(float(v)) for v in values)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cameras = ["# Camera list with one line of data per camera:",
               "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
               f"# Number of cameras: {n}"]
    images = ["# Image list with two lines of data per image:",
              "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
              "#   POINTS2D[] as (X, Y, POINT3D_ID)",
              f"# Number of images: {n}, mean observations per image: 0"]
    for i in range(n):
        fx, fy, cx, cy = K64[i, 0, 0], K64[i, 1, 1], K64[i, 0, 2], K64[i, 1, 2]
        cameras.append(f"{i + 1} PINHOLE {widths[i]} {heights[i]} {fmt([fx, fy, cx, cy])}")
        images.append(f"{i + 1} {fmt(q[i])} {fmt(t[i])} {i + 1} {names[i]}")
        images.append("")
    points = ["# 3D point list with one line of data per point:",
              "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
              "# Number of points: 0, mean track length: 0"]
    for filename, lines in (("cameras.txt", cameras), ("images.txt", images), ("points3D.txt", points)):
        (folder / filename).write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# Image geometry: resize, crop, resample between pinhole cameras, focal-length unification
# ----------------------------------------------------------------------------------------------


def resize_intrinsics(K: torch.Tensor, old_size, new_size) -> torch.Tensor:
    """K [..., 3, 3] of an image resized from old_size (H, W) to new_size (H2, W2).

    With pixel centres at +0.5 the image edges map to the edges, so scaling the first row by
    W2/W and the second by H2/H is exact (cx' = cx * W2/W, no half-pixel shift).
    """
    _check_shape("K", K, (3, 3))
    sy, sx = new_size[0] / old_size[0], new_size[1] / old_size[1]
    scale = torch.tensor([sx, sy, 1.0], dtype=K.dtype, device=K.device)
    return K * scale[:, None]


def crop_intrinsics(K: torch.Tensor, top, left) -> torch.Tensor:
    """K [..., 3, 3] of the crop whose top-left pixel is (row top, column left) of the image.

    top, left: ints or tensors [...]; the principal point shifts by (-left, -top).
    """
    _check_shape("K", K, (3, 3))
    shift = torch.zeros_like(K)  # [..., 3, 3]
    shift[..., 0, 2] = torch.as_tensor(left, dtype=K.dtype, device=K.device)
    shift[..., 1, 2] = torch.as_tensor(top, dtype=K.dtype, device=K.device)
    return K - shift


def map_pixels(uv: torch.Tensor, K_src: torch.Tensor, K_dst: torch.Tensor) -> torch.Tensor:
    """Map pixel coordinates uv [..., N, 2] between two pinhole cameras at the same pose.

    x' = (x - cx) * fx'/fx + cx' (and the same for y; skew is handled). Applied to pixel centres
    (u + 0.5, v + 0.5) this is consistent with `resize_intrinsics` and `unify_focal`. DepthLM
    applies the same formula to its labelled pixels after focal-length unification.
    """
    _check_shape("uv", uv, ("N", 2))
    _check_shape("K_src", K_src, (3, 3))
    _check_shape("K_dst", K_dst, (3, 3))
    return project(_unproject_z1(uv, K_src), K_dst)


def _gaussian_blur(image: torch.Tensor, sigma_y: float, sigma_x: float) -> torch.Tensor:
    """Separable Gaussian blur of image [B, C, H, W] with replicated borders."""
    B, C, H, W = image.shape
    out = image.reshape(B * C, 1, H, W)
    for sigma, horizontal in ((sigma_x, True), (sigma_y, False)):
        if sigma <= 0:
            continue
        radius = max(1, math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)  # [k]
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = kernel / kernel.sum()
        if horizontal:
            out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        else:
            out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out.reshape(B, C, H, W)


def resample_to_intrinsics(image: torch.Tensor, K: torch.Tensor, K_new: torch.Tensor, new_size,
                           mode: str = "bilinear", antialias: bool = True) -> torch.Tensor:
    """Warp image [..., C, H, W] seen by K [..., 3, 3] to the camera K_new at the same pose.

    Exact warp between pinhole cameras: the target pixel (u', v') samples the source at
    K @ inv(K_new) @ [u' + 0.5, v' + 0.5, 1]. Returns [..., C, H2, W2] for new_size (H2, W2);
    target pixels whose centre falls outside the source image are 0.

    mode "bilinear": `grid_sample(align_corners=False)` with border padding inside the source
    image (no dark seam at the edges); with antialias=True and a downsampling factor s > 1 along
    an axis, the source is first blurred with a Gaussian of sigma (s - 1) / 2 source pixels (the
    choice of scikit-image's resize). Skew-free K assumed for the blur width.
    mode "nearest": takes the source pixel containing the sample point (floor), for depth maps
    and ids; never blends, works for any dtype, ignores antialias.
    """
    _check_shape("image", image, ("C", "H", "W"))
    _check_shape("K", K, (3, 3))
    _check_shape("K_new", K_new, (3, 3))
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if mode == "bilinear" and not image.is_floating_point():
        raise ValueError(f"image: mode 'bilinear' needs a floating image, got {image.dtype}; "
                         f"use mode='nearest' for ids")
    H2, W2 = int(new_size[0]), int(new_size[1])
    *_, C, H, W = image.shape
    batch = _broadcast_shapes(image.shape[:-3], K.shape[:-2], K_new.shape[:-2])
    dtype = torch.promote_types(K.dtype, K_new.dtype)
    src_img = image.expand(*batch, C, H, W).reshape(-1, C, H, W)  # [B, C, H, W]
    K_b = K.to(dtype).expand(*batch, 3, 3).reshape(-1, 3, 3)  # [B, 3, 3]
    K_new_b = K_new.to(dtype).expand(*batch, 3, 3).reshape(-1, 3, 3)  # [B, 3, 3]

    centers = pixel_centers(H2, W2, device=image.device, dtype=dtype).reshape(1, -1, 2)  # [1, H2*W2, 2]
    src = map_pixels(centers, K_new_b, K_b).reshape(-1, H2, W2, 2)  # [B, H2, W2, 2] source x, y
    x, y = src[..., 0], src[..., 1]  # [B, H2, W2]
    inside = (x >= 0) & (x <= W) & (y >= 0) & (y <= H)  # [B, H2, W2]

    if mode == "nearest":
        ix = x.floor().clamp(0, W - 1).long()  # [B, H2, W2]
        iy = y.floor().clamp(0, H - 1).long()
        index = (iy * W + ix).flatten(1)[:, None, :].expand(-1, C, -1)  # [B, C, H2*W2]
        out = src_img.flatten(-2).gather(-1, index).unflatten(-1, (H2, W2))  # [B, C, H2, W2]
        out = torch.where(inside[:, None], out, torch.zeros_like(out))
        return out.reshape(*batch, C, H2, W2)

    if antialias:
        # Downsampling factor = source pixels per target pixel along each axis.
        sigmas = ((torch.stack([K_b[:, 1, 1] / K_new_b[:, 1, 1], K_b[:, 0, 0] / K_new_b[:, 0, 0]], -1).abs()
                   - 1) / 2).clamp_min(0).tolist()  # [B][sigma_y, sigma_x]
        if all(s == sigmas[0] for s in sigmas):
            src_img = _gaussian_blur(src_img, *sigmas[0])
        else:  # different cameras in the batch need different blurs
            src_img = torch.cat([_gaussian_blur(src_img[i:i + 1], *s) for i, s in enumerate(sigmas)])
    grid = torch.stack([2 * x / W - 1, 2 * y / H - 1], dim=-1).to(image.dtype)  # [B, H2, W2, 2]
    out = F.grid_sample(src_img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out * inside[:, None].to(out.dtype)  # [B, C, H2, W2]
    return out.reshape(*batch, C, H2, W2)


def resize(image: torch.Tensor, K: torch.Tensor, new_size, mode: str = "bilinear",
           antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image [..., C, H, W] to new_size (H2, W2); returns (image [..., C, H2, W2], K_new)."""
    _check_shape("image", image, ("C", "H", "W"))
    K_new = resize_intrinsics(K, image.shape[-2:], new_size)
    return resample_to_intrinsics(image, K, K_new, new_size, mode=mode, antialias=antialias), K_new


def crop(image: torch.Tensor, K: torch.Tensor, top: int, left: int, height: int,
         width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop image [..., C, H, W] to rows [top, top + height) and columns [left, left + width).

    Returns (image [..., C, height, width], K_new). Parts of the window outside the image are 0,
    as in `resample_to_intrinsics`.
    """
    _check_shape("image", image, ("C", "H", "W"))
    H, W = image.shape[-2:]
    out = image.new_zeros(*image.shape[:-2], height, width)  # [..., C, height, width]
    y0, y1 = max(top, 0), min(top + height, H)
    x0, x1 = max(left, 0), min(left + width, W)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = image[..., y0:y1, x0:x1]
    return out, crop_intrinsics(K, top, left)


def unify_focal(image: torch.Tensor, K: torch.Tensor, focal: float, mode: str = "bilinear",
                antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample image [..., C, H, W] so that fx' = fy' = focal (focal-length unification).

    DepthLM and VLM3 feed every image to the VLM at one canonical focal length (1000 px; VLM3's
    pose evaluation uses 750) so that metric depth is identifiable from the image alone. Per axis
    the scale is focal/fx and focal/fy: this first makes fx == fy by scaling one axis, then scales
    both to `focal`. The new size is (floor(H * focal / fy), floor(W * focal / fx)), the
    principal point (and skew) scale with their axes, K_new [..., 3, 3] has fx = fy = focal
    exactly, and the image is produced by one `resample_to_intrinsics` call, so K_new describes
    it exactly; the fraction of a pixel lost to the floor is cut at the right and bottom edges.

    DepthLM instead undistorts to an OpenCV "optimal new camera matrix" when fx != fy, then
    resizes to (floor(W s), floor(H s)) with s = focal/fx and multiplies K by s: the image is
    really scaled by floor(W s)/W, so its K is off by up to one pixel across the image. Labelled
    pixels move with `map_pixels` (DepthLM's x' = (x - cx) fx'/fx + cx').

    All K in a batch must give the same new size (else ValueError). Use mode="nearest" for depth.
    """
    _check_shape("image", image, ("C", "H", "W"))
    _check_shape("K", K, (3, 3))
    H, W = image.shape[-2:]
    fx, fy = K[..., 0, 0], K[..., 1, 1]  # [...]
    sizes = {
        (math.floor(H * focal / fy_i + 1e-6), math.floor(W * focal / fx_i + 1e-6))  # tolerate rounding
        for fx_i, fy_i in zip(fx.reshape(-1).tolist(), fy.reshape(-1).tolist())
    }
    if len(sizes) != 1:
        raise ValueError(f"K: the cameras in the batch give different unified sizes {sorted(sizes)}; "
                         f"call unify_focal per image")
    new_size = sizes.pop()
    if new_size[0] < 1 or new_size[1] < 1:
        raise ValueError(f"focal: {focal} gives an empty image {new_size} from size {(H, W)}")
    scale = torch.stack([focal / fx, focal / fy, torch.ones_like(fx)], dim=-1)  # [..., 3]
    K_new = K * scale[..., :, None]  # [..., 3, 3]
    K_new[..., 0, 0] = focal  # exact, not focal / fx * fx
    K_new[..., 1, 1] = focal
    return resample_to_intrinsics(image, K, K_new, new_size, mode=mode, antialias=antialias), K_new
