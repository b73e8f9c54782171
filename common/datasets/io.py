"""Reading and writing the image files of a scene, with one clear `DatasetError` per bad file.

RGB is 8-bit PNG/JPEG, returned as float32 [3, H, W] in [0, 1]. Depth is a 16-bit single-channel
PNG holding metres * scale (0 = invalid), returned as float32 [H, W] metres; an 8-bit or RGB depth
PNG is an error, never read as metres / 1000. Normals are 8-bit RGB PNGs encoding (n + 1) / 2,
(0, 0, 0) = unknown. Ids are 16-bit PNGs.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from common.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path, convert: str | None = None) -> tuple[str, np.ndarray]:
    """Decode an image file; return (the file's PIL mode, the pixels, converted if asked)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            return mode, np.array(im.convert(convert) if convert and mode != convert else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"cannot decode image ({exc})") from None


def read_rgb(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an RGB image as float32 [3, H, W] in [0, 1]; `size` (H, W) is checked, not resized."""
    _, arr = _open(path, convert="RGB")
    image = torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0  # [3, H, W]
    _check_size(path, image.shape[-2:], size)
    return image


def check_depth_scale(where, scale, field: str = "depth scale") -> float:
    """`scale` as a float if it is a finite number > 0, else a DatasetError naming `where` and
    `field`: a scale of 0 or below would make every depth pixel invalid or negative."""
    number = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not (number and math.isfinite(scale) and scale > 0):
        raise DatasetError(where, f"{field}: expected a number > 0 (depth = PNG value / scale), "
                                  f"got {scale!r}")
    return float(scale)


def read_depth_png(
    path, scale: float, size: tuple[int, int] | None = None, allow_8bit: bool = False
) -> torch.Tensor:
    """Read a 16-bit single-channel depth PNG holding metres * `scale` as float32 metres [H, W]
    (0 = invalid).

    An 8-bit (or RGB, or palette) PNG is a DatasetError naming the file: read as value / 1000 it
    would give depths of at most 0.255 m without a word. `allow_8bit` is for layouts whose depth
    maps are 8-bit by definition (EndoNeRF), not for metric depth.
    """
    check_depth_scale(path, scale)
    mode, arr = _open(path)
    eight_bit = arr.ndim == 2 and arr.dtype == np.uint8 and mode == "L"
    if arr.ndim != 2 or (arr.dtype not in (np.uint16, np.int32) and not (allow_8bit and eight_bit)):
        bits = "8-bit" if arr.dtype in (np.uint8, np.bool_) else str(arr.dtype)
        kind = "an 8- or 16-bit single-channel PNG" if allow_8bit else "a 16-bit single-channel PNG"
        raise DatasetError(path, f"expected {kind} (depth * {scale:g}), got {bits} mode {mode}")
    depth = torch.from_numpy(arr.astype(np.float32) / scale)  # [H, W]
    _check_size(path, depth.shape, size)
    return depth


def read_ids_png(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read an 8- or 16-bit single-channel id map as int64 [H, W]."""
    mode, arr = _open(path)
    if arr.ndim != 2:
        raise DatasetError(path, f"expected a single-channel id PNG, got mode {mode}")
    ids = torch.from_numpy(arr.astype(np.int64))  # [H, W]
    _check_size(path, ids.shape, size)
    return ids


def read_mask(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a binary mask image (any non-zero pixel is True) as bool [H, W]."""
    mode, arr = _open(path)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    mask = torch.from_numpy(arr > 0)  # [H, W]
    _check_size(path, mask.shape, size)
    return mask


def read_normals_png(path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read normals encoded as 8-bit (n + 1) / 2 as unit float32 [3, H, W]; (0,0,0) pixels -> 0."""
    mode, arr = _open(path)
    if arr.ndim != 3 or arr.shape[-1] < 3:
        raise DatasetError(path, f"expected an RGB normal map, got mode {mode}")
    raw = torch.from_numpy(arr[..., :3].astype(np.float32)).permute(2, 0, 1)  # [3, H, W]
    normals = torch.nn.functional.normalize(raw / 255.0 * 2.0 - 1.0, dim=0)
    normals = normals * (raw.sum(0, keepdim=True) > 0)  # unknown stays 0
    _check_size(path, normals.shape[-2:], size)
    return normals


def write_rgb(path, image: torch.Tensor) -> None:
    """Write float [3, H, W] in [0, 1] as an 8-bit PNG."""
    arr = (image.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    _save(Image.fromarray(arr, "RGB"), path)


def write_depth_png(path, depth: torch.Tensor, scale: float) -> None:
    """Write metres [H, W] as a 16-bit PNG of round(depth * scale); raise if out of range."""
    arr = (depth.detach().cpu().double() * scale).round().numpy()
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 65535:
        raise ValueError(
            f"{path}: depth * scale must lie in [0, 65535] (max depth {float(depth.max()):.3f} m "
            f"with scale {scale}); use a smaller depth scale"
        )
    _save(Image.fromarray(arr.astype(np.uint16)), path)


def write_ids_png(path, ids: torch.Tensor) -> None:
    """Write integer ids [H, W] in [0, 65535] as a 16-bit PNG."""
    arr = ids.detach().cpu().numpy()
    if arr.min() < 0 or arr.max() > 65535:
        raise ValueError(f"{path}: ids must lie in [0, 65535]")
    _save(Image.fromarray(arr.astype(np.uint16)), path)


def write_mask(path, mask: torch.Tensor) -> None:
    """Write bool [H, W] as an 8-bit PNG, white = True."""
    _save(Image.fromarray(mask.detach().cpu().numpy().astype(np.uint8) * 255), path)


def write_normals_png(path, normals: torch.Tensor) -> None:
    """Write unit normals [3, H, W] as 8-bit (n + 1) / 2; zero vectors are written as (0, 0, 0)."""
    known = normals.detach().norm(dim=0) > 0.5  # [H, W]
    enc = ((normals.detach().clamp(-1, 1) + 1.0) / 2.0 * 255.0).round() * known  # [3, H, W]
    _save(Image.fromarray(enc.to(torch.uint8).permute(1, 2, 0).cpu().numpy(), "RGB"), path)


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None


def write_json(path, data) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def list_images(folder) -> list[Path]:
    """The image files in `folder`, sorted by name (numbers compared as numbers)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(folder, "folder not found")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files, key=natural_key)


def natural_key(path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", Path(path).name)]


def read_matrix_txt(path, shape: tuple[int, ...], allow_nonfinite: bool = False) -> np.ndarray:
    """Read whitespace- or comma-separated numbers as a float64 array of `shape`.

    Non-finite values are a DatasetError unless `allow_nonfinite` (ScanNet marks lost tracking
    with -inf poses; its reader skips those frames itself).
    """
    values = _read_numbers(path)
    expected = math.prod(shape)
    if len(values) != expected:
        dims = "x".join(map(str, shape))
        raise DatasetError(path, f"expected {expected} numbers ({dims}), got {len(values)}")
    m = np.asarray(values, dtype=np.float64).reshape(shape)
    if not allow_nonfinite and not np.isfinite(m).all():
        raise DatasetError(path, "contains non-finite values (nan or inf)")
    return m


def read_intrinsics_txt(path) -> torch.Tensor:
    """K [3, 3] float32 from "fx fy cx cy" or a row-major 3x3 matrix (9 numbers)."""
    values = _read_numbers(path)
    if len(values) == 4:
        fx, fy, cx, cy = values
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    elif len(values) == 9:
        K = torch.tensor(values, dtype=torch.float32).reshape(3, 3)
    else:
        raise DatasetError(
            path, f"expected 'fx fy cx cy' (4 numbers) or a 3x3 matrix (9 numbers), got {len(values)}"
        )
    if not torch.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DatasetError(path, f"expected finite intrinsics with positive focal lengths, got {K.tolist()}")
    return K.float()


def _read_numbers(path) -> list[float]:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        return [float(t) for t in path.read_text(encoding="utf-8").replace(",", " ").split()]
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot parse numbers ({exc})") from None


def _save(image: Image.Image, path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _check_size(path, got, expected) -> None:
    if expected is not None and tuple(got) != tuple(expected):
        raise DatasetError(path, f"expected size (H, W) = {tuple(expected)}, got {tuple(got)}")
