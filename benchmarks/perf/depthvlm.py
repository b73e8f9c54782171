"""DepthVLM: one pass for text + depth against a VLM plus a separate depth network (Sec. 1, "single
forward pass").

Case: one image and one question; both pipelines produce the same answer length and a depth map.
"DepthVLM (one pass)" runs `generate_with_depth` (the depth head on the prefill of the answer's
generation). "VLM + depth network" runs the same VLM's `generate` and then `DepthNet` (a
Qwen3-VL vision encoder of the same size plus the same DPT head), i.e. the two-model pipeline
the paper replaces. Random weights (timing does not depend on them): the tiny config on CPU, or a
larger Qwen3-VL-like configuration on CUDA when present (quick: tiny everywhere).

Paper scale, counted on the `meta` device (`benchmarks/perf/_qwen3vl.py`): paper.yaml's DepthVLM
(Qwen3-VL-4B + DPT head of 256 features) against Qwen3-VL-4B + Depth Anything V2-L (transformers'
own `DepthAnythingForDepthEstimation` with the V2-L sizes: DINOv2-L/14, DPT 256 features, 335 M
parameters), the pipeline the paper's "single forward pass" replaces. Case: one 1024x768 image
(focal-unified and cropped as paper.yaml's max_size allows) and 80 text tokens (64 prompt + 16
answer, teacher-forced in one pass); Depth Anything at its own 518-px short side (686x518).
"""

from __future__ import annotations

import torch

from benchmarks.perf import PerfReport
from depthvlm.baselines import depthnet_from_vlm_config
from benchmarks.perf import count_flops
from benchmarks.perf._qwen3vl import params, query_flops, qwen3_vl_4b
from depthvlm.config import ModelConfig, load_config
from depthvlm.model import build_model, head_kwargs

PAPER_IMAGE, PAPER_TEXT = (768, 1024), 80  # (H, W) px; prompt + answer tokens


def depth_anything_v2_large():
    """Depth Anything V2-L (metric) on `meta`, from transformers' own class and config."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                            intermediate_size=4096, patch_size=14, image_size=518,
                            out_indices=[5, 12, 18, 24], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=1024, patch_size=14,
                              neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256,
                              head_hidden_size=32, depth_estimation_type="metric", max_depth=20)
    with torch.device("meta"):
        return DepthAnythingForDepthEstimation(cfg).eval()


def paper_scale_cost() -> dict:
    """Parameters and FLOPs of one image + question at paper scale, both pipelines (docstring)."""
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[2] / "depthvlm" / "configs" / "paper.yaml")
    model = qwen3_vl_4b(head_kwargs(cfg.model))
    q = query_flops(model, *PAPER_IMAGE, PAPER_TEXT)
    head_flops, _ = count_flops(lambda: model.depth_head(q["maps"], PAPER_IMAGE))
    da = depth_anything_v2_large()
    da_flops, _ = count_flops(lambda: da(pixel_values=torch.empty(1, 3, 518, 686, device="meta")))
    vlm = q["vision"] + q["language"]
    return {"depthvlm_params": params(model), "vlm_params": params(model) - params(model.depth_head),
            "head_params": params(model.depth_head), "da_params": params(da),
            "depthvlm_flops": vlm + head_flops, "two_model_flops": vlm + da_flops,
            "head_flops": head_flops, "da_flops": da_flops, "image_tokens": q["image_tokens"]}


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
    c = paper_scale_cost()
    H, W = PAPER_IMAGE
    report.notes.append(
        f"paper scale (meta device, one {W}x{H} image = {c['image_tokens']} image tokens + {PAPER_TEXT} text "
        f"tokens): DepthVLM (Qwen3-VL-4B + DPT head) {c['depthvlm_params'] / 1e9:.2f} B parameters "
        f"(head {c['head_params'] / 1e6:.0f} M), {c['depthvlm_flops'] / 1e12:.2f} TFLOPs (head "
        f"{c['head_flops'] / 1e12:.2f}); Qwen3-VL-4B + Depth Anything V2-L "
        f"{(c['vlm_params'] + c['da_params']) / 1e9:.2f} B "
        f"parameters (Depth Anything {c['da_params'] / 1e6:.0f} M), {c['two_model_flops'] / 1e12:.2f} TFLOPs "
        f"(Depth Anything at 686x518 {c['da_flops'] / 1e12:.2f}); ratios two models / DepthVLM: parameters "
        f"{(c['vlm_params'] + c['da_params']) / c['depthvlm_params']:.3f}, FLOPs "
        f"{c['two_model_flops'] / c['depthvlm_flops']:.3f}; parameter memory in bf16 "
        f"{2 * c['depthvlm_params'] / 2**30:.1f} vs {2 * (c['vlm_params'] + c['da_params']) / 2**30:.1f} GiB")
    return report
