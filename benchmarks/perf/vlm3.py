"""VLM3 depth at several pixels: all pixels in one prompt (one generation) vs one prompt per pixel.

The tiny Qwen3-VL of `vlm3/configs/tiny.yaml` (random weights) on a focal-unified synthetic view.
Random weights do not stop by themselves, so every generation is forced to the length of the
answer a trained model gives (`<answer> 12.34 </answer>` per pixel, or one list for all pixels,
plus `<|im_end|>`): the timings are those of real answers. Throughput unit: pixels answered.

Paper scale, counted on the `meta` device (`benchmarks/perf/_qwen3vl.py`, Qwen3-VL-4B with
transformers' stock class): the FLOPs of depth at Table 4's 10 pixels, in one prompt against one
prompt per pixel, for one focal-unified 1024x768 image. Token counts are stated, not tokenised
(the tiny tokenizer is not Qwen's): 40 prompt tokens, 12 per pixel reference, 10 per answer.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.perf import PerfReport
from benchmarks.perf._qwen3vl import params, query_flops, qwen3_vl_4b
from common.cameras import unify_focal
from common.synthetic import generate_scene
from vlm3 import prompts as P
from vlm3.config import load_config
from vlm3.model import VLM3


PAPER_IMAGE, PAPER_PIXELS = (768, 1024), 10  # (H, W) px; Table 4's pixels per depth sample
PROMPT, PER_PIXEL, PER_ANSWER = 40, 12, 10  # tokens


def paper_scale_cost() -> dict:
    """Parameters and FLOPs of PAPER_PIXELS depth queries at paper scale, both ways (docstring)."""
    model = qwen3_vl_4b()
    multi = query_flops(model, *PAPER_IMAGE, PROMPT + (PER_PIXEL + PER_ANSWER) * PAPER_PIXELS)
    single = query_flops(model, *PAPER_IMAGE, PROMPT + PER_PIXEL + PER_ANSWER)
    return {"params": params(model), "image_tokens": multi["image_tokens"],
            "multi_flops": multi["vision"] + multi["language"],
            "single_flops": PAPER_PIXELS * (single["vision"] + single["language"])}


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
    c = paper_scale_cost()
    H, W = PAPER_IMAGE
    report.notes.append(
        f"paper scale (meta device, Qwen3-VL-4B, {c['params'] / 1e9:.2f} B parameters, "
        f"{2 * c['params'] / 2**30:.1f} GiB in bf16; one {W}x{H} image = {c['image_tokens']} image tokens): "
        f"depth at {PAPER_PIXELS} pixels in one prompt {c['multi_flops'] / 1e12:.2f} TFLOPs vs one prompt "
        f"per pixel {c['single_flops'] / 1e12:.2f} TFLOPs ({c['single_flops'] / c['multi_flops']:.1f}x)")
    return report
