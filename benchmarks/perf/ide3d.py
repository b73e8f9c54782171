"""3D-IDE at inference: the plain VLM (Sec. 3, "zero cost at inference") against the base VLM and a
VLM that runs an external 3D encoder at inference (VG-LLM style), and the paper-scale cost.

Timed case (tiny config, random weights; timing does not depend on them): one question about an
8-frame video, 8 answer tokens, greedy.
- "base VLM": transformers' stock `LlavaOnevisionForConditionalGeneration` with the same weights;
- "3D-IDE": the inference model (`IDE3DForConditionalGeneration.answer`), which must cost the same:
  the verifier, the teacher and the projection are training-only;
- "VLM + external 3D encoder": the teacher (`GeometryTeacher`) runs on the frames, its features are
  pooled to the visual-token grid, projected and added to the visual tokens (VG-LLM adds VGGT
  tokens to the ViT embeddings), then the same generation.

Paper scale, counted on the `meta` device (no weights, no memory) with `torch.utils.flop_counter`:
parameters and FLOPs of one query (32 frames + 64 prompt tokens, the prefill pass) for
LLaVA-Video-7B-Qwen2 (3D-IDE's inference model, paper.yaml) and for VG-LLM-8B = Qwen2.5-VL-7B +
VGGT-1B. Qwen2.5-VL's parameters are counted from transformers' own class; its ViT's FLOPs from a
stand-in of the same sizes (32 blocks of 1280, SwiGLU 3420, 8x8-patch window attention except
blocks 7/15/23/31, 2x2 merger to 3584) because its windowing needs real tensors; VGGT-1B is
DINOv2-L (transformers) + 24 frame-attention and 24 global-attention blocks of 1024 at 518 px.
The paper reports 8.06 B vs 9.25 B parameters and 1.61 s vs 3.60 s per query.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlavaOnevisionForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from benchmarks.perf import PerfReport, count_flops
from ide3d.config import ModelConfig, load_config
from ide3d.model import build_model, meta_model
from ide3d.processing import qa_prompt
from ide3d.teacher import GeometryTeacher

FRAMES, PROMPT = 32, 64


def llava_video_cost() -> tuple[int, int]:
    """(parameters, FLOPs of one query) of paper.yaml's inference model on `meta`."""
    model = meta_model(load_config("ide3d/configs/paper.yaml").model).eval()
    v, t = model.config.vision_config, model.config.text_config

    def query():
        frames = torch.empty(FRAMES, 3, v.image_size, v.image_size, device="meta")
        hidden = model.model.vision_tower(frames, output_hidden_states=True).hidden_states[-1]
        pooled = model.model.apply_pooling(model.model.multi_modal_projector(hidden))  # [32, 196, C]
        T = pooled.shape[0] * pooled.shape[1] + 1 + PROMPT
        out = model.model.language_model(inputs_embeds=torch.empty(1, T, t.hidden_size, device="meta"))
        model.lm_head(out.last_hidden_state[:, -1:])

    with torch.no_grad():
        return sum(p.numel() for p in model.parameters()), count_flops(query)[0]


class _Block(nn.Module):
    """A pre-norm transformer block with a SwiGLU MLP (Qwen2.5-VL's ViT block sizes)."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.gate, self.up, self.down = nn.Linear(dim, mlp), nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x, window: int | None):
        W, L, D = x.shape  # windows, tokens per window, width
        q, k, v = self.qkv(self.norm1(x)).view(W, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(W, L, D))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def vg_llm_cost() -> tuple[int, int]:
    """(parameters, FLOPs of one query) of Qwen2.5-VL-7B + VGGT-1B on `meta` (module docstring)."""
    from transformers import Dinov2Config, Dinov2Model, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        qwen = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(
                text_config=dict(
                    hidden_size=3584,
                    intermediate_size=18944,
                    num_hidden_layers=28,
                    num_attention_heads=28,
                    num_key_value_heads=4,
                    vocab_size=152064,
                    rope_parameters={
                        "rope_type": "default",
                        "rope_theta": 1e6,
                        "mrope_section": [16, 24, 24],
                    },
                ),
                vision_config=dict(
                    depth=32,
                    hidden_size=1280,
                    intermediate_size=3420,
                    num_heads=16,
                    out_hidden_size=3584,
                    fullatt_block_indexes=[7, 15, 23, 31],
                    window_size=112,
                    patch_size=14,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                ),
            )
        )
        vit = nn.ModuleList([_Block(1280, 16, 3420) for _ in range(32)])
        embed, merger = (
            nn.Linear(3 * 2 * 14 * 14, 1280),
            nn.Sequential(nn.Linear(5120, 5120), nn.GELU(), nn.Linear(5120, 3584)),
        )
        dino = Dinov2Model(
            Dinov2Config(
                hidden_size=1024,
                num_hidden_layers=24,
                num_attention_heads=16,
                intermediate_size=4096,
                patch_size=14,
                image_size=518,
            )
        )
        aggregator = nn.ModuleList(
            [
                nn.TransformerEncoderLayer(1024, 16, 4096, dropout=0.0, batch_first=True, norm_first=True)
                for _ in range(48)
            ]
        )
        vggt_merger = nn.Sequential(nn.Linear(4 * 1024, 4096), nn.GELU(), nn.Linear(4096, 3584))
    params = sum(p.numel() for p in qwen.parameters()) + sum(
        p.numel() for m in (dino, aggregator, vggt_merger) for p in m.parameters()
    )

    def query():
        # Qwen2.5-VL ViT on 32 frames at 448 px: 16 temporal pairs x 32 x 32 patches.
        x = embed(torch.empty(16 * 1024, 3 * 2 * 14 * 14, device="meta"))  # [16384, 1280]
        for i, blk in enumerate(vit):
            full = i in (7, 15, 23, 31)
            x = blk(x.view(1, -1, 1280) if full else x.view(-1, 64, 1280), None).reshape(-1, 1280)
        tokens = merger(x.view(-1, 5120))  # [4096, 3584]
        # VGGT on 32 frames at 518 px: DINOv2 patch tokens, then alternating frame / global attention.
        feats = dino(
            pixel_values=torch.empty(FRAMES, 3, 518, 518, device="meta")
        ).last_hidden_state  # [32, 1370, 1024]
        for i, blk in enumerate(aggregator):
            feats = blk(feats) if i % 2 == 0 else blk(feats.reshape(1, -1, 1024)).reshape(FRAMES, -1, 1024)
        vggt_merger(torch.empty(tokens.shape[0], 4 * 1024, device="meta"))  # fused into the visual tokens
        T = tokens.shape[0] + PROMPT
        out = qwen.model.language_model(
            inputs_embeds=torch.empty(1, T, 3584, device="meta"),
            position_ids=torch.zeros(3, 1, T, dtype=torch.long, device="meta"),
        )
        qwen.lm_head(out.last_hidden_state[:, -1:])

    for m in (vit, dino, aggregator):
        m.train()  # no fused fast path on meta tensors
    with torch.no_grad():
        return params, count_flops(query)[0]


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("ide3d", "3D-IDE inference vs the base VLM and a VLM with an external 3D encoder")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mcfg = ModelConfig()
    torch.manual_seed(0)
    model, processor = build_model(mcfg, seed=0)
    model.to(device).eval()
    base = LlavaOnevisionForConditionalGeneration(model.config).to(device).eval()
    missing, unexpected = base.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("ground_head.") for k in unexpected)
    teacher = GeometryTeacher(image_size=mcfg.image_size, patch_size=mcfg.patch_size).to(device).eval()
    fuse = nn.Linear(teacher.feature_dim, mcfg.text_hidden).to(device)
    for m in (model, base):
        m.generation_config.eos_token_id = None  # always `tokens` new tokens
    frames = torch.rand(8, 3, 128, 128)
    batch = {
        k: v.to(device)
        for k, v in processor([frames], [qa_prompt("How many red objects are there?")]).items()
        if k != "ground_index"
    }
    tokens, repeats = 8, 3 if quick else 10
    p = processor.pooled

    @torch.no_grad()
    def base_vlm():
        return base.generate(**batch, max_new_tokens=tokens, do_sample=False)

    @torch.no_grad()
    def ide3d():
        return model.answer(batch, tokens)

    @torch.no_grad()
    def external():
        video = model.encode_video(batch["pixel_values_videos"])
        feats = teacher.features(frames.to(device))  # [F, g, g, D]
        pooled = (
            F.adaptive_avg_pool2d(feats.permute(0, 3, 1, 2), p)
            .permute(0, 2, 3, 1)
            .reshape(1, -1, feats.shape[-1])
        )
        fused = torch.cat([video.tokens[:, :-1] + fuse(pooled), video.tokens[:, -1:]], 1)
        return model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            do_sample=False,
            mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=fused)},
            max_new_tokens=tokens,
        )

    report.compare(
        f"8 frames, {tokens} answer tokens, tiny, {device}",
        {
            "base VLM (stock LLaVA-OneVision)": base_vlm,
            "3D-IDE (inference model)": ide3d,
            "VLM + external 3D encoder (VG-LLM style)": external,
        },
        items=1,
        unit="answers",
        repeats=repeats,
    )
    count = lambda *ms: sum(x.numel() for m in ms for x in m.parameters())  # noqa: E731
    report.notes.append(
        f"tiny parameters: base VLM {count(base) / 1e6:.3f} M; 3D-IDE {count(model) / 1e6:.3f} M "
        f"(+ ground head {count(model.ground_head) / 1e6:.3f} M, which the base VLM lacks); "
        f"external-encoder VLM {(count(model, teacher, fuse)) / 1e6:.3f} M"
    )
    ours_params, ours_flops = llava_video_cost()
    report.notes.append(
        f"paper scale (meta device, one query = 32 frames + {PROMPT} prompt tokens): "
        f"3D-IDE / LLaVA-Video-7B-Qwen2 {ours_params / 1e9:.2f} B parameters "
        f"({2 * ours_params / 2**30:.1f} GiB in bf16), {ours_flops / 1e12:.1f} TFLOPs"
    )
    if not quick:
        vg_params, vg_flops = vg_llm_cost()
        report.notes.append(
            f"paper scale: VG-LLM-8B (Qwen2.5-VL-7B + VGGT-1B) {vg_params / 1e9:.2f} B parameters "
            f"({2 * vg_params / 2**30:.1f} GiB in bf16), "
            f"{vg_flops / 1e12:.1f} TFLOPs; ratios VG-LLM / 3D-IDE: parameters "
            f"{vg_params / ours_params:.2f}, FLOPs {vg_flops / ours_flops:.2f} (paper: 9.25 / 8.06 B "
            f"= 1.15 parameters, 3.60 / 1.61 s = 2.24 latency)"
        )
    return report
