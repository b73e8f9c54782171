"""EndoNeRF clips (Wang et al., MICCAI 2022; `pulling_soft_tissues`, `cutting_tissues_twice`) and
StereoMIS clips converted to the same layout (Deform3DGS's `stereomis2endonerf.py`).

Layout, one folder per clip (frames matched by sorted position, numbers compared as numbers):

    <clip>/images/*.png         640x512 RGB from the left camera of a da Vinci stereo endoscope
    <clip>/depth/*.png          stereo depth (STTR-light / RAFT), 0 = invalid, units the dataset's
    <clip>/masks/*.png          binary tool masks: white (255) = tool in EndoNeRF; inverted (white =
                                tissue) in the StereoMIS conversions -> `tool_is_white=False`
    <clip>/poses_bounds.npy     LLFF [N, 17]: 3x5 [R | t | (H, W, focal)] + near, far per frame

Conversions to the `Sample` conventions:
- depth: PNG value / `depth_scale`, from 8-bit (EndoNeRF) or 16-bit (StereoMIS conversions) grey
  PNGs; an RGB depth PNG is an error. The depth maps are not in metres and their scale is not
  documented (loaders rescale them: EndoGaussian clips to percentiles, SurgicalGaussian divides by
  100), so the default 1.0 returns the stored values in the dataset's own units; 0 stays invalid.
- tool mask: `Sample.masks["tool"]`, True on instrument pixels (the loaders' tissue mask is its
  complement);
- cameras: `common.cameras.read_llff_poses_bounds` (principal point at the image centre, fx = fy
  = focal; LLFF's (down, right, back) axes converted to OpenCV). The camera never moves in these
  clips (every stored pose is the identity), so by default (`relative_to_first=True`) the world
  frame is the first frame's camera frame and every w2c is the identity, which is how EndoGaussian
  uses these matrices; `relative_to_first=False` keeps the LLFF world frame (a fixed rotation).
  If the images are smaller than the (H, W) in poses_bounds.npy (a downsampled copy), K is scaled
  to them as LLFF loaders do; a different aspect ratio is an error.
- times: `times[i] = i / N` for frame i (0-based) of the N frames of the whole clip, so they lie in
  [0, (N - 1) / N] and a frame keeps its time whichever frames are read (EndoGaussian's
  `idx / len(poses)`). They are normalised time, not seconds: the layout has no frame rate.

Split (`endonerf_split`): frame i is a test frame iff (i - 1) % 8 == 0 with Python's modulo,
i.e. frames 1, 9, 17, ...; frame 0 is a training frame (EndoNeRF / EndoGaussian loaders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from common.cameras import invert_pose, read_llff_poses_bounds, resize_intrinsics
from common.datasets import io
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

TEST_EVERY = 8


def endonerf_split(num_frames: int, split: str) -> list[int]:
    """Frame indices of `split` ("train", "test" or "all") for a clip of `num_frames` frames."""
    frames = range(num_frames)
    if split == "test":
        return [i for i in frames if (i - 1) % TEST_EVERY == 0]
    if split == "train":
        return [i for i in frames if (i - 1) % TEST_EVERY != 0]
    if split == "all":
        return list(frames)
    raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")


class EndoNeRFClip:
    """The file lists and cameras of one clip, checked up front; `read(frames)` reads views."""

    def __init__(
        self, clip_dir, depth_scale: float = 1.0, tool_is_white: bool = True, relative_to_first: bool = True
    ):
        self.dir = Path(clip_dir)
        if not self.dir.is_dir():
            raise DatasetError(self.dir, "clip folder not found")
        depth_scale = io.check_depth_scale(self.dir, depth_scale, "depth_scale")
        self.depth_scale, self.tool_is_white = depth_scale, tool_is_white
        self.images = io.list_images(self.dir / "images")
        self.depths = io.list_images(self.dir / "depth")
        self.masks = io.list_images(self.dir / "masks")
        if not self.images:
            raise DatasetError(self.dir / "images", "no images")
        self.llff = read_llff_poses_bounds(self.dir / "poses_bounds.npy")
        counts = {"images/": len(self.images), "depth/": len(self.depths), "masks/": len(self.masks),
                  "poses_bounds.npy": len(self.llff["w2c"])}
        if len(set(counts.values())) > 1:
            raise DatasetError(self.dir, f"expected one entry per frame everywhere, got counts {counts}")
        w2c = self.llff["w2c"]  # [N, 4, 4] float64
        self.w2c = (w2c @ invert_pose(w2c[:1]) if relative_to_first else w2c).float()  # [N, 4, 4]
        self.K = self.llff["K"].float()  # [N, 3, 3] at the poses_bounds size
        self.num_frames = len(self.images)

    def read(self, frames: Sequence[int] | None = None) -> Sample:
        frames = list(range(self.num_frames)) if frames is None else list(frames)
        bad = [i for i in frames if not 0 <= i < self.num_frames]
        if bad:
            raise DatasetError(
                self.dir, f"frame indices {bad[:10]} out of range (the clip has {self.num_frames} frames)"
            )
        images, depths, tools = [], [], []
        size = None
        for i in frames:
            image = io.read_rgb(self.images[i], size)  # [3, H, W]
            size = tuple(image.shape[-2:])
            images.append(image)
            # EndoNeRF's own depth maps are 8-bit, the StereoMIS conversions 16-bit: both are read.
            depth = io.read_depth_png(self.depths[i], self.depth_scale, size, allow_8bit=True)  # [H, W]
            depths.append(depth)
            white = io.read_mask(self.masks[i], size)  # [H, W]
            tools.append(white if self.tool_is_white else ~white)
        depth, valid = valid_from_depth(torch.stack(depths))  # [V, H, W]
        return Sample(
            images=torch.stack(images),  # [V, 3, H, W]
            K=self._K(size)[frames],  # [V, 3, 3]
            w2c=self.w2c[frames],  # [V, 4, 4]
            depth=depth,
            valid=valid,
            masks={"tool": torch.stack(tools)},  # [V, H, W]
            times=torch.tensor(frames, dtype=torch.float32) / self.num_frames,  # [V]
            scene_id=self.dir.name,
            view_names=[self.images[i].stem for i in frames],
            annotations={
                "near_far": self.llff["near_far"][frames].tolist(),
                "depth_scale": self.depth_scale,  # depth = PNG value / depth_scale, in the dataset's units
            },
        )

    def _K(self, size) -> torch.Tensor:
        H0, W0 = self.llff["height"], self.llff["width"]
        if tuple(size) == (H0, W0):
            return self.K
        if abs(size[0] * W0 - size[1] * H0) > max(H0, W0):  # aspect ratios differ by more than a pixel
            raise DatasetError(
                self.dir / "poses_bounds.npy", f"cameras are for (H, W) = {(H0, W0)}, the images are {size}"
            )
        return resize_intrinsics(self.K, (H0, W0), size)


def read_endonerf(
    clip_dir, frames: Sequence[int] | None = None, depth_scale: float = 1.0, tool_is_white: bool = True,
    relative_to_first: bool = True,
) -> Sample:
    """Frames of an EndoNeRF-layout clip as one `Sample` (all frames by default)."""
    return EndoNeRFClip(clip_dir, depth_scale, tool_is_white, relative_to_first).read(frames)


class EndoNeRFDataset(torch.utils.data.Dataset):
    """The frames of one clip's split as single-view `Sample`s (with their clip-relative times)."""

    def __init__(self, clip_dir, split: str = "train", depth_scale: float = 1.0, tool_is_white: bool = True,
                 relative_to_first: bool = True):
        self.clip = EndoNeRFClip(clip_dir, depth_scale, tool_is_white, relative_to_first)
        self.frames = endonerf_split(self.clip.num_frames, split)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> Sample:
        return self.clip.read([self.frames[i]])
