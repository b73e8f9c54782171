"""Camera files and other conventions: OpenGL/Blender c2w, LLFF poses_bounds.npy, COLMAP text models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import DatasetError
from common.cameras.geometry import _check_shape, _pose, invert_pose, make_K
from common.cameras.rotations import matrix_to_quaternion, quaternion_to_matrix


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
