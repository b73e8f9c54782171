"""Training and evaluation views from `common` datasets, in the model's canonical frame.

`canonical_views` re-expresses a Sample with the first selected view as the world (w2c[0] = I)
and divides lengths by the mean distance of the valid depth points from that camera (VGGT's
normalisation), after resizing to the backbone's input size.
"""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from common.cameras import depth_to_points, invert_pose, resize
from common.datasets import MixtureDataset, Sample, SceneDataset


def canonical_views(sample: Sample, views, size) -> dict:
    """Views `views` of `sample` resized to size (H, W): images [V, 3, H, W], K [V, 3, 3], w2c
    [V, 4, 4] relative to the first and normalised, depth [V, H, W] normalised (0 invalid),
    normals [V, 3, H, W] (or None), scale (metres per unit), and the metric originals."""
    s = sample.select(list(views))
    images, K = resize(s.images, s.K, size)  # [V, 3, H, W]
    out = {"images": images.clamp(0, 1), "K": K}
    depth = resize(s.depth[:, None], s.K, size, mode="nearest")[0][:, 0] if s.depth is not None else None  # [V, H, W]
    normals = resize(s.normals, s.K, size, mode="nearest")[0] if s.normals is not None else None
    w2c = s.w2c @ invert_pose(s.w2c[0])  # [V, 4, 4], first camera = world
    scale = torch.tensor(1.0)
    if depth is not None:
        valid = depth > 0
        pts = depth_to_points(depth, K, w2c)  # [V, H, W, 3]
        if valid.any():
            scale = pts[valid].norm(dim=-1).mean().clamp_min(1e-6)
        depth = depth / scale
    w2c = w2c.clone()
    w2c[:, :3, 3] /= scale
    out.update(w2c=w2c, depth=depth, normals=normals, scale=scale)
    return out


def domain_subset(dataset, domain: str | None):
    """Scenes of one synthetic domain (scene ids end with _indoor / _outdoor)."""
    if not domain:
        return dataset
    keep = [i for i, sid in enumerate(dataset.scene_ids) if sid.endswith(domain)]
    if not keep:
        raise ValueError(f"{dataset.split_dir}: no scene of domain {domain!r}")
    return Subset(dataset, keep)


class CachedScenes(torch.utils.data.Dataset):
    """A SceneDataset reading only RGB, depth and normals, keeping decoded scenes in memory
    (the synthetic splits are small; decoding PNGs dominated a CPU training step)."""

    def __init__(self, root, split):
        self.inner = SceneDataset(root, split, load=("depth", "normals"))
        self.split_dir, self.scene_ids, self.cache = self.inner.split_dir, self.inner.scene_ids, {}

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i not in self.cache:
            self.cache[i] = self.inner[i]
        return self.cache[i]


def build_mixture(sources: dict, length: int, seed: int) -> MixtureDataset:
    """The training mixture (`common.datasets.MixtureDataset`) over `sources` from the config."""
    datasets, weights = {}, {}
    for name, src in sources.items():
        for key in ("root", "split", "weight"):
            if key not in src:
                raise ValueError(f"train.sources.{name}: missing {key!r}")
        datasets[name] = domain_subset(CachedScenes(src["root"], src["split"]), src.get("domain"))
        weights[name] = float(src["weight"])
    return MixtureDataset(datasets, weights, length=length, seed=seed)
