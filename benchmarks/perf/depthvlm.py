"""DepthVLM: one pass for text + depth against a VLM plus a separate depth network (Sec. 1, "single
forward pass").

Case: one image and one question; both pipelines produce the same answer length and a depth map.
"DepthVLM (one pass)" runs `generate_with_depth` (the depth head on the prefill of the answer's
generation). "VLM + depth network" runs the same VLM's `generate` and then `DepthNet` (a
Qwen3-VL vision encoder of the same size plus the same DPT head), i.e. the two-model pipeline
the paper replaces. Random weights (timing does not depend on them): the tiny config on CPU, or a
larger Qwen3-VL-like configuration on CUDA when present (quick: tiny everywhere).
"""

from __future__ import annotations

import torch

from benchmarks.perf import PerfReport
from depthvlm.baselines import depthnet_from_vlm_config
from depthvlm.config import ModelConfig
from depthvlm.model import build_model


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("depthvlm", "one DepthVLM pass (text + depth) vs VLM + separate depth network")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not quick:
        mcfg = ModelConfig(vision_depth=12, vision_hidden=512, vision_heads=8, vision_mlp=2048, patch_size=16,
                           deepstack_layers=[2, 5, 8], text_hidden=1024, text_layers=12, text_heads=16,
                           text_kv_heads=8, text_mlp=3072, head_features=128, head_out_channels=[128, 256, 512, 512],
                           num_position_embeddings=2304)
        size, tokens, repeats = 448, 16, 10
    else:
        mcfg, size, tokens, repeats = ModelConfig(), 128, 8, 3 if quick else 10
    torch.manual_seed(0)
    model, proc = build_model(mcfg, seed=0)
    model.to(device).eval()
    net = depthnet_from_vlm_config(model.config).to(device).eval()
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    model.generation_config.eos_token_id = None  # always `tokens` new tokens, in both pipelines
    image = torch.rand(3, size, size)
    batch = {k: v.to(device) for k, v in proc([image], ["How far is the red box from the camera?"]).items()}
    plain = {k: v for k, v in batch.items() if k != "image_sizes"}

    @torch.no_grad()
    def one_pass():
        return model.generate_with_depth(batch, max_new_tokens=tokens)

    @torch.no_grad()
    def two_models():
        ids = model.generate(**plain, max_new_tokens=tokens, do_sample=False, predict_depth=False)
        return ids, net(batch["pixel_values"], batch["image_grid_thw"], batch["image_sizes"])

    rows = report.compare(f"{size} px image, {tokens} answer tokens, {device}",
                          {"VLM + depth network": two_models, "DepthVLM (one pass)": one_pass},
                          items=1, unit="answers+depth", repeats=repeats)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    mem = [r.peak_memory_mb for r in rows]
    report.notes.append(f"parameters: DepthVLM {params(model) / 1e6:.2f} M; VLM without head "
                        f"{(params(model) - params(model.depth_head)) / 1e6:.2f} M + depth network "
                        f"{params(net) / 1e6:.2f} M")
    if all(m for m in mem):
        report.notes.append(f"peak memory ratio (VLM + depth network / DepthVLM): {mem[0] / mem[1]:.2f}")
    return report
