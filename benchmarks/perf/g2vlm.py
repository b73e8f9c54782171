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

from benchmarks.perf import PerfReport
from common.synthetic import generate_scene
from g2vlm.config import load_config
from g2vlm.model import build_model


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
    return report
