"""Rotations as 3x3 matrices, quaternions (w, x, y, z) and rotation vectors (conventions: common.cameras)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from common.cameras.geometry import _check_shape


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
