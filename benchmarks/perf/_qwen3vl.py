"""Qwen3-VL-4B-Instruct at paper scale on the `meta` device (no weights, no memory), for the
paper-scale cost rows of DepthVLM and VLM3 (both build on it).

The sizes are those of the public config.json (ViT 24 x 1024 with 16-px patches, 2x2 merge,
DeepStack taps 5 / 11 / 17; Qwen3 decoder 36 x 2560, 32 query / 8 KV heads of 128, vocabulary
151,936, tied embeddings): 4.44 B parameters, as the model card says. FLOPs are counted with
`torch.utils.flop_counter` (matmuls, convolutions, attention); the vision encoder's grid-dependent
index tensors are computed on the CPU from the grid and handed in, since `meta` tensors hold no
values. DeepStack adds its three features to the first decoder layers' image positions: an
addition, which the counter does not count (nor would it be visible beside the matmuls).
"""

from __future__ import annotations

import torch
from benchmarks.perf import count_flops
from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

TEXT = dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                             "mrope_interleaved": True},
            tie_word_embeddings=True)
VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
              spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2560, num_position_embeddings=2304,
              deepstack_visual_indexes=[5, 11, 17])


def params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def qwen3_vl_4b(depth_head: dict | None = None):
    """Qwen3-VL-4B on `meta`: transformers' stock class, or DepthVLM's class with that head."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from depthvlm.model import DepthVLMConfig, DepthVLMForConditionalGeneration

    with torch.device("meta"):
        if depth_head is None:
            cfg = Qwen3VLConfig(text_config=TEXT, vision_config=VISION, tie_word_embeddings=True)
            return Qwen3VLForConditionalGeneration(cfg).eval()
        cfg = DepthVLMConfig(text_config=TEXT, vision_config=VISION, tie_word_embeddings=True,
                             depth_head=depth_head)
        return DepthVLMForConditionalGeneration(cfg).eval()


def query_flops(model, height: int, width: int, text_tokens: int) -> dict:
    """FLOPs of one image (height x width px, multiples of 32) + text_tokens through the vision
    encoder and the decoder (one prefill, teacher-forced answer included), and the maps the depth
    head reads (4 x [h, w, C] at the merged grid). Keys: vision, language, image_tokens, maps."""
    v = model.model.visual
    p, m = VISION["patch_size"], VISION["spatial_merge_size"]
    if height % (p * m) or width % (p * m):
        raise ValueError(f"image {height}x{width}: expected multiples of {p * m} px")
    grid = torch.tensor([[1, height // p, width // p]])  # [1, 3] (t, h, w) patches
    idx, w = get_vision_interpolation_indices_and_weights(grid, v.num_grid_per_side, mode="bilinear",
                                                          align_corners=True, spatial_merge_size=m)
    pos = get_vision_position_ids(grid, m)
    pixels = torch.empty(height * width // p**2, 3 * VISION["temporal_patch_size"] * p * p, device="meta")
    vision_flops, vis = count_flops(lambda: v(pixels, grid_thw=grid, interp_indices=idx.to("meta"),
                                              interp_weights=w.to("meta"), position_ids=pos.to("meta"),
                                              return_dict=True))
    n_img = vis.pooler_output.shape[0]  # merged image tokens
    T = n_img + text_tokens
    embeds = torch.empty(1, T, TEXT["hidden_size"], device="meta")
    positions = torch.empty(3, 1, T, dtype=torch.long, device="meta")  # M-RoPE (t, h, w)

    def decode():
        out = model.model.language_model(inputs_embeds=embeds, position_ids=positions)
        model.lm_head(out.last_hidden_state[:, n_img:])  # logits at the text positions
        return out.last_hidden_state

    language_flops, hidden = count_flops(decode)
    gh, gw = height // (p * m), width // (p * m)
    maps = [f.reshape(gh, gw, -1) for f in vis.deepstack_features] + [hidden[0, :n_img].reshape(gh, gw, -1)]
    return {"vision": vision_flops, "language": language_flops, "image_tokens": n_img, "maps": maps}
