"""KITTI depth (the depth completion / prediction benchmark of Uhrig et al. 2017) as single views.

Depth PNGs in every KITTI depth layout are 16-bit, metres * 256, 0 = no measurement (the ground
truth is semi-dense accumulated LiDAR, so most pixels are invalid, and the top ~100 rows hold
none). Conversion: value / 256 -> metres; 0 stays 0 and invalid.

Layout 1, `val_selection_cropped` (self-contained, 1216x352 crops):

    <root>/image/<drive>_image_<frame>_image_0X.png
    <root>/groundtruth_depth/<drive>_groundtruth_depth_<frame>_image_0X.png
    <root>/intrinsics/<drive>_image_<frame>_image_0X.txt        9 floats, K row-major
    (<root>/velodyne_raw/<drive>_velodyne_raw_<frame>_image_0X.png, sparse input; not read)

  with <drive> = e.g. "2011_09_26_drive_0002_sync". Files are matched from the image: the depth
  file is the image name with its first "_image_" (the one after the drive name, not the
  trailing "image_0X") replaced by "_groundtruth_depth_", and the intrinsics file is the image
  stem + ".txt". Where the depth folder holds a file of the image's own name (the anonymous test
  layouts, `0000000000.png` in every folder) that file is used instead.

Layout 2, the annotated depth maps beside KITTI raw:

    <annotated>/<drive>/proj_depth/groundtruth/image_02/<frame>.png     (pass .../train or .../val)
    <raw>/<date>/<drive>/image_02/data/<frame>.png                      RGB, ~1242x375
    <raw>/<date>/calib_cam_to_cam.txt                                   line "P_rect_02: 12 floats"

  <date> is the first 10 characters of the drive name; K is the left 3x3 of the rectified
  projection matrix P_rect_02 (P_rect_03 for image_03).

Conventions: K is used as KITTI gives it. KITTI does not state its pixel-centre convention (its
calibration toolbox is MATLAB-based, and some loaders subtract 1 when rasterising LiDAR points),
so a sub-pixel offset against our +0.5 convention is possible. Poses between frames are not read
(w2c is the identity and `annotations["poses_known"] = False`); each `Sample` has one view.

`kitti_eval_mask` gives the Garg or Eigen crop used in evaluation (fractions of the image size,
as in BTS / monodepth2); the 1e-3..80 m depth cap is the metric's business, not the reader's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from common.datasets import io
from common.datasets.io import read_matrix_txt
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

DEPTH_SCALE = 256.0

# Row and column fractions [top, bottom, left, right) of the evaluation crops.
CROPS = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}


@dataclass(frozen=True)
class KittiFrame:
    """One view: the files it is read from. `camera` None: `intrinsics` is a 9-float K file;
    "image_02"/"image_03": `intrinsics` is a calib_cam_to_cam.txt and K comes from P_rect_0X."""

    image: Path
    depth: Path
    intrinsics: Path
    camera: str | None
    scene_id: str
    name: str


def read_kitti_calib_K(calib_path, camera: str = "image_02") -> torch.Tensor:
    """K [3, 3] float32 from the rectified projection P_rect_0X in a calib_cam_to_cam.txt."""
    path = Path(calib_path)
    key = "P_rect_" + camera[-2:]
    if not path.is_file():
        raise DatasetError(path, "file not found")
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == key:
            try:
                P = torch.tensor([float(t) for t in rest.split()], dtype=torch.float64)
            except ValueError:
                raise DatasetError(path, f"{key}: cannot parse numbers in {rest.strip()!r}") from None
            if P.numel() != 12 or not torch.isfinite(P).all():
                raise DatasetError(path, f"{key}: expected 12 finite numbers (3x4), got {P.numel()}")
            return P.reshape(3, 4)[:, :3].float()
    raise DatasetError(path, f"no line {key!r}")


def read_kitti_frame(frame: KittiFrame) -> Sample:
    """One frame as a single-view `Sample` (depth in metres, see the module docstring)."""
    image = io.read_rgb(frame.image)  # [3, H, W]
    depth = io.read_depth_png(frame.depth, DEPTH_SCALE, tuple(image.shape[-2:]))  # [H, W]
    if frame.camera is None:
        K = torch.from_numpy(read_matrix_txt(frame.intrinsics, (3, 3))).float()
    else:
        K = read_kitti_calib_K(frame.intrinsics, frame.camera)
    depth, valid = valid_from_depth(depth[None])  # [1, H, W]
    return Sample(
        images=image[None],  # [1, 3, H, W]
        K=K[None],  # [1, 3, 3]
        w2c=torch.eye(4)[None],  # [1, 4, 4]
        depth=depth,
        valid=valid,
        scene_id=frame.scene_id,
        view_names=[frame.name],
        annotations={"poses_known": False, "files": {"image": str(frame.image), "depth": str(frame.depth)}},
    )


def kitti_val_selection_frames(root) -> list[KittiFrame]:
    """The frames of a `val_selection_cropped` (or anonymous test) folder, every file checked."""
    root = Path(root)
    frames = []
    for image in io.list_images(root / "image"):
        depth = root / "groundtruth_depth" / image.name
        if not depth.is_file():
            depth = root / "groundtruth_depth" / image.name.replace("_image_", "_groundtruth_depth_", 1)
        intrinsics = root / "intrinsics" / f"{image.stem}.txt"
        for path in (depth, intrinsics):
            if not path.is_file():
                raise DatasetError(path, f"file not found (expected for {image.name})")
        drive = re.match(r"(.*_sync)_", image.name)
        scene_id = drive.group(1) if drive else root.name
        frames.append(KittiFrame(image, depth, intrinsics, None, scene_id, image.stem))
    if not frames:
        raise DatasetError(root / "image", "no images")
    return frames


def kitti_annotated_frames(
    annotated_dir, raw_dir, camera: str = "image_02", drives: Sequence[str] | None = None
) -> list[KittiFrame]:
    """The frames of the annotated depth maps in `annotated_dir` (one folder per drive) with
    their RGB and calibration from KITTI raw in `raw_dir`; every file is checked up front."""
    if camera not in ("image_02", "image_03"):
        raise ValueError(f"camera must be 'image_02' or 'image_03', got {camera!r}")
    annotated_dir, raw_dir = Path(annotated_dir), Path(raw_dir)
    if not annotated_dir.is_dir():
        raise DatasetError(annotated_dir, "annotated depth folder not found")
    if drives is None:
        drives = sorted(p.name for p in annotated_dir.iterdir() if (p / "proj_depth").is_dir())
    frames = []
    for drive in drives:
        date = drive[:10]
        calib = raw_dir / date / "calib_cam_to_cam.txt"
        if not calib.is_file():
            raise DatasetError(calib, f"file not found (calibration of drive {drive})")
        for depth in io.list_images(annotated_dir / drive / "proj_depth" / "groundtruth" / camera):
            image = raw_dir / date / drive / camera / "data" / depth.name
            if not image.is_file():
                raise DatasetError(image, f"file not found (the RGB of {depth})")
            frames.append(KittiFrame(image, depth, calib, camera, drive, depth.stem))
    if not frames:
        raise DatasetError(annotated_dir, f"no depth maps under <drive>/proj_depth/groundtruth/{camera}/")
    return frames


class KittiDepthDataset(torch.utils.data.Dataset):
    """KITTI depth frames as single-view `Sample`s.

    `KittiDepthDataset.val_selection(root)` or `KittiDepthDataset.annotated(annotated, raw)`.
    """

    def __init__(self, frames: Sequence[KittiFrame]):
        self.frames = list(frames)

    @classmethod
    def val_selection(cls, root) -> "KittiDepthDataset":
        return cls(kitti_val_selection_frames(root))

    @classmethod
    def annotated(cls, annotated_dir, raw_dir, camera: str = "image_02", drives=None) -> "KittiDepthDataset":
        return cls(kitti_annotated_frames(annotated_dir, raw_dir, camera, drives))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:
        return read_kitti_frame(self.frames[i])


def kitti_eval_mask(height: int, width: int, crop: str = "garg") -> torch.Tensor:
    """bool [H, W], True inside the Garg or Eigen evaluation crop (int() of the fractions)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
    top, bottom, left, right = CROPS[crop]
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    return mask
