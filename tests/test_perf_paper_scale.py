"""Paper-scale cost counts on the `meta` device: the models have their published sizes, and the FLOPs
agree with the 2 x parameters x tokens rule of thumb for transformers."""

import pytest

from benchmarks.perf import depthvlm, ivgt, vlm3
from benchmarks.perf._qwen3vl import TEXT


def test_depthvlm_against_vlm_plus_depth_anything():
    c = depthvlm.paper_scale_cost()
    assert c["vlm_params"] == pytest.approx(4.44e9, rel=0.005)  # Qwen3-VL-4B's model card
    assert c["da_params"] == pytest.approx(335.3e6, rel=0.005)  # Depth Anything V2-L's paper
    assert c["head_params"] < c["da_params"] / 5
    assert c["head_flops"] < c["da_flops"] < c["two_model_flops"] and c["depthvlm_flops"] < c["two_model_flops"]


def test_vlm3_language_flops_follow_the_parameter_count():
    c = vlm3.paper_scale_cost()
    per_token = 2 * (c["params"] - TEXT["vocab_size"] * TEXT["hidden_size"])  # decoder + ViT, no embedding
    tokens = c["image_tokens"] + vlm3.PROMPT + (vlm3.PER_PIXEL + vlm3.PER_ANSWER) * vlm3.PAPER_PIXELS
    assert per_token * tokens < c["multi_flops"] < 2 * per_token * tokens  # + attention, ViT at 4x tokens
    assert c["single_flops"] > 5 * c["multi_flops"]  # ten prompts re-encode the image ten times


def test_ivgt_paper_forward_and_query():
    c = ivgt.paper_scale_cost()
    assert 0.9e9 < c["params"] < 1.3e9  # VGGT-sized
    tokens = c["views"] * (c["size"][0] // 14) * (c["size"][1] // 14)
    assert 2 * 0.6e9 * tokens < c["forward_flops"] < 2 * 2 * c["params"] * tokens
    assert 1e5 < c["query_flops"] < 1e8
