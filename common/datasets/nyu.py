"""NYU Depth v2 (Silberman et al. 2012): the labeled subset, from its .mat file or exported PNGs.

Layout 1, `nyu_depth_v2_labeled.mat` (MATLAB v7.3, i.e. HDF5, read with h5py). MATLAB stores
arrays column-major, so h5py sees every array with its axes reversed:

    images   uint8   [N, 3, W, H]  = MATLAB's H x W x 3 x N       (N = 1449, W = 640, H = 480)
    depths   float32 [N, W, H]     metres, in-painted (dense)      = MATLAB's H x W x N

  Each view is transposed back to [3, H, W] / [H, W]. Other datasets in the file (labels,
  instances, rawDepths, ...) are not read. `read_nyu_split(splits.mat, "train" | "test")` gives the
  standard 795 / 654 split (`trainNdxs` / `testNdxs`, 1-based in the file) as 0-based indices.

Layout 2, an exported folder (this project's choice of names):

    <root>/rgb/<name>.png (or .jpg)       8-bit RGB, 640x480
    <root>/depth/<name>.png               16-bit depth in millimetres (`depth_scale`), 0 = invalid

  Images and depth maps are matched by file stem; a stem without its partner is an error.

Intrinsics: the NYU toolbox's colour camera (`camera_params.m`): fx = 518.8579, fy = 519.4696,
cx = 325.5824, cy = 253.7362 at 640x480. These are MATLAB pixel coordinates, where the centre
of the first pixel is 1; in our convention it is 0.5, so cx and cy are reduced by 0.5 (cx =
325.0824, cy = 253.2362). The labeled depth is registered to the colour camera by the toolbox,
so one K serves both. Lens distortion (k1 = 0.2078, small) is ignored, as every NYU loader does.
Images of another size are an error unless a `K` for them is given.

`nyu_eigen_crop_mask()` is the crop commonly used for evaluation (Eigen et al. 2014): rows 45:471
and columns 41:601 of the 480x640 image, 0-based and half-open; it removes the white border left
by the registration. Poses are not part of the subset: w2c is the identity and
`annotations["poses_known"] = False`; each `Sample` has one view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common.cameras import make_K
from common.datasets import io
from common.datasets.sample import Sample, valid_from_depth
from common.errors import DatasetError

HEIGHT, WIDTH = 480, 640
# NYU toolbox camera_params.m (MATLAB, 1-based pixel centres) -> ours: cx, cy - 0.5.
FX, FY, CX_MATLAB, CY_MATLAB = 518.8579, 519.4696, 325.5824, 253.7362
EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), cols [41, 601) of 480x640


def nyu_intrinsics() -> torch.Tensor:
    """K [3, 3] float32 of NYU v2's colour camera at 640x480 in our pixel convention."""
    return make_K(FX, FY, CX_MATLAB - 0.5, CY_MATLAB - 0.5).float()


def nyu_eigen_crop_mask(height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    """bool [480, 640], True inside the Eigen crop; only defined for the native size."""
    if (height, width) != (HEIGHT, WIDTH):
        raise ValueError(f"the Eigen crop is defined for 480x640 images, got {height}x{width}")
    top, bottom, left, right = EIGEN_CROP
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top:bottom, left:right] = True
    return mask


def _sample(image: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, scene_id: str, name: str) -> Sample:
    depth, valid = valid_from_depth(depth[None])  # [1, H, W]
    return Sample(
        images=image[None],  # [1, 3, H, W]
        K=K[None],  # [1, 3, 3]
        w2c=torch.eye(4)[None],  # [1, 4, 4]
        depth=depth,
        valid=valid,
        scene_id=scene_id,
        view_names=[name],
        annotations={"poses_known": False},
    )


def _check_K_size(path, size, K) -> torch.Tensor:
    if K is not None:
        return torch.as_tensor(K, dtype=torch.float32)
    if tuple(size) != (HEIGHT, WIDTH):
        raise DatasetError(path, f"expected NYU's 480x640, got {size[0]}x{size[1]}; pass K for other sizes")
    return nyu_intrinsics()


class NYUv2Labeled(torch.utils.data.Dataset):
    """Views of `nyu_depth_v2_labeled.mat` as single-view `Sample`s; `indices` picks 0-based rows.

    The HDF5 file is opened lazily in each worker (h5py handles do not survive pickling).
    """

    def __init__(self, mat_path, indices: Sequence[int] | None = None, K: torch.Tensor | None = None):
        import h5py

        self.path = Path(mat_path)
        if not self.path.is_file():
            raise DatasetError(self.path, "file not found")
        try:
            with h5py.File(self.path, "r") as f:
                shapes = {k: (f[k].shape, f[k].dtype) for k in ("images", "depths") if k in f}
        except OSError:
            raise DatasetError(
                self.path, "not an HDF5 file; expected the MATLAB v7.3 nyu_depth_v2_labeled.mat"
            ) from None
        for key in ("images", "depths"):
            if key not in shapes:
                raise DatasetError(self.path, f"no dataset {key!r}")
        (img_shape, img_dtype), (depth_shape, _) = shapes["images"], shapes["depths"]
        if len(img_shape) != 4 or img_shape[1] != 3 or img_dtype != np.uint8:
            raise DatasetError(
                self.path, f"dataset 'images': expected uint8 [N, 3, W, H], got {img_dtype} {list(img_shape)}"
            )
        N, _, W, H = img_shape
        if tuple(depth_shape) != (N, W, H):
            raise DatasetError(
                self.path, f"dataset 'depths': expected [N, W, H] = {[N, W, H]}, got {list(depth_shape)}"
            )
        self.K = _check_K_size(self.path, (H, W), K)
        self.indices = list(range(N)) if indices is None else list(indices)
        bad = [i for i in self.indices if not 0 <= i < N]
        if bad:
            raise DatasetError(self.path, f"indices {bad[:10]} out of range (the file has {N} views)")
        self._file = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Sample:
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        n = self.indices[i]
        image = torch.from_numpy(self._file["images"][n].transpose(0, 2, 1).copy())  # [3, H, W] uint8
        image = image.float() / 255.0
        depth = torch.from_numpy(self._file["depths"][n].T.astype(np.float32))  # [H, W] metres
        return _sample(image, depth, self.K, "nyu_labeled", f"{n:04d}")


def read_nyu_split(splits_mat, split: str) -> list[int]:
    """0-based view indices of NYU's standard split from `splits.mat` (1-based in the file)."""
    from scipy.io import loadmat

    key = {"train": "trainNdxs", "test": "testNdxs"}.get(split)
    if key is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(splits_mat)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        data = loadmat(path)
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DatasetError(path, f"cannot read as a MATLAB file ({exc})") from None
    if key not in data:
        raise DatasetError(path, f"no variable {key!r}")
    return [int(i) - 1 for i in np.asarray(data[key]).reshape(-1)]


class NYUv2Folder(torch.utils.data.Dataset):
    """An exported NYU folder (`rgb/`, `depth/`; module docstring) as single-view `Sample`s."""

    def __init__(self, root, depth_scale: float = 1000.0, K: torch.Tensor | None = None):
        root = Path(root)
        depth_scale = io.check_depth_scale(root, depth_scale, "depth_scale")
        self.root, self.depth_scale, self.K = root, depth_scale, K
        rgb = {p.stem: p for p in io.list_images(root / "rgb")}
        depth = {p.stem: p for p in io.list_images(root / "depth")}
        if not rgb:
            raise DatasetError(root / "rgb", "no images")
        for stem in sorted(set(rgb) ^ set(depth), key=io.natural_key):
            alone = rgb.get(stem) or depth.get(stem)
            raise DatasetError(alone, f"no partner for {stem!r} in {'depth/' if stem in rgb else 'rgb/'}")
        self.pairs = [(rgb[s], depth[s]) for s in sorted(rgb, key=io.natural_key)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Sample:
        rgb_path, depth_path = self.pairs[i]
        image = io.read_rgb(rgb_path)  # [3, H, W]
        depth = io.read_depth_png(depth_path, self.depth_scale, tuple(image.shape[-2:]))  # [H, W]
        K = _check_K_size(rgb_path, image.shape[-2:], self.K)
        return _sample(image, depth, K, self.root.name, rgb_path.stem)
