"""Photos from users, as the views of one `Sample`: the one image loader of every demo.

    sample = read_image_folder("photos/", size=(H, W) or None, max_side=1024, K=None, fov=None, cameras=None)
    print(sample.annotations["note"])  # one line: what was found and what was assumed

`source` is a folder (its image files, sorted by name with numbers as numbers; other files are
ignored), one image file or a list of them. A file with an image suffix that does not decode is an
error naming it.

Orientation. EXIF orientation is applied (`PIL.ImageOps.exif_transpose`): K, sizes and pixels are
those of the image as it is displayed. Exception: a known camera whose size fits the stored pixels
and not the displayed ones (COLMAP ignores EXIF) keeps the image as stored, and the note says so.

Cameras, the first that applies:
  - `K` (K [3, 3] in pixels of each image as displayed, at full size: the demos' --K) or `fov`
    (horizontal degrees, square pixels, centred principal point: --fov) replace any file's K;
  - `cameras` (a COLMAP model folder, a cameras JSON or an LLFF poses_bounds.npy), else the files
    that `common.datasets.camera_files.find_cameras` finds beside or above the images: COLMAP
    `sparse/0` (binary or text), cameras.json, poses_bounds.npy, intrinsics.txt;
  - nothing: a horizontal field of view of 60 degrees, square pixels, centred principal point
    (`annotations["intrinsics_source"] = "assumed 60 deg fov"`).
A file's camera keeps the size it was calibrated at; an image of the same aspect ratio at another
resolution (a model made on downscaled copies) gets K scaled to it, another aspect ratio is an error
naming the image. Poses come only from a camera file (`annotations["poses_known"]`); without one
every `w2c` is the identity. Images a camera file does not list are left out with a warning
(`annotations["unregistered"]`); COLMAP lens distortion is ignored with a warning.

Sizes. Every view gets one size (H, W): `size` if given, else the most common image size after
scaling each image down so that its longer side is at most `max_side` (ties: the first file's). The
rule for each image of full size (h, w): it is resized by s = min(H / h, W / w) to
(round(h s), round(w s)), then padded with black, centred, to (H, W); K is scaled by the resize
(`common.cameras.resize_intrinsics`) and shifted by the padding (`common.cameras.crop` with negative
offsets); PIL resizes the pixels (antialiased, edges to edges, as `resize_intrinsics` assumes).
`annotations["files"]` gives each view's file name, `["content"]` its [top, left, height, width]
of real pixels. A large image is decoded at reduced size first (JPEG draft mode at 1/2, 1/4 or 1/8,
never below the fitted size; K follows the exact factor), so a 12-megapixel photo never costs more
than a few times the pixels it becomes. `annotations["source_size"]` ([V] (h, w)) and
`["source_K"]` ([V, 3, 3]) describe each image as displayed at full size: map a full-size pixel to
the view with `common.cameras.map_pixels(uv, source_K[v], K[v])`, a full-size map with `resample_to_intrinsics`.

`read_matrix_txt` and `read_intrinsics_txt` parse the small text matrices the other readers
(ScanNet, 7-Scenes, KITTI) share.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from common.cameras import crop, crop_intrinsics, make_K, resize_intrinsics
from common.datasets import io
from common.datasets.camera_files import KnownCameras, find_cameras, read_cameras
from common.datasets.io import read_intrinsics_txt, read_matrix_txt  # noqa: F401 (re-exported)
from common.datasets.sample import Sample
from common.errors import DatasetError

ASSUMED_FOV_DEG = 60.0
MAX_SIDE = 1024  # default longer side of the views when no size is given
_SWAPPED = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees


def assumed_K(height: int, width: int, fov_deg: float = ASSUMED_FOV_DEG) -> torch.Tensor:
    """K [3, 3] for a horizontal field of view `fov_deg`, square pixels, centred principal point."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return make_K(f, f, width / 2.0, height / 2.0).float()


def source_K(K: torch.Tensor, content, source_size) -> torch.Tensor:
    """K [..., 3, 3] of a view (its real pixels at content = [top, left, height, width]) turned back
    into the camera of the full-size image of source_size (h, w): the fitting undone."""
    top, left, height, width = content
    return resize_intrinsics(crop_intrinsics(K, top, left), (height, width), tuple(source_size))


def read_image_folder(source, size: tuple[int, int] | None = None, max_side: int | None = MAX_SIDE,
                      K: torch.Tensor | None = None, fov: float | None = None, cameras=None,
                      progress: bool = False) -> Sample:
    """Read the images of `source` as the views of one `Sample` (see the module docstring);
    `progress` shows a tqdm bar while decoding, where stderr is a terminal."""
    files, folder = _files(source)
    names = [p.name for p in files]
    cams = read_cameras(cameras, names) if cameras is not None else find_cameras(folder, names)
    dropped = []
    if cams is not None and cams.source.startswith(("COLMAP", "cameras JSON")):
        dropped = [n for n in names if n not in cams.views]
        if len(dropped) == len(names):
            raise DatasetError(cams.path, f"none of the {len(names)} images of {folder} is in it "
                                          f"(names such as {names[0]!r})")
        if dropped:
            warnings.warn(f"{cams.path}: {len(dropped)} images not in it left out: {dropped[:5]}")
            files = [p for p in files if p.name not in dropped]
    if cams is not None and cams.distortion:
        warnings.warn(f"{cams.path}: {len(cams.distortion)} images have lens distortion, ignored")

    views = [_plan(p, cams, K, fov) for p in files]
    if size is None:
        capped = [_capped(v["size"], max_side) for v in views]
        size = max(Counter(capped).items(), key=lambda kv: (kv[1], -capped.index(kv[0])))[0]
    H, W = int(size[0]), int(size[1])
    if H < 1 or W < 1:
        raise ValueError(f"size: expected (H, W) >= 1, got {size}")
    images, Ks, content = [], [], []
    for view in tqdm(views, desc="reading images", unit="image", disable=None if progress else True, leave=False):
        image, K_view, box = _load_view(view, (H, W))
        images.append(image)
        Ks.append(K_view)
        content.append(box)
    annotations = {
        "poses_known": bool(cams is not None and cams.poses_known),
        "intrinsics_source": _intrinsics_source(cams, K, fov),
        "files": [v["path"].name for v in views],
        "content": content,
        "source_size": [v["size"] for v in views],
        "source_K": torch.stack([v["K"] for v in views]).float(),  # [V, 3, 3]
    }
    if cams is not None and cams.poses_known:
        annotations["pose_units"] = cams.units
    if dropped:
        annotations["unregistered"] = dropped
    if cams is not None and cams.distortion:
        annotations["colmap_distortion"] = cams.distortion
    annotations["note"] = _note(folder, views, (H, W), content, cams, K, fov, dropped)
    return Sample(
        images=torch.stack(images),  # [V, 3, H, W]
        K=torch.stack(Ks).float(),  # [V, 3, 3]
        w2c=torch.stack([v["w2c"] for v in views]).float(),  # [V, 4, 4]
        scene_id=folder.name,
        view_names=[p.stem for p in files],
        annotations=annotations,
    )


def _files(source) -> tuple[list[Path], Path]:
    """(image files, the folder where cameras are looked for)."""
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        if not files:
            raise ValueError("source: expected a folder or image files, got an empty list")
    elif Path(source).is_file():
        files = [Path(source)]
    else:
        files = io.list_images(source)  # DatasetError: folder not found
        if not files:
            raise DatasetError(source, f"no image files (suffixes {', '.join(io.IMAGE_SUFFIXES)})")
        return files, Path(source)
    for p in files:
        if not p.is_file():
            raise DatasetError(p, "file not found")
    return files, files[0].parent


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.size  # noqa: B018 (the header is read here)
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"cannot decode image ({exc})") from None


def _fits(cam_size, size) -> bool:
    """Whether a camera calibrated at cam_size (H, W) fits an image of `size` up to a resolution
    change: the same aspect ratio within a pixel."""
    (hc, wc), (h, w) = cam_size, size
    return abs(hc * w - wc * h) <= max(hc, wc, h, w)


def _plan(path: Path, cams: KnownCameras | None, K_flag, fov) -> dict:
    """The view's orientation, full size, K at full size and pose, from the header alone."""
    with _open(path) as image:
        stored = (image.size[1], image.size[0])  # (H, W) as stored
        orientation = image.getexif().get(0x0112, 1)
    shown = stored[::-1] if orientation in _SWAPPED else stored
    cam = cams.views.get(path.name) if cams is not None else None
    apply_exif = True
    if cam is not None and cam.size is not None and not _fits(cam.size, shown):
        if not _fits(cam.size, stored):
            raise DatasetError(path, f"{cams.path} gives its camera the size (H, W) = {cam.size}, the image "
                                     f"is {shown}; expected the same aspect ratio")
        apply_exif = False
    full = shown if apply_exif else stored
    if K_flag is not None:
        K = torch.as_tensor(K_flag, dtype=torch.float64)
    elif fov is not None:
        K = assumed_K(*full, fov).double()
    elif cam is not None:
        K = cam.K if cam.size is None else resize_intrinsics(cam.K.double(), cam.size, full)
    else:
        K = assumed_K(*full).double()
    w2c = cam.w2c if cam is not None and cam.w2c is not None else torch.eye(4, dtype=torch.float64)
    return {"path": path, "size": full, "K": K.double(), "w2c": w2c.double(), "exif": orientation != 1,
            "apply_exif": apply_exif}


def _capped(size, max_side) -> tuple[int, int]:
    h, w = size
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _load_view(view: dict, size):
    """(image [3, H, W], K [3, 3] float64, [top, left, height, width] of the real pixels)."""
    H, W = size
    h0, w0 = view["size"]
    s = min(H / h0, W / w0)
    fh, fw = min(H, max(1, round(h0 * s))), min(W, max(1, round(w0 * s)))
    top, left = (H - fh) // 2, (W - fw) // 2
    K_fit = resize_intrinsics(view["K"], (h0, w0), (fh, fw))  # [3, 3]
    image, factor = _decode(view, max(1, math.floor(min(h0 / fh, w0 / fw))))
    if factor != 1 or image.size != (fw, fh):
        # PIL maps the box's edges to the output's edges (pixel centres at +0.5, as K), antialiased
        image = image.resize((fw, fh), Image.BILINEAR, box=(0, 0, w0 / factor, h0 / factor), reducing_gap=2.0)
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0  # [3, fh, fw]
    pixels, K_view = crop(pixels, K_fit, -top, -left, H, W)  # padded with black: [3, H, W]
    return pixels, K_view, [top, left, fh, fw]


def _decode(view: dict, reduce: int) -> tuple[Image.Image, float]:
    """The view's RGB image decoded at 1/factor of its full size (factor <= reduce; JPEG's draft
    mode decodes at 1/2, 1/4 or 1/8 directly), in the planned orientation, and the factor."""
    path = view["path"]
    try:
        with Image.open(path) as image:
            factor = 1.0
            if reduce > 1 and image.format == "JPEG":
                w, h = image.size
                box = image.draft("RGB", (math.ceil(w / reduce), math.ceil(h / reduce)))
                if box is not None:
                    factor = w / box[1][2]  # exactly 1, 2, 4 or 8
            image.load()
            if view["apply_exif"]:
                image = ImageOps.exif_transpose(image)
            return image.convert("RGB"), factor
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"cannot decode image ({exc})") from None


def _intrinsics_source(cams, K, fov) -> str:
    if K is not None:
        return "--K"
    if fov is not None:
        return f"--fov {fov:g} deg"
    if cams is None:
        return f"assumed {ASSUMED_FOV_DEG:g} deg fov"
    return {"COLMAP": "colmap", "LLFF": "llff", "camera": "cameras.json"}.get(cams.source.split()[0],
                                                                              "intrinsics.txt")


def _note(folder, views, size, content, cams, K, fov, dropped) -> str:
    """One line: the images, what was done to them, the cameras found and what was assumed."""
    n = len(views)
    parts = [f"{folder}: {n} image{'s' * (n != 1)}"]
    turned = sum(v["exif"] and v["apply_exif"] for v in views)
    kept = sum(v["exif"] and not v["apply_exif"] for v in views)
    if turned:
        parts.append(f"EXIF orientation applied to {turned}")
    if kept:
        parts.append(f"EXIF orientation not applied to {kept} (the cameras describe the stored pixels)")
    padded = sum(tuple(box[2:]) != tuple(size) for box in content)
    scaled = sum(tuple(v["size"]) != tuple(box[2:]) for v, box in zip(views, content))
    text = f"views {size[0]}x{size[1]}"
    if scaled or padded:
        text += f" ({scaled} resized, {padded} padded to fit)"
    parts.append(text)
    if cams is None:
        found = "no cameras found"
    else:
        found = f"cameras from {cams.source}" + (" (K and poses" if cams.poses_known else " (K only")
        found += f", {cams.units})" if cams.poses_known and cams.units != "metres" else ")"
        if dropped:
            found += f", {len(dropped)} images not in it left out"
    if K is not None:
        found += "; K from --K"
    elif fov is not None:
        found += f"; assuming a {fov:g} degree horizontal field of view (--fov)"
    elif cams is None:
        found += f": assuming a {ASSUMED_FOV_DEG:g} degree horizontal field of view"
    if cams is None or not cams.poses_known:
        found += ", poses unknown"
    parts.append(found)
    return "; ".join(parts)
