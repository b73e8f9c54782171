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

Modules: `geometry` (intrinsics, projection, poses, rays), `rotations`, `formats` (OpenGL/Blender,
LLFF `poses_bounds.npy`, COLMAP text models), `resampling` (resize, crop, resampling between
cameras, the focal-length unification of DepthLM / VLM3). Import from `common.cameras`.
"""

from __future__ import annotations

from common.cameras.formats import (
    w2c_to_opengl_c2w,
    opengl_c2w_to_w2c,
    read_llff_poses_bounds,
    write_llff_poses_bounds,
    read_colmap_text,
    write_colmap_text,
)
from common.cameras.geometry import (
    make_K,
    intrinsics_from_fov,
    fov_from_intrinsics,
    pixel_centers,
    project,
    unproject,
    transform_points,
    invert_pose,
    camera_centers,
    relative_pose,
    look_at,
    pixel_rays,
    depth_to_points,
    depth_to_distance,
    distance_to_depth,
)
from common.cameras.resampling import (
    resize_intrinsics,
    crop_intrinsics,
    map_pixels,
    resample_to_intrinsics,
    resize,
    crop,
    unify_focal,
)
from common.cameras.rotations import (
    quaternion_to_matrix,
    matrix_to_quaternion,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    rotation_angle,
    relative_rotation_angle,
)

__all__ = [
    "make_K",
    "intrinsics_from_fov",
    "fov_from_intrinsics",
    "pixel_centers",
    "project",
    "unproject",
    "transform_points",
    "invert_pose",
    "camera_centers",
    "relative_pose",
    "look_at",
    "pixel_rays",
    "depth_to_points",
    "depth_to_distance",
    "distance_to_depth",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rotation_angle",
    "relative_rotation_angle",
    "w2c_to_opengl_c2w",
    "opengl_c2w_to_w2c",
    "read_llff_poses_bounds",
    "write_llff_poses_bounds",
    "read_colmap_text",
    "write_colmap_text",
    "resize_intrinsics",
    "crop_intrinsics",
    "resample_to_intrinsics",
    "resize",
    "crop",
    "unify_focal",
    "map_pixels",
]
