"""G2VLM: reconstruction throughput and question latency, sensor-depth mode against RGB-only, in one run.

Cases (tiny.yaml, random weights: timing does not depend on them), one scene of 4 views at 64 px:
- reconstruction: depth and cameras for all views and the geometry tokens ("sensor": the depth head
  on the sensor depth with given cameras; "rgb": the Pi3-style network from RGB alone), reported as
  frames per second;
- question: the same plus one 8-token answer (fusion + the language model).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.perf import PerfReport, count_flops
from common.synthetic import generate_scene
from g2vlm.config import load_config
from g2vlm.model import build_model


# Qwen2-1.5B's config.json (the language model of Qwen2-VL-2B, which the official G2VLM-2B builds on).
QWEN2_1_5B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
PROMPT = 64  # question tokens


def paper_scale_cost() -> dict:
    """paper.yaml's model on the `meta` device (no memory, no weights): parameters of each part and
    the FLOPs of the RGB-only reconstruction of its 8 views and of one question's prefill (fusion
    over every geometry token + the language model). The geometry encoder's kNN graph and voxel
    pooling are data-dependent and not counted (they are small next to both)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from g2vlm.model import geometry_from_config

    root = Path(__file__).parents[2] / "g2vlm" / "configs"
    cfg = load_config(root / "paper.yaml")
    m = cfg.model
    with torch.device("meta"):
        lm = Qwen2ForCausalLM(Qwen2Config(**QWEN2_1_5B))
        geo = geometry_from_config(m, lm.config.hidden_size)
        views = torch.empty(1, cfg.data.views, 3, m.image_size, m.image_size)
        T = m.max_tokens * len(m.voxel_sizes)
        text = torch.empty(1, PROMPT, lm.config.hidden_size)
        feats, xyz = torch.empty(1, T, m.geo_dim), torch.empty(1, T, 3)
        recon_flops, _ = count_flops(lambda: geo.recon(views))
        question_flops, _ = count_flops(lambda: lm.model(inputs_embeds=geo.fusion(text, feats, xyz)))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {
        "views": cfg.data.views,
        "size": m.image_size,
        "tokens": T,
        "lm": count(lm),
        "encoder": count(geo.encoder) + count(geo.depth_head),
        "recon": count(geo.recon),
        "fusion_heads": count(geo) - count(geo.encoder) - count(geo.depth_head) - count(geo.recon),
        "recon_flops": recon_flops,
        "question_flops": question_flops,
    }


def run(quick: bool = False) -> PerfReport:
    report = PerfReport("g2vlm", "G2VLM reconstruction and QA, sensor depth vs RGB only")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    tiny = load_config(Path(__file__).parents[2] / "g2vlm" / "configs" / "tiny.yaml")
    model = build_model(tiny.model, seed=0).to(device).eval()
    sample, _ = generate_scene(seed=0, domain="indoor", num_views=4, size=64)
    rgb, depth, K, w2c = (x.to(device) for x in (sample.images, sample.depth, sample.K, sample.w2c))
    g = model.geometry
    repeats = 3 if quick else 10

    def recon(mode):
        @torch.no_grad()
        def fn():
            return g.tokens(rgb, depth, K, w2c, mode)

        return fn

    text = {
        k: v.to(device)
        for k, v in model.encode(["How many boxes are there? Answer the question simply."]).items()
    }

    def ask(mode):
        @torch.no_grad()
        def fn():  # exactly 8 new tokens in both modes
            embeds = model.fused_embeddings(text["input_ids"], [g.tokens(rgb, depth, K, w2c, mode)])
            return model.lm.generate(
                inputs_embeds=embeds,
                attention_mask=text["attention_mask"],
                do_sample=False,
                max_new_tokens=8,
                min_new_tokens=8,
                pad_token_id=model.tokenizer.pad_token_id,
            )

        return fn

    report.compare(
        f"reconstruction + tokens, 4 views at 64 px, {device}",
        {"sensor depth": recon("sensor"), "RGB only": recon("rgb")},
        items=4,
        unit="frames",
        repeats=repeats,
    )
    report.compare(
        f"question (8 answer tokens), 4 views at 64 px, {device}",
        {"sensor depth": ask("sensor"), "RGB only": ask("rgb")},
        items=1,
        unit="answers",
        repeats=repeats,
    )
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    report.notes.append(
        f"parameters: language model {count(model.lm):.2f} M, geometry encoder {count(g.encoder):.2f} M, "
        f"reconstruction network {count(g.recon):.2f} M, depth head {count(g.depth_head):.3f} M"
    )
    c = paper_scale_cost()
    total = c["lm"] + c["encoder"] + c["recon"] + c["fusion_heads"]
    report.notes.append(
        f"paper scale (meta device, paper.yaml with Qwen2-1.5B): {total / 1e9:.2f} B parameters, "
        f"{2 * total / 2**30:.1f} GiB in bf16 (language "
        f"model {c['lm'] / 1e9:.2f} B, RGB-only network {c['recon'] / 1e6:.0f} M, geometry encoder + depth "
        f"head {c['encoder'] / 1e6:.1f} M, fusion and heads {c['fusion_heads'] / 1e6:.1f} M); RGB-only "
        f"reconstruction of {c['views']} views at {c['size']} px {c['recon_flops'] / 1e12:.2f} TFLOPs; one "
        f"{PROMPT}-token question over {c['tokens']} geometry tokens {c['question_flops'] / 1e12:.2f} TFLOPs "
        "(official G2VLM-2B: about 2 B)"
    )
    return report
