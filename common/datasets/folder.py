"""A folder of images, with intrinsics and poses where the folder gives them.

Layout (everything but the images is optional):

    <folder>/<name>.png|.jpg|.jpeg|.bmp|.tif|.tiff|.webp   the views, sorted by name (numbers as numbers)
    <folder>/intrinsics.txt     one camera for every image at its stored size: either the four
                                numbers "fx fy cx cy" or a 3x3 matrix (9 numbers, row-major)
    <folder>/cameras.txt + images.txt   a COLMAP text model (read by `common.cameras.read_colmap_text`):
                                K and w2c per image, matched to the files by image name

Conventions: intrinsics are read as given, in pixels with pixel centres at (u + 0.5, v + 0.5)
(COLMAP uses that convention too). Without intrinsics the views get an assumed 60-degree
horizontal field of view, square pixels and the principal point at the image centre, and
`annotations["intrinsics_source"] = "assumed 60 deg fov"`. Without COLMAP poses every `w2c` is the
identity and `annotations["poses_known"] = False`. Images registered by COLMAP have their poses;
images the model does not list are left out with a warning and named in
`annotations["unregistered"]`.

Images of different sizes are resized to `size=(H, W)` with K adjusted; without `size` they are
an error listing the sizes found. Files whose suffix is not an image suffix are ignored; a file
with an image suffix that does not decode is an error naming it.

`read_matrix_txt` and `read_intrinsics_txt` parse the small text matrices the other readers
(ScanNet, 7-Scenes, KITTI) share.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch

from common.cameras import make_K, read_colmap_text, resize
from common.datasets import io
from common.datasets.io import read_intrinsics_txt, read_matrix_txt  # noqa: F401 (re-exported)
from common.datasets.sample import Sample
from common.errors import DatasetError

ASSUMED_FOV_DEG = 60.0


def assumed_K(height: int, width: int, fov_deg: float = ASSUMED_FOV_DEG) -> torch.Tensor:
    """K [3, 3] for a horizontal field of view `fov_deg`, square pixels, centred principal point."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return make_K(f, f, width / 2.0, height / 2.0).float()


def read_image_folder(folder, size: tuple[int, int] | None = None, resize_mode: str = "bilinear") -> Sample:
    """Read every image in `folder` as the views of one `Sample` (see the module docstring)."""
    folder = Path(folder)
    files = io.list_images(folder)
    if not files:
        raise DatasetError(folder, f"no image files (suffixes {', '.join(io.IMAGE_SUFFIXES)})")
    annotations: dict = {}
    poses = None  # name -> (K [3, 3], w2c [4, 4], (height, width)) from COLMAP
    K_file = None  # from intrinsics.txt; COLMAP's cameras take precedence
    if (folder / "cameras.txt").is_file() or (folder / "images.txt").is_file():
        model = read_colmap_text(folder)
        poses = {
            name: (model["K"][i], model["w2c"][i], (int(model["heights"][i]), int(model["widths"][i])))
            for i, name in enumerate(model["names"])
        }
        annotations["intrinsics_source"] = "colmap"
        annotations["poses_known"] = True
        distorted = {n: d for n, d in zip(model["names"], model["distortion"]) if any(d)}
        if distorted:
            # The images are used as stored: a pinhole Sample cannot express the distortion.
            warnings.warn(f"{folder / 'cameras.txt'}: {len(distorted)} images have lens distortion, ignored")
            annotations["colmap_distortion"] = distorted
        unregistered = [p.name for p in files if p.name not in poses]
        if unregistered:
            warnings.warn(
                f"{folder}: {len(unregistered)} images not in the COLMAP model left out: {unregistered[:5]}"
            )
            annotations["unregistered"] = unregistered
            files = [p for p in files if p.name in poses]
            if not files:
                raise DatasetError(folder / "images.txt", "none of the images is in the COLMAP model")
    else:
        annotations["poses_known"] = False
        if (folder / "intrinsics.txt").is_file():
            K_file = read_intrinsics_txt(folder / "intrinsics.txt")
        assumed = f"assumed {ASSUMED_FOV_DEG:g} deg fov"
        annotations["intrinsics_source"] = "intrinsics.txt" if K_file is not None else assumed

    images = [io.read_rgb(p) for p in files]  # each [3, h, w]; names the file that does not decode
    sizes = {p.name: tuple(im.shape[-2:]) for p, im in zip(files, images)}
    if size is None and len(set(sizes.values())) > 1:
        by_size: dict = {}
        for name, s in sizes.items():
            by_size.setdefault(s, []).append(name)
        listing = "; ".join(f"{s}: {len(n)} files, e.g. {n[0]}" for s, n in by_size.items())
        raise DatasetError(
            folder, f"images have different sizes (H, W) ({listing}); pass size=(H, W) to resize them"
        )

    Ks, w2cs, out = [], [], []
    for p, image in zip(files, images):
        h, w = image.shape[-2:]
        if poses is not None:
            K, w2c, colmap_size = poses[p.name]
            if colmap_size != (h, w):
                raise DatasetError(
                    p, f"COLMAP gives its camera the size (H, W) = {colmap_size}, the image is {(h, w)}"
                )
        else:
            K = K_file if K_file is not None else assumed_K(h, w)
            w2c = torch.eye(4)
        if size is not None and (h, w) != tuple(size):
            image, K = resize(image, K, tuple(size), mode=resize_mode)  # [3, H, W]
        out.append(image)
        Ks.append(torch.as_tensor(K, dtype=torch.float32))
        w2cs.append(torch.as_tensor(w2c, dtype=torch.float32))
    return Sample(
        images=torch.stack(out),  # [V, 3, H, W]
        K=torch.stack(Ks),  # [V, 3, 3]
        w2c=torch.stack(w2cs),  # [V, 4, 4]
        scene_id=folder.name,
        view_names=[p.stem for p in files],
        annotations=annotations,
    )
