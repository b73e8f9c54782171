"""Cameras that come with a user's photos: COLMAP, LLFF and a cameras JSON, found and read in one form.

`find_cameras(folder, names)` looks, in this order, and reads the first it finds:

  1. a COLMAP model, text (cameras.txt + images.txt) or binary (cameras.bin + images.bin, read with
     pycolmap), in the folder, its `sparse/0/` or `sparse/`, or the parent's `sparse/0/` or `sparse/`
     (COLMAP's project layout `images/` + `sparse/0/`);
  2. `cameras.json` in the folder or its parent (schema below);
  3. LLFF `poses_bounds.npy` in the folder or its parent: rows are matched to the images in sorted
     file-name order (LLFF's own order), and there must be one row per image;
  4. `intrinsics.txt` in the folder: one K ("fx fy cx cy" or a 3x3 matrix) for every image at its
     full size, no poses.

`read_cameras(path, names)` reads one given path instead: a COLMAP model folder, a `.json` or a
`.npy`. Both return `KnownCameras` (None where `find_cameras` finds nothing). Images are matched to
COLMAP and JSON entries by file name, then by base name (COLMAP names may hold sub-folders), then by
stem where it is unique (a model written for `a.png` still fits `a.jpg`).

The cameras JSON schema: OpenCV cameras (x right, y down, z forward), K in pixels with pixel
centres at (u + 0.5, v + 0.5) for an image of (width, height), w2c world-to-camera, translations in
metres unless "units" says otherwise. `ivgt.demo` writes this file.

    {"units": "metres",                                  optional
     "width": 1000, "height": 1334,                      optional: every view's size unless it gives its own
     "views": [{"name": "IMG_0001.jpg",                  the image's file name
                "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],   or [fx, fy, cx, cy]
                "w2c": [[r, r, r, t], [r, r, r, t], [r, r, r, t], [0, 0, 0, 1]],   optional: all views or none
                "width": 1000, "height": 1334}]}             optional per view

Every camera keeps the image size it was calibrated at (None: the image's own full size); the
loader (`common.datasets.folder`) scales K to the image where only the resolution differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.cameras import make_K, read_colmap_text, read_llff_poses_bounds
from common.cameras.formats import _COLMAP_MODELS  # the models read_colmap_text reads
from common.datasets import io
from common.errors import DatasetError

COLMAP_PLACES = ("", "sparse/0", "sparse")  # under the folder; under its parent only the last two


@dataclass
class KnownCamera:
    K: torch.Tensor  # [3, 3] float64, pixels of an image of `size`
    size: tuple[int, int] | None  # (H, W) that K is for; None: the image's own full size
    w2c: torch.Tensor | None = None  # [4, 4] float64, world-to-camera; None: pose unknown


@dataclass
class KnownCameras:
    source: str  # what was found, for the loader's note: "COLMAP binary model photos/sparse/0"
    path: Path
    views: dict[str, KnownCamera]  # image file name -> its camera; images not listed have none
    poses_known: bool
    units: str = "metres"
    distortion: dict[str, list] = field(default_factory=dict)  # name -> COLMAP distortion, if any


def find_cameras(folder, names: list[str]) -> KnownCameras | None:
    """The cameras found beside the images `names` of `folder` (module docstring), or None."""
    folder = Path(folder)
    places = [folder / p for p in COLMAP_PLACES] + [folder.parent / p for p in COLMAP_PLACES[1:]]
    for place in places:
        if _has_colmap(place):
            return read_colmap_cameras(place, names)
    for place in (folder, folder.parent):
        if (place / "cameras.json").is_file():
            return read_cameras_json(place / "cameras.json", names)
    for place in (folder, folder.parent):
        if (place / "poses_bounds.npy").is_file():
            return read_llff_cameras(place / "poses_bounds.npy", names)
    if (folder / "intrinsics.txt").is_file():
        K = io.read_intrinsics_txt(folder / "intrinsics.txt").double()
        return KnownCameras("intrinsics.txt (K only)", folder / "intrinsics.txt",
                            {n: KnownCamera(K, None) for n in names}, poses_known=False)
    return None


def read_cameras(path, names: list[str]) -> KnownCameras:
    """The cameras of one given file or folder: a COLMAP model folder, a cameras JSON or an LLFF
    poses_bounds.npy; DatasetError naming `path` for anything else."""
    path = Path(path)
    if path.is_dir():
        for place in (path / p for p in COLMAP_PLACES):
            if _has_colmap(place):
                return read_colmap_cameras(place, names)
        raise DatasetError(path, "no COLMAP model (cameras.txt + images.txt or cameras.bin + images.bin)")
    if not path.is_file():
        raise DatasetError(path, "cameras file not found")
    if path.suffix.lower() == ".json":
        return read_cameras_json(path, names)
    if path.suffix.lower() == ".npy":
        return read_llff_cameras(path, names)
    raise DatasetError(path, "expected a COLMAP model folder, a cameras .json or an LLFF poses_bounds.npy")


def _has_colmap(place: Path) -> bool:
    return all((place / f).is_file() for f in ("cameras.txt", "images.txt")) or all(
        (place / f).is_file() for f in ("cameras.bin", "images.bin"))


def _match(model_names: list[str], names: list[str]) -> dict[str, int]:
    """image file name -> index into model_names: by name, base name, then unique stem."""
    exact = {n: i for i, n in enumerate(model_names)}
    base = {Path(n).name: i for i, n in enumerate(model_names)}
    stems: dict[str, list[int]] = {}
    for i, n in enumerate(model_names):
        stems.setdefault(Path(n).stem, []).append(i)
    out = {}
    for name in names:
        if name in exact:
            out[name] = exact[name]
        elif name in base:
            out[name] = base[name]
        elif len(stems.get(Path(name).stem, [])) == 1:
            out[name] = stems[Path(name).stem][0]
    return out


# -- COLMAP ------------------------------------------------------------------------------------


def read_colmap_model(folder) -> dict:
    """A COLMAP model in `folder`, text or binary, in `common.cameras.read_colmap_text`'s form."""
    folder = Path(folder)
    if (folder / "cameras.txt").is_file() or (folder / "images.txt").is_file():
        return read_colmap_text(folder)
    return _read_colmap_binary(folder)


def _read_colmap_binary(folder: Path) -> dict:
    try:
        import pycolmap
    except ImportError:
        raise DatasetError(folder, "a binary COLMAP model needs pycolmap (pip install pycolmap), "
                                   "or convert it to text with `colmap model_converter`") from None
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as exc:  # pycolmap raises its own kinds for a file it cannot parse
        raise DatasetError(folder, f"cannot read the binary COLMAP model ({exc})") from None
    out = {key: [] for key in ("names", "image_ids", "camera_ids", "camera_models", "distortion")}
    Ks, w2cs, sizes = [], [], []
    for image_id in sorted(rec.images):
        image = rec.images[image_id]
        camera = rec.cameras[image.camera_id]
        model = camera.model.name
        if model not in _COLMAP_MODELS:
            raise DatasetError(folder / "cameras.bin", f"camera model {model!r} of camera {image.camera_id} "
                                                      f"is not supported; expected one of {', '.join(_COLMAP_MODELS)}")
        params = list(camera.params)
        fx, fy, cx, cy, rest = ((params[0], params[0], params[1], params[2], params[3:])
                                if _COLMAP_MODELS[model][0] == "f" else (*params[:4], params[4:]))
        pose = image.cam_from_world() if callable(image.cam_from_world) else image.cam_from_world
        w2c = np.eye(4)
        w2c[:3] = np.asarray(pose.matrix())  # [3, 4]
        out["names"].append(image.name)
        out["image_ids"].append(int(image_id))
        out["camera_ids"].append(int(image.camera_id))
        out["camera_models"].append(model)
        out["distortion"].append([float(v) for v in rest])
        Ks.append((fx, fy, cx, cy))
        w2cs.append(w2c)
        sizes.append((camera.height, camera.width))
    if not Ks:
        raise DatasetError(folder / "images.bin", "no images found")
    fx, fy, cx, cy = torch.tensor(Ks, dtype=torch.float64).unbind(-1)  # [N] each
    size = torch.tensor(sizes, dtype=torch.int64)  # [N, 2]
    out.update(K=make_K(fx, fy, cx, cy), w2c=torch.from_numpy(np.stack(w2cs)), heights=size[:, 0],
               widths=size[:, 1])
    return out


def read_colmap_cameras(folder, names: list[str]) -> KnownCameras:
    folder = Path(folder)
    kind = "text" if (folder / "cameras.txt").is_file() else "binary"
    model = read_colmap_model(folder)
    match = _match(model["names"], names)
    views = {n: KnownCamera(model["K"][i], (int(model["heights"][i]), int(model["widths"][i])), model["w2c"][i])
             for n, i in match.items()}
    distortion = {n: model["distortion"][i] for n, i in match.items() if any(model["distortion"][i])}
    return KnownCameras(f"COLMAP {kind} model {folder}", folder, views, poses_known=True, distortion=distortion)


# -- LLFF --------------------------------------------------------------------------------------


def read_llff_cameras(path, names: list[str]) -> KnownCameras:
    path = Path(path)
    llff = read_llff_poses_bounds(path)
    n = llff["K"].shape[0]
    if n != len(names):
        raise DatasetError(path, f"{n} cameras for {len(names)} images; expected one row per image "
                                 f"(matched in sorted file-name order)")
    size = (llff["height"], llff["width"])
    views = {name: KnownCamera(llff["K"][i], size, llff["w2c"][i]) for i, name in enumerate(sorted(names))}
    return KnownCameras(f"LLFF {path}", path, views, poses_known=True)


# -- cameras JSON ------------------------------------------------------------------------------


def read_cameras_json(path, names: list[str]) -> KnownCameras:
    path = Path(path)
    data = io.read_json(path)
    views = data.get("views") if isinstance(data, dict) else None
    if not isinstance(views, list) or not views:
        raise DatasetError(path, "expected {\"views\": [{\"name\": ..., \"K\": ..., \"w2c\": ...}, ...]} "
                                 "(common.datasets.camera_files)")
    units = data.get("units", "metres")
    entries = []
    for i, view in enumerate(views):
        where = f"views[{i}]"
        if not isinstance(view, dict) or not isinstance(view.get("name"), str):
            raise DatasetError(path, f"{where}: expected an object with a \"name\" string")
        K = _json_K(path, f"{where}.K", view.get("K"))
        size = _json_size(path, where, view, data)
        w2c = None if view.get("w2c") is None else _json_matrix(path, f"{where}.w2c", view["w2c"], (4, 4))
        entries.append((view["name"], KnownCamera(K, size, w2c)))
    with_pose = sum(e.w2c is not None for _, e in entries)
    if 0 < with_pose < len(entries):
        raise DatasetError(path, f"{with_pose} of {len(entries)} views have a w2c; expected all or none")
    match = _match([n for n, _ in entries], names)
    return KnownCameras(f"cameras JSON {path}", path, {n: entries[i][1] for n, i in match.items()},
                        poses_known=with_pose > 0, units=str(units))


def _json_matrix(path, where: str, value, shape) -> torch.Tensor:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != shape or not np.isfinite(m).all():
        raise DatasetError(path, f"{where}: expected a finite {shape[0]}x{shape[1]} matrix, got {value!r}")
    return torch.from_numpy(m)


def _json_K(path, where: str, value) -> torch.Tensor:
    if isinstance(value, list) and len(value) == 4 and not isinstance(value[0], list):
        value = [[value[0], 0, value[2]], [0, value[1], value[3]], [0, 0, 1]]
    K = _json_matrix(path, where, value, (3, 3))
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise DatasetError(path, f"{where}: expected focal lengths fx, fy > 0, got {K.tolist()}")
    return K


def _json_size(path, where: str, view: dict, data: dict) -> tuple[int, int] | None:
    width, height = view.get("width", data.get("width")), view.get("height", data.get("height"))
    if width is None and height is None:
        return None
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 1
             and v == int(v) for v in (width, height))
    if not ok:
        raise DatasetError(path, f"{where}: expected integer width and height >= 1, got {width!r}, {height!r}")
    return int(height), int(width)
