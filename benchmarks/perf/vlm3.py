"""VLM3 depth at several pixels: all pixels in one prompt (one generation) vs one prompt per pixel.

The tiny Qwen3-VL of `vlm3/configs/tiny.yaml` (random weights) on a focal-unified synthetic view.
Random weights do not stop by themselves, so every generation is forced to the length of the
answer a trained model gives (`<answer> 12.34 </answer>` per pixel, or one list for all pixels,
plus `<|im_end|>`): the timings are those of real answers. Throughput unit: pixels answered.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.perf import PerfReport
from common.cameras import unify_focal
from common.synthetic import generate_scene
from vlm3 import prompts as P
from vlm3.config import load_config
from vlm3.model import VLM3


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("vlm3", "VLM3 multi-pixel depth prompts vs one prompt per pixel (tiny Qwen3-VL)")
    cfg = load_config(None, [])
    tiny = load_config(__import__("pathlib").Path(__file__).parents[2] / "vlm3" / "configs" / "tiny.yaml")
    cfg.model = tiny.model
    vlm = VLM3.tiny(cfg.model, seed=0)
    sample, _ = generate_scene(0, "indoor", 1, 128)
    image, K = unify_focal(sample.images[0], sample.K[0], tiny.data.focal_depth)  # [3, H, W]
    H, W = image.shape[-2:]
    rng = np.random.default_rng(0)
    repeats = 2 if quick else 5
    for n in ((4,) if quick else (4, 10)):
        uv = np.stack([rng.uniform(0, W, n), rng.uniform(0, H, n)], -1)  # [n, 2]
        nxy = P.normalize_xy(uv, W, H, P.DEPTH_SCALE)
        values = rng.uniform(1, 20, n)
        one_len = len(vlm.tokenizer(P.depth_answer(values[:1], think=False))["input_ids"]) + 1
        all_len = len(vlm.tokenizer(P.depth_answer(values, think=False))["input_ids"]) + 1
        single = [P.depth_prompt([q]) for q in nxy]
        multi = P.depth_prompt(nxy)
        impls = {
            f"one prompt per pixel, sequential ({n} generations)":
                lambda: [vlm.generate([[image]], [p], one_len, one_len) for p in single],
            f"one prompt per pixel, batched ({n} prompts, 1 generate call)":
                lambda: vlm.generate([[image]] * n, single, one_len, one_len),
            f"all pixels in one prompt (1 generation of {all_len} tokens)":
                lambda: vlm.generate([[image]], [multi], all_len, all_len),
        }
        with torch.no_grad():
            report.compare(f"{n} pixels, {W}x{H} image", impls, items=n, unit="pixels", repeats=repeats)
    report.notes.append("ratio > 1: faster than answering one prompt per pixel sequentially")
    return report
