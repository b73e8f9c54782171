"""The sample type every package reads: a set of views of one scene with their cameras.

Conventions (see the root README):
- cameras are OpenCV (x right, y down, z forward); `K` is in pixels with pixel centres at
  (u + 0.5, v + 0.5); `w2c` maps world to camera coordinates;
- `images` are float32 in [0, 1], channels first;
- `depth` is z-depth in metres, 0 where invalid; `valid` says which depth pixels are valid
  (readers turn NaN/inf into 0 and mark them invalid here);
- `normals` are unit vectors in each view's camera frame, pointing towards the camera, 0 where
  unknown;
- `instances` are integer object ids, 0 for background (walls, floor, ground, unknown), otherwise
  the `id` of an object in `annotations["objects"]`;
- `masks` holds extra named per-pixel masks such as EndoNeRF's tool mask (`{"tool": [V, H, W]}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch


@dataclass
class Sample:
    images: torch.Tensor  # [V, 3, H, W] float32 in [0, 1]
    K: torch.Tensor  # [V, 3, 3] float32, pixels
    w2c: torch.Tensor  # [V, 4, 4] float32, world-to-camera
    depth: torch.Tensor | None = None  # [V, H, W] float32 metres, 0 = invalid
    valid: torch.Tensor | None = None  # [V, H, W] bool, depth is valid
    normals: torch.Tensor | None = None  # [V, 3, H, W] float32, camera frame
    instances: torch.Tensor | None = None  # [V, H, W] int64, 0 = background
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [V, H, W] bool
    # [V] float32: seconds where the source has a frame rate, else normalised time (EndoNeRF:
    # frame / number of frames; the reader's docstring says which); None for unordered views
    times: torch.Tensor | None = None
    scene_id: str = ""
    view_names: list[str] = field(default_factory=list)
    annotations: dict[str, Any] = field(default_factory=dict)  # objects, boxes, questions, ...

    def __post_init__(self):
        self.validate()

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every view."""
        return tuple(self.images.shape[-2:])

    def validate(self) -> None:
        """Raise ValueError naming the field whose shape or dtype is not the documented one."""
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"Sample.images: expected [V, 3, H, W], got {list(self.images.shape)}")
        V, _, H, W = self.images.shape
        expected = {
            "K": (self.K, (V, 3, 3)),
            "w2c": (self.w2c, (V, 4, 4)),
            "depth": (self.depth, (V, H, W)),
            "valid": (self.valid, (V, H, W)),
            "normals": (self.normals, (V, 3, H, W)),
            "instances": (self.instances, (V, H, W)),
            "times": (self.times, (V,)),
        }
        expected.update({f"masks[{k!r}]": (m, (V, H, W)) for k, m in self.masks.items()})
        for name, (value, shape) in expected.items():
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"Sample.{name}: expected shape {list(shape)}, got {list(value.shape)}")
        if self.valid is not None and self.valid.dtype != torch.bool:
            raise ValueError(f"Sample.valid: expected dtype bool, got {self.valid.dtype}")
        if self.view_names and len(self.view_names) != V:
            raise ValueError(f"Sample.view_names: expected {V} names, got {len(self.view_names)}")

    def select(self, index) -> "Sample":
        """A sample with a subset of the views, e.g. `sample.select([0, 2])` or a slice."""
        if isinstance(index, slice):
            index = list(range(self.num_views))[index]
        index = list(index)
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return replace(
            self,
            images=self.images[index],
            K=self.K[index],
            w2c=self.w2c[index],
            depth=pick(self.depth),
            valid=pick(self.valid),
            normals=pick(self.normals),
            instances=pick(self.instances),
            masks={k: m[index] for k, m in self.masks.items()},
            times=pick(self.times),
            view_names=[self.view_names[i] for i in index] if self.view_names else [],
        )

    def to(self, device) -> "Sample":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            images=move(self.images),
            K=move(self.K),
            w2c=move(self.w2c),
            depth=move(self.depth),
            valid=move(self.valid),
            normals=move(self.normals),
            instances=move(self.instances),
            masks={k: m.to(device) for k, m in self.masks.items()},
            times=move(self.times),
        )


def valid_from_depth(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace NaN, inf and non-positive depth by 0 and return (depth, valid). Shapes kept."""
    valid = torch.isfinite(depth) & (depth > 0)
    return torch.where(valid, depth, torch.zeros_like(depth)), valid
