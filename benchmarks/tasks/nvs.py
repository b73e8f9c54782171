"""Novel view synthesis from the 4 input views.

Protocol: a method is given the depth task's 4 views (RGB at 128 px and K) with their ground-truth
cameras (w2c, metres, world frame) and the cameras of 2 held-out views of the same scene (K, w2c);
it returns their RGB [T, 3, H, W]. A pose-free method maps the target cameras into its own frame
by the Sim(3) that takes its predicted input cameras onto the given ones (the pose-free NVS
evaluation of VGGT-style models). Scores (`common.metrics`): PSNR and SSIM (Gaussian window 11,
sigma 1.5, valid region: skimage / pixelSplat) per target view, averaged, and beside it SSIM as 3DGS
computes it (zero padding, full map), the variant splatting papers report. Baselines: the input
view whose camera centre is nearest the target's, and the mean colour of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData
from benchmarks.tasks.depth import VIEWS
from common.cameras import camera_centers
from common.metrics import psnr, ssim, ssim_3dgs

TARGETS = (3, 4)  # between the inputs 2 and 5


@dataclass
class NVSQuery:
    scene_id: str
    images: torch.Tensor  # [V, 3, H, W] inputs
    K: torch.Tensor  # [V, 3, 3]
    w2c: torch.Tensor  # [V, 4, 4] ground truth, metres
    target_K: torch.Tensor  # [T, 3, 3]
    target_w2c: torch.Tensor  # [T, 4, 4]


class NVSTask(Task):
    name = "nvs"
    title = "Novel view synthesis"
    protocol = (
        "4 posed RGB views at 128 px + 2 target cameras -> RGB of the targets "
        "(pose-free methods align their cameras to the given ones by Sim(3))"
    )
    metrics = [
        Metric("psnr", True, "PSNR over the image (dB)"),
        Metric("ssim", True, "SSIM, Gaussian 11 / 1.5, valid region (skimage-style)"),
        Metric("ssim_3dgs", True, "SSIM as 3DGS computes it (zero padding, full map)"),
    ]
    participants = [Participant("ivgt", "SDF + colour field rendered at the aligned target camera")]

    def items(self, data: TaskData) -> list[Item]:
        out = []
        for s in data.samples:
            if s.num_views <= max(TARGETS):
                continue
            v, t = s.select(VIEWS), s.select(TARGETS)
            out.append(Item(NVSQuery(s.scene_id, v.images, v.K, v.w2c, t.K, t.w2c), t.images))
        return out

    def score(self, item: Item, answer: torch.Tensor) -> dict[str, float]:
        pred = torch.as_tensor(answer).float()
        if pred.shape != item.truth.shape:
            raise ValueError(
                f"nvs answer: expected RGB of shape {list(item.truth.shape)}, got {list(pred.shape)}"
            )
        pred = pred.nan_to_num(0.0).clamp(0, 1)
        return {
            "psnr": float(psnr(pred, item.truth)),
            "ssim": float(ssim(pred, item.truth)),
            "ssim_3dgs": float(ssim_3dgs(pred, item.truth)),
        }

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        def nearest_input(q: NVSQuery) -> torch.Tensor:
            c_in, c_t = camera_centers(q.w2c), camera_centers(q.target_w2c)  # [V, 3], [T, 3]
            return q.images[torch.cdist(c_t, c_in).argmin(1)]

        def mean_colour(q: NVSQuery) -> torch.Tensor:
            T, (H, W) = q.target_K.shape[0], q.images.shape[-2:]
            return q.images.mean((0, 2, 3))[None, :, None, None].expand(T, 3, H, W).clone()

        return {"nearest-input-view": nearest_input, "mean-colour": mean_colour}


def sim3_from_cameras(w2c_pred: torch.Tensor, w2c_gt: torch.Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) with gt centre ~= s R pred centre + t, from the camera centres (Umeyama); for methods
    that map the given target cameras into their own frame."""
    from common.metrics import umeyama

    return umeyama(
        camera_centers(w2c_pred).double().numpy(), camera_centers(w2c_gt).double().numpy(), with_scale=True
    )
