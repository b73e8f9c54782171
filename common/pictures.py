"""Pictures people can read: depth and normal maps, a contact sheet, meshes and point clouds.

Depth
    `write_depth(path, depth)` writes a 16-bit PNG of round(depth * scale) and a sidecar JSON
    beside it (`path` with `.json`): {"scale": 1000, "unit": "m", ...}, so depth = value / scale
    and 0 = invalid. The scale is 1000 (millimetres) while the deepest pixel fits in 16 bits
    (65.535 units), else 100, 10 or 1. `read_depth(path)` reads it back through the sidecar.
    `write_depth_preview(path, depth)` writes the depth coloured with a perceptual colour map
    (matplotlib's turbo: near = blue, far = red; invalid = black) and a colour bar on the right
    whose ticks are labelled in the unit ("1.5 m"). Use one `depth_range` for all views of a run so
    that one colour means one depth everywhere.
Normals
    `write_normals(path, normals)`: the standard normal map, RGB = (n + 1) / 2 of unit normals in the
    OpenCV camera frame (x right, y down, z forward; normals point towards the camera). A surface
    facing the camera (n = (0, 0, -1)) is olive (128, 128, 0), one facing right (+x) is pink
    (255, 128, 128), a floor seen from above (n = -y, up) is purple (128, 0, 128); unknown is black.
    `common.datasets.io.read_normals_png` reads it back.
Resolution
    A prediction made at the model's resolution is brought to the input image's with
    `upsample_depth` / `upsample_normals`: an exact warp between the two pinhole cameras
    (`common.cameras.resample_to_intrinsics`, bilinear) that averages valid pixels only, so that
    invalid (0) pixels neither darken the edges nor spread.
Contact sheet
    `write_contact_sheet(path, views)`: one row per view (input | depth | normals), labelled.
Meshes and point clouds
    `write_mesh` / `write_point_cloud` write PLY or GLB through trimesh with per-vertex RGBA colours
    (MeshLab and Blender read both). PLY keeps the coordinates as given; GLB is turned so that the
    world's `up` is glTF's +y (the glTF convention, so Blender shows it upright): the default up
    (0, -1, 0) is an OpenCV camera-frame world (y down), e.g. a reconstruction in the first camera's
    frame; pass up=(0, 0, 1) for a z-up world such as `common.synthetic`'s (`up_from_cameras` tells
    it from the cameras).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from common.cameras import resample_to_intrinsics, resize_intrinsics
from common.datasets import io

__all__ = ["depth_scale_for", "write_depth", "read_depth", "depth_range", "colorize_depth", "colorbar",
           "depth_preview", "write_depth_preview", "normals_to_rgb", "write_normals", "upsample_depth",
           "upsample_normals", "write_contact_sheet", "up_from_cameras", "write_mesh", "write_point_cloud"]

CMAP = "turbo"
INVALID_RGB = (0, 0, 0)


def _array(x, name: str, ndim: int) -> np.ndarray:
    a = x.detach().float().cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(a.shape)}")
    return a


def _image_u8(image) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3]: float [3, H, W] in [0, 1] (the project's images) or uint8 [H, W, 3]."""
    if torch.is_tensor(image):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[-1] == 3:
        return a
    if a.ndim == 3 and a.shape[0] == 3:
        return (np.clip(a.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)  # [H, W, 3]
    if a.ndim == 3 and a.shape[-1] == 3:
        return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    raise ValueError(f"image: expected float [3, H, W] in [0, 1] or uint8 [H, W, 3], got {a.dtype} {a.shape}")


# ----------------------------------------------------------------------------------------- depth


def depth_scale_for(max_depth: float) -> float:
    """PNG units per depth unit: 1000 (millimetres) while max_depth * 1000 fits in 16 bits, else 100, 10, 1."""
    for scale in (1000.0, 100.0, 10.0, 1.0):
        if max_depth * scale <= 65535:
            return scale
    raise ValueError(f"depth: max {max_depth:g} does not fit a 16-bit PNG even at scale 1")


def write_depth(path, depth, unit: str = "m", K=None) -> dict:
    """Write depth [H, W] (z-depth, 0 = invalid) as a 16-bit PNG and its sidecar JSON; return the sidecar."""
    d = _array(depth, "depth", 2)
    if not np.isfinite(d).all() or (d < 0).any():
        bad = int((~np.isfinite(d) | (d < 0)).sum())
        raise ValueError(f"{path}: depth must be finite and >= 0 (0 = invalid); {bad} pixels are not")
    scale = depth_scale_for(float(d.max()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_depth_png(path, torch.from_numpy(d), scale)
    meta = {"scale": scale, "unit": unit, "height": d.shape[0], "width": d.shape[1],
            "meaning": f"z-depth in {unit} = PNG value / scale; 0 = invalid"}
    if K is not None:
        meta["K"] = np.asarray(K.tolist() if torch.is_tensor(K) else K, dtype=float).tolist()
    io.write_json(path.with_suffix(".json"), meta)
    return meta


def read_depth(path) -> tuple[torch.Tensor, dict]:
    """(depth [H, W] float32 in the sidecar's unit, the sidecar) of a `write_depth` PNG."""
    path = Path(path)
    meta = io.read_json(path.with_suffix(".json"))
    return io.read_depth_png(path, io.check_depth_scale(path.with_suffix(".json"), meta.get("scale"))), meta


def depth_range(depths, low: float = 2.0, high: float = 98.0) -> tuple[float, float]:
    """(vmin, vmax): the `low`/`high` percentiles of the valid (> 0) pixels of all depth maps given."""
    valid = np.concatenate([_array(d, "depth", 2).reshape(-1) for d in depths])
    valid = valid[np.isfinite(valid) & (valid > 0)]
    if valid.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(valid, [low, high]).tolist()
    return (vmin, vmax) if vmax > vmin else (vmin, vmin + max(1e-3, 1e-3 * vmin))


def colorize_depth(depth, vmin: float, vmax: float, cmap: str = CMAP) -> np.ndarray:
    """depth [H, W] -> uint8 [H, W, 3] through `cmap` over [vmin, vmax]; invalid (<= 0) pixels black."""
    import matplotlib

    d = _array(depth, "depth", 2)
    t = np.clip((d - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    rgb = (matplotlib.colormaps[cmap](t)[..., :3] * 255).round().astype(np.uint8)  # [H, W, 3]
    rgb[~(np.isfinite(d) & (d > 0))] = INVALID_RGB
    return rgb


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def colorbar(height: int, vmin: float, vmax: float, unit: str = "m", cmap: str = CMAP) -> np.ndarray:
    """A vertical colour bar uint8 [height, w, 3] on white, vmax at the top, ticks labelled '<v> <unit>'."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator
    from PIL import Image, ImageDraw

    fs = int(np.clip(height / 14, 9, 24))
    pad, bar_w = fs // 2, max(8, fs)
    top, bottom = pad + fs // 2, height - pad - fs // 2
    ticks = [t for t in MaxNLocator(nbins=max(2, (bottom - top) // (2 * fs))).tick_values(vmin, vmax)
             if vmin - 1e-9 * abs(vmin) <= t <= vmax + 1e-9 * abs(vmax)]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(vmax - vmin)
    digits = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    labels = [f"{t:.{digits}f} {unit}" for t in ticks]
    font = _font(fs)
    text_w = max([font.getbbox(s)[2] for s in labels] + [1])
    im = Image.new("RGB", (pad + bar_w + fs // 2 + text_w + pad, height), "white")
    span = max(bottom - top, 1)
    t = np.linspace(1, 0, span)[:, None]  # top = vmax
    strip = (matplotlib.colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)  # [span, 1, 3]
    im.paste(Image.fromarray(np.repeat(strip, bar_w, axis=1)), (pad, top))
    draw = ImageDraw.Draw(im)
    draw.rectangle([pad - 1, top - 1, pad + bar_w, top + span], outline="black")
    for value, label in zip(ticks, labels):
        y = top + (vmax - value) / max(vmax - vmin, 1e-12) * (span - 1)
        draw.line([pad + bar_w, y, pad + bar_w + fs // 3, y], fill="black")
        draw.text((pad + bar_w + fs // 2, y), label, fill="black", font=font, anchor="lm")
    return np.asarray(im)


def depth_preview(depth, vmin: float | None = None, vmax: float | None = None, unit: str = "m",
                  cmap: str = CMAP) -> np.ndarray:
    """uint8 [H, W + bar, 3]: the coloured depth at its own resolution, then the colour bar."""
    if vmin is None or vmax is None:
        lo, hi = depth_range([depth])
        vmin, vmax = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
    rgb = colorize_depth(depth, vmin, vmax, cmap)
    return np.concatenate([rgb, colorbar(rgb.shape[0], vmin, vmax, unit, cmap)], axis=1)


def write_depth_preview(path, depth, vmin: float | None = None, vmax: float | None = None, unit: str = "m",
                        cmap: str = CMAP) -> None:
    """Write `depth_preview` as an 8-bit PNG."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_preview(depth, vmin, vmax, unit, cmap)).save(path)


# --------------------------------------------------------------------------------------- normals


def normals_to_rgb(normals) -> np.ndarray:
    """Unit normals [3, H, W] (OpenCV camera frame) -> uint8 [H, W, 3] = (n + 1) / 2; zero vectors black."""
    n = _array(normals, "normals", 3)
    if n.shape[0] != 3:
        raise ValueError(f"normals: expected [3, H, W], got shape {n.shape}")
    known = np.linalg.norm(n, axis=0) > 0.5  # [H, W]
    rgb = ((np.clip(n, -1, 1) + 1) / 2 * 255).round().transpose(1, 2, 0)  # [H, W, 3]
    return (rgb * known[..., None]).astype(np.uint8)


def write_normals(path, normals) -> None:
    """Write the standard normal map (module docstring) as an 8-bit RGB PNG."""
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(normals_to_rgb(normals), "RGB").save(path)


# ------------------------------------------------------------------------------------ resolution


def _upsample_valid(values: torch.Tensor, valid: torch.Tensor, K, size, K_new) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp values [C, H, W] (read where valid [H, W]) to `size`; (sum of valid values / valid weight, weight)."""
    K = torch.as_tensor(K, dtype=torch.float64)
    K_new = resize_intrinsics(K, values.shape[-2:], size) if K_new is None else torch.as_tensor(K_new, dtype=torch.float64)
    w = valid.to(torch.float64)[None]  # [1, H, W]
    stacked = torch.cat([values.to(torch.float64) * w, w])  # [C + 1, H, W]
    out = resample_to_intrinsics(stacked, K, K_new, size)  # [C + 1, H2, W2]
    weight = out[-1]  # [H2, W2]
    return out[:-1] / weight.clamp_min(1e-12), weight


def upsample_depth(depth, K, size, K_new=None) -> torch.Tensor:
    """Depth [H, W] seen by K -> [H2, W2] for size (H2, W2) seen by K_new (default: K resized to size).
    Pixels whose neighbourhood is mostly invalid stay 0."""
    d = torch.as_tensor(_array(depth, "depth", 2))
    value, weight = _upsample_valid(d[None], d > 0, K, size, K_new)
    return torch.where(weight > 0.5, value[0], torch.zeros_like(value[0])).float()  # [H2, W2]


def upsample_normals(normals, K, size, K_new=None) -> torch.Tensor:
    """Unit normals [3, H, W] -> [3, H2, W2] (as `upsample_depth`), renormalised; unknown stays 0."""
    n = torch.as_tensor(_array(normals, "normals", 3))
    value, weight = _upsample_valid(n, n.norm(dim=0) > 0.5, K, size, K_new)
    value = torch.nn.functional.normalize(value, dim=0)
    return (value * (weight > 0.5)).float()  # [3, H2, W2]


# --------------------------------------------------------------------------------- contact sheet


def _thumb(rgb: np.ndarray, height: int):
    from PIL import Image

    im = Image.fromarray(rgb)
    width = max(1, round(im.width * height / im.height))
    return im.resize((width, height), Image.BILINEAR if height < im.height else Image.LANCZOS)


def write_contact_sheet(path, views: list[dict], vmin: float | None = None, vmax: float | None = None,
                        unit: str = "m", title: str | None = None, thumb_height: int = 160) -> np.ndarray:
    """One picture of a run: a row per view with its name, then the input image, the depth (shared
    colour range, colour bar at the row's end) and the normals, under column titles.

    views: dicts with "name" and any of "image" (float [3, H, W] or uint8 [H, W, 3]), "depth"
    [H, W], "normals" [3, H, W]; a column is drawn when any view has it. Returns uint8 [h, w, 3].
    """
    from PIL import Image, ImageDraw

    if not views:
        raise ValueError("write_contact_sheet: no views")
    depths = [v["depth"] for v in views if v.get("depth") is not None]
    if depths and (vmin is None or vmax is None):
        lo, hi = depth_range(depths)
        vmin, vmax = (lo if vmin is None else vmin), (hi if vmax is None else vmax)
    columns = [c for c in ("image", "depth", "normals") if any(v.get(c) is not None for v in views)]
    heading = {"image": "input", "depth": f"depth ({unit})", "normals": "normals (n + 1) / 2, camera frame"}
    rows = []
    for v in views:
        panels = []
        for c in columns:
            if v.get(c) is None:
                panels.append(None)
            elif c == "image":
                panels.append(_thumb(_image_u8(v[c]), thumb_height))
            elif c == "depth":
                panels.append(_thumb(colorize_depth(v[c], vmin, vmax), thumb_height))
            else:
                panels.append(_thumb(normals_to_rgb(v[c]), thumb_height))
        rows.append((str(v.get("name", len(rows))), panels))
    fs, gap = int(np.clip(thumb_height / 10, 10, 20)), 6
    widths = [max((p[i].width for _, p in rows if p[i] is not None), default=thumb_height) for i in range(len(columns))]
    bar = Image.fromarray(colorbar(thumb_height, vmin, vmax, unit)) if depths else None
    width = gap + sum(w + gap for w in widths) + (bar.width + gap if bar else 0)
    head = (fs + gap) * (2 if title else 1) + gap  # column titles, then a gap before the first row
    height = head + len(rows) * (fs + gap + thumb_height + gap)
    sheet = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(sheet), _font(fs)
    y = gap // 2
    if title:
        draw.text((gap, y), title, fill="black", font=font)
        y += fs + gap
    x = gap
    for c, w in zip(columns, widths):
        draw.text((x, y), heading[c], fill="black", font=font)
        x += w + gap
    y = head
    for name, panels in rows:
        draw.text((gap, y), name, fill="black", font=font)
        y += fs + gap
        x = gap
        for panel, w in zip(panels, widths):
            if panel is not None:
                sheet.paste(panel, (x, y))
            x += w + gap
        if bar is not None:
            sheet.paste(bar, (x, y))
        y += thumb_height + gap
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return np.asarray(sheet)


# ------------------------------------------------------------------------- meshes, point clouds


def _gltf_rotation(up) -> np.ndarray:
    """R [3, 3] turning the world's `up` to +y (glTF), the minimal rotation (180 deg about x for -y)."""
    u = np.asarray(up, dtype=np.float64)
    if u.shape != (3,) or not np.isfinite(u).all() or np.linalg.norm(u) < 1e-12:
        raise ValueError(f"up: expected a non-zero 3-vector, got {up!r}")
    u = u / np.linalg.norm(u)
    y = np.array([0.0, 1.0, 0.0])
    if u @ y < -1 + 1e-9:
        return np.diag([1.0, -1.0, -1.0])
    v, c = np.cross(u, y), u @ y
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def up_from_cameras(w2c) -> tuple[float, float, float]:
    """The world's up as cameras held upright see it: the mean of their up vectors (-y of each
    OpenCV camera, in the world frame) snapped to the nearest world axis, e.g. (0, -1, 0) when the
    world is the first camera's frame and (0, 0, 1) for `common.synthetic`'s z-up world."""
    R = np.asarray(w2c.detach().cpu().double() if torch.is_tensor(w2c) else w2c, dtype=np.float64)
    up = -R.reshape(-1, 4, 4)[:, 1, :3].mean(0)  # row 1 of R: the camera's y axis in the world
    if not np.isfinite(up).all() or np.linalg.norm(up) < 1e-9:
        return (0.0, -1.0, 0.0)
    axis = int(np.argmax(np.abs(up)))
    out = [0.0, 0.0, 0.0]
    out[axis] = float(np.sign(up[axis]))
    return tuple(out)


def _colors_rgba(colors, n: int, path) -> np.ndarray | None:
    if colors is None:
        return None
    c = colors.detach().cpu().numpy() if torch.is_tensor(colors) else np.asarray(colors)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
        raise ValueError(f"{path}: colors expected [{n}, 3] or [{n}, 4], got {tuple(c.shape)}")
    if c.dtype != np.uint8:
        c = (np.clip(c.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return c if c.shape[1] == 4 else np.concatenate([c, np.full((n, 1), 255, np.uint8)], 1)


def _points(x, path, what: str, allow_empty: bool = False) -> np.ndarray:
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    a = a.astype(np.float64).reshape(-1, 3) if a.size == 0 and allow_empty else a.astype(np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or (len(a) == 0 and not allow_empty):
        raise ValueError(f"{path}: {what} expected [N, 3] with N >= 1, got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: {what} contain {int((~np.isfinite(a)).any(1).sum())} non-finite rows")
    return a


def _export(geometry, path, up) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".glb"):
        raise ValueError(f"{path}: expected a .ply or .glb file name")
    if suffix == ".glb":
        T = np.eye(4)
        T[:3, :3] = _gltf_rotation(up)
        geometry = geometry.copy()
        geometry.apply_transform(T)
    path.parent.mkdir(parents=True, exist_ok=True)
    geometry.export(str(path))
    return path


def write_mesh(path, vertices, faces, colors=None, up=(0.0, -1.0, 0.0)):
    """Write a triangle mesh (vertices [M, 3], faces [F, 3] int, colors [M, 3|4] float in [0, 1] or
    uint8) as PLY or GLB by the file name; returns the trimesh.Trimesh written (before the GLB turn).
    An empty mesh (no vertex: marching cubes found no surface) is written as such."""
    import trimesh

    v = _points(vertices, path, "vertices", allow_empty=True)
    f = faces.detach().cpu().numpy() if torch.is_tensor(faces) else np.asarray(faces)
    f = f.reshape(-1, 3) if f.size == 0 else f
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"{path}: faces expected [F, 3] indices in [0, {len(v)}), got shape {tuple(f.shape)}")
    rgba = _colors_rgba(colors, len(v), path) if len(v) else None
    mesh = trimesh.Trimesh(vertices=v, faces=f.astype(np.int64), vertex_colors=rgba, process=False)
    _export(mesh, path, up)
    return mesh


def write_point_cloud(path, points, colors=None, up=(0.0, -1.0, 0.0)):
    """Write points [N, 3] with colors [N, 3|4] as a PLY (or GLB) point cloud; returns the trimesh.PointCloud."""
    import trimesh

    p = _points(points, path, "points")
    cloud = trimesh.PointCloud(p, colors=_colors_rgba(colors, len(p), path))
    _export(cloud, path, up)
    return cloud

