"""Microsoft 7-Scenes (RGB-D relocalisation; chess, fire, heads, office, pumpkin, redkitchen, stairs).

Layout, one folder per scene as unpacked from the official zips:

    <scene>/TrainSplit.txt, TestSplit.txt      one line per sequence: "sequence1", "sequence2", ...
    <scene>/seq-01/frame-000000.color.png      640x480 8-bit RGB
    <scene>/seq-01/frame-000000.depth.png      640x480 16-bit depth in millimetres, 65535 = invalid
    <scene>/seq-01/frame-000000.pose.txt       4x4 camera-to-world, metres (KinectFusion tracking)

Conversions to the `Sample` conventions:
- depth: PNG value / 1000 -> metres; 0 and 65535 become 0 and invalid;
- poses: camera-to-world with OpenCV axes, so `w2c = invert_pose(c2w)`; a non-finite pose is an
  error naming the file;
- intrinsics: 7-Scenes ships no calibration. K is the default KinectFusion depth camera that the
  dataset page gives, fx = fy = 585, (cx, cy) = (320, 240) at 640x480, i.e. the image centre in
  our pixel-centre convention. `focal` overrides the focal length (several relocalisation papers
  use 525 for the colour camera).

Known caveat: the colour and depth cameras are not calibrated to each other, and the frames are
the raw, unregistered images, so colour and depth are misaligned by a few pixels and the colour
camera's focal length differs from 585. The poses belong to the depth camera. Use depth for
geometry and treat colour/depth correspondence as approximate; `annotations["registration"]`
says so on every sample.

`scene_id` is "<scene>/<sequence>", e.g. "chess/seq-01"; view names are the frame stems.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common.cameras import invert_pose, make_K, resize_intrinsics
from common.datasets import io
from common.datasets.io import read_matrix_txt
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

FOCAL, CX, CY, WIDTH, HEIGHT = 585.0, 320.0, 240.0, 640, 480
INVALID_DEPTH = 65535
REGISTRATION_NOTE = (
    "colour and depth are not registered (uncalibrated Kinect); K and poses are the depth camera's"
)


def read_seven_scenes_split(scene_dir, split: str) -> list[str]:
    """The sequence folders ("seq-01", ...) of `split` ("train" or "test") from <Split>Split.txt."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(scene_dir) / f"{split.capitalize()}Split.txt"
    if not path.is_file():
        raise DatasetError(path, "split file not found")
    seqs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*sequence(\d+)\s*", line, flags=re.IGNORECASE)
        if m is None:
            raise DatasetError(path, f"line {n}: expected 'sequence<number>', got {line.strip()!r}")
        seqs.append(f"seq-{int(m.group(1)):02d}")
    if not seqs:
        raise DatasetError(path, "no sequences listed")
    return seqs


def seven_scenes_frames(seq_dir) -> list[str]:
    """The frame stems ("frame-000000", ...) of a sequence, in order."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise DatasetError(seq_dir, "sequence folder not found")
    stems = [p.name[: -len(".color.png")] for p in seq_dir.glob("frame-*.color.png")]
    if not stems:
        raise DatasetError(seq_dir, "no frame-*.color.png files")
    return sorted(stems, key=io.natural_key)


def read_seven_scenes_sequence(
    seq_dir, frames: Sequence[int] | None = None, stride: int = 1, focal: float = FOCAL
) -> Sample:
    """Frames of one sequence as a `Sample`; `frames` are positions in the sorted frame list."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    seq_dir = Path(seq_dir)
    stems = seven_scenes_frames(seq_dir)
    if frames is not None:
        bad = [i for i in frames if not 0 <= i < len(stems)]
        if bad:
            raise DatasetError(
                seq_dir, f"frame indices {bad[:10]} out of range (the sequence has {len(stems)} frames)"
            )
        stems = [stems[i] for i in frames]
    stems = stems[::stride]
    images, depths, c2ws = [], [], []
    size = None
    for stem in stems:
        image = io.read_rgb(seq_dir / f"{stem}.color.png", size)  # [3, H, W]
        size = tuple(image.shape[-2:])
        raw = io.read_depth_png(seq_dir / f"{stem}.depth.png", 1.0, size)  # [H, W] raw millimetres
        depths.append(torch.where(raw == INVALID_DEPTH, torch.zeros_like(raw), raw / 1000.0))
        images.append(image)
        c2ws.append(read_matrix_txt(seq_dir / f"{stem}.pose.txt", (4, 4)))
    H, W = size
    # The nominal intrinsics are for 640x480; scale them if a copy was resized.
    K = resize_intrinsics(make_K(focal, focal, CX, CY), (HEIGHT, WIDTH), (H, W)).float()
    depth, valid = valid_from_depth(torch.stack(depths))  # [V, H, W]
    return Sample(
        images=torch.stack(images),  # [V, 3, H, W]
        K=K.expand(len(stems), 3, 3).clone(),  # [V, 3, 3]
        w2c=invert_pose(torch.from_numpy(np.stack(c2ws))).float(),  # [V, 4, 4]
        depth=depth,
        valid=valid,
        scene_id=f"{seq_dir.parent.name}/{seq_dir.name}",
        view_names=stems,
        annotations={"registration": REGISTRATION_NOTE},
    )


class SevenScenesDataset(torch.utils.data.Dataset):
    """Windows of `num_views` consecutive frames (after `stride`) from one scene's split.

    Windows do not overlap; each sequence's last incomplete window is dropped.
    """

    def __init__(
        self, scene_dir, split: str = "train", stride: int = 1, num_views: int = 1, focal: float = FOCAL
    ):
        self.scene_dir, self.focal = Path(scene_dir), focal
        self.windows: list[tuple[str, list[int]]] = []
        for seq in read_seven_scenes_split(self.scene_dir, split):
            n = len(seven_scenes_frames(self.scene_dir / seq))
            picked = list(range(0, n, stride))
            for start in range(0, len(picked) - num_views + 1, num_views):
                self.windows.append((seq, picked[start : start + num_views]))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> Sample:
        seq, frames = self.windows[i]
        return read_seven_scenes_sequence(self.scene_dir / seq, frames=frames, focal=self.focal)
