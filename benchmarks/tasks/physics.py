"""Physical parameter recovery on the synthetic surgical clip (EndoGSim's own problem).

Protocol: a method is given the clip `data/endogsim/synthetic` (`make reproduce-endogsim`'s: 16
frames at 128 x 160 of two curved tissue lobes of known Young's modulus pressed by an instrument with
a known force; written by `endogsim`'s generator, seed 0, when absent or of another look), its first 8 frames to fit and, as EndoGSim's evaluation does, the clip's ground-truth
particles and Gaussian colours (an oracle reconstruction: only the materials are unknown). It
returns each object's E (Pa) and its prediction of frames 8-15. Items: the 2 objects (E relative
error |E / E_true - 1|) and the 8 future frames (PSNR over the tissue pixels, `common.metrics.psnr`
with the tool mask; beside it EndoGaussian's masked-image PSNR, `psnr_masked_image`, which divides
by all pixels). Baselines: the last fitted frame held still; one E of 10 kPa for every object (the
middle of the soft-tissue range, no data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData
from common.metrics import psnr, psnr_masked_image

CLIP = Path("data/endogsim/synthetic")
FIT_FRAMES = 8


@dataclass
class PhysicsQuery:
    clip: Path
    fit_frames: int
    kind: str  # "E" (answer: Pa) or "frame" (answer: RGB [3, H, W])
    index: int  # the object id, or the frame index


def ensure_clip(clip: Path, size=None) -> Path:
    """The reproduce's clip (`endogsim.clip.synthetic_clip`, seed 0), or with size (H, W) given one
    of that size (a quick test), written to `clip` when absent."""
    if size is None:
        from endogsim.clip import synthetic_clip

        return synthetic_clip(clip, seed=0)
    if not (clip / "ground_truth.json").is_file():
        from endogsim.synthetic_scene import make_surgical_scene

        make_surgical_scene(clip, seed=0, size=tuple(size))
    return clip


class PhysicsTask(Task):
    name = "physics"
    title = "Physical parameter recovery (synthetic surgical clip)"
    protocol = (
        "frames 0-7 of the clip + its oracle particles -> E per object (Pa) and frames 8-15; "
        "E relative error, future-frame PSNR over tissue pixels"
    )
    metrics = [
        Metric("E_rel_error", False, "|E / E_true - 1| per object"),
        Metric("future_psnr", True, "PSNR over the tissue pixels of frames 8-15 (mask area)"),
        Metric("future_psnr_endogaussian", True, "EndoGaussian's masked-image PSNR (divides by all pixels)"),
    ]
    data_note = "the synthetic surgical clip data/endogsim/synthetic (endogsim's generator, seed 0, look endoscopy)"
    participants = [
        Participant("endogsim", "table prior refined by differentiable MPM (30 iterations)"),
        Participant("endogsim-prior", "the literature-table prior alone, no refinement"),
    ]

    def __init__(self, clip: Path = CLIP, size=None):
        self.clip, self.size = Path(clip), size  # size (H, W): a smaller clip than the reproduce's

    def items(self, data: TaskData) -> list[Item]:
        from common.datasets import read_endonerf

        clip = ensure_clip(self.clip, self.size)
        gt = json.loads((clip / "ground_truth.json").read_text())
        sample = read_endonerf(clip)
        out = [
            Item(PhysicsQuery(clip, FIT_FRAMES, "E", k), float(o["E"])) for k, o in enumerate(gt["objects"])
        ]
        for f in range(FIT_FRAMES, sample.num_views):
            truth = (sample.images[f], ~sample.masks["tool"][f].bool())
            out.append(Item(PhysicsQuery(clip, FIT_FRAMES, "frame", f), truth))
        return out

    def score(self, item: Item, answer) -> dict[str, float]:
        if answer is None:  # a baseline that answers only one kind of item
            return {}
        if item.query.kind == "E":
            return {"E_rel_error": abs(float(answer) / item.truth - 1)}
        image, tissue = item.truth
        pred = torch.as_tensor(answer).float()
        if pred.shape != image.shape:
            raise ValueError(
                f"physics answer: expected a frame of shape {list(image.shape)}, got {list(pred.shape)}"
            )
        return {
            "future_psnr": float(psnr(pred, image, mask=tissue)),
            "future_psnr_endogaussian": float(psnr_masked_image(pred, image, tissue)),
        }

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        from common.datasets import read_endonerf

        cache = {}

        def last_frame(q: PhysicsQuery):
            if q.kind != "frame":
                return None
            if "images" not in cache:
                cache["images"] = read_endonerf(q.clip).images
            return cache["images"][q.fit_frames - 1]

        return {"last-fit-frame": last_frame, "constant-E-10kPa": lambda q: 1e4 if q.kind == "E" else None}
