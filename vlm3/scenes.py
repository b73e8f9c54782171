"""The scenes behind VLM3's questions: stored views, their zoomed ("captured") cameras and the
focal-unified model inputs, and the labelled pixels' coordinates in each.

Image pipeline per view (VLM3 Sec. 3): the stored view (K0) is first zoomed by a factor in `zoom`
(one per scene and seed: the "captured" camera Kc, so test images have varied focal lengths), then
resampled to the canonical focal length with `common.cameras.unify_focal` (Kin). With
`unify_focal=False` (the ablation) the captured image is the model input. Labelled pixels are chosen
on the stored view and carried with `common.cameras.map_pixels` K0 -> Kc -> Kin, so labels stay
exact (no interpolated depth). Cameras are OpenCV (x right, y down, z forward), w2c 4x4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from common.cameras import map_pixels, resample_to_intrinsics, unify_focal
from common.datasets import SceneDataset


@dataclass
class View:
    image: torch.Tensor  # [3, H, W] model input
    K: torch.Tensor  # [3, 3] of the model input
    K0: torch.Tensor  # [3, 3] of the stored view
    Kc: torch.Tensor  # [3, 3] of the captured (zoomed) view
    size_c: tuple  # (H, W) of the captured view
    candidates: np.ndarray | None = None  # labelled-pixel candidates [M, 2], filled on first use


@dataclass
class Frame:
    """One stored view: image [3, H, W], z-depth and valid mask [H, W], K0 and w2c (float64), and the
    zoom of its captured camera."""

    image: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    K0: torch.Tensor
    w2c: torch.Tensor
    zoom: float


class SceneCache:
    """The scenes of one split in memory, and their model-input views per (focal, unify) setting."""

    def __init__(self, root, split: str, zoom=(1.0, 1.0), seed: int = 0, max_scenes: int | None = None):
        ds = SceneDataset(root, split, load=("depth",))
        n = len(ds) if max_scenes is None else min(max_scenes, len(ds))
        self.samples = [ds[i] for i in range(n)]
        self.zoom, self.seed = tuple(zoom), seed
        self._views: dict = {}

    def __len__(self) -> int:
        return len(self.samples)

    def zoom_factor(self, s: int) -> float:
        """The zoom of scene s's captured camera. One per scene: the views of a scene are frames of
        one camera (the pose prompt says "taken by the same camera"), so both views of a pair share
        their intrinsics, as in the paper's multi-view data."""
        lo, hi = self.zoom
        return float(lo + (hi - lo) * np.random.default_rng([self.seed, 7, s]).random())

    def frame(self, s: int, v: int) -> Frame:
        """View v of scene s as stored."""
        sample = self.samples[s]
        return Frame(
            sample.images[v],
            sample.depth[v],
            sample.valid[v],
            sample.K[v].double(),
            sample.w2c[v].double(),
            self.zoom_factor(s),
        )

    def view(self, s: int, v, focal: float, unify: bool) -> View:
        """The model input of `frame(s, v)` at canonical focal length `focal` (cached)."""
        key = (s, v, float(focal), bool(unify))
        if key not in self._views:
            self._views[key] = self.make_view(self.frame(s, v), focal, unify)
        return self._views[key]

    @staticmethod
    def make_view(f: Frame, focal: float, unify: bool) -> View:
        image, K0 = f.image, f.K0  # [3, H, W], [3, 3]
        H, W = image.shape[-2:]
        z = f.zoom
        # Zoom about the image centre: f *= z, principal point moves away from the centre by z.
        Kc = K0.clone()
        Kc[0, 0], Kc[1, 1] = K0[0, 0] * z, K0[1, 1] * z
        Kc[0, 2], Kc[1, 2] = (K0[0, 2] - W / 2) * z + W / 2, (K0[1, 2] - H / 2) * z + H / 2
        captured = resample_to_intrinsics(image, K0.float(), Kc.float(), (H, W))  # [3, H, W]
        if unify:
            model_in, K = unify_focal(captured, Kc.float(), focal)  # [3, H', W']
            K = K.double()
        else:
            model_in, K = captured, Kc
        return View(model_in.clamp(0, 1), K, K0, Kc, (H, W))


def pixel_to_input(view: View, uv0: np.ndarray) -> np.ndarray | None:
    """Stored-view coordinates [N, 2] -> model-input coordinates [N, 2]; None if any leaves the view."""
    uv0 = torch.as_tensor(uv0, dtype=torch.float64)
    uvc = map_pixels(uv0, view.K0, view.Kc)  # [N, 2]
    Hc, Wc = view.size_c
    if not bool(((uvc[:, 0] >= 0) & (uvc[:, 0] < Wc) & (uvc[:, 1] >= 0) & (uvc[:, 1] < Hc)).all()):
        return None
    uv = map_pixels(uv0, view.K0, view.K).numpy()  # [N, 2]
    H, W = view.image.shape[-2:]
    if not (np.all(uv >= 0) and np.all(uv[:, 0] < W) and np.all(uv[:, 1] < H)):
        return None
    return uv


def candidate_pixels(view: View, valid: torch.Tensor) -> np.ndarray:
    """Pixel centres [M, 2] (x, y) of the stored view that are valid in `valid` [H, W] and inside
    the model-input view (a zoomed view sees only the middle of the stored one)."""
    idx = torch.nonzero(valid).numpy()  # [M, 2] (row, col)
    uv0 = np.stack([idx[:, 1], idx[:, 0]], -1).astype(np.float64) + 0.5  # [M, 2]
    uvc = map_pixels(torch.from_numpy(uv0), view.K0, view.Kc).numpy()  # [M, 2]
    uv = map_pixels(torch.from_numpy(uv0), view.K0, view.K).numpy()  # [M, 2]
    H, W = view.image.shape[-2:]
    Hc, Wc = view.size_c
    keep = (
        (uvc >= 0).all(-1)
        & (uvc[:, 0] < Wc)
        & (uvc[:, 1] < Hc)
        & (uv >= 0).all(-1)
        & (uv[:, 0] < W)
        & (uv[:, 1] < H)
    )
    return uv0[keep]


def random_valid_pixels(rng, view: View, valid: torch.Tensor, n: int) -> np.ndarray:
    """n distinct candidate pixel centres [n, 2] (see `candidate_pixels`; cached on the view)."""
    if view.candidates is None:
        view.candidates = candidate_pixels(view, valid)
    uv0 = view.candidates
    if len(uv0) == 0:
        return uv0
    return uv0[rng.choice(len(uv0), size=min(n, len(uv0)), replace=False)]  # [n, 2]
