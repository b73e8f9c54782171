"""The training objective of one batch, per scene and per query (G2VLM text, "Loss Components").

Stage 1 (geometry pre-training), per scene: L_depth + L_normal + L_smooth of the depth head on the
sensor depth, and L_recon = Pi3's loss of the RGB-only network (`recon.pi3_loss`).
Stage 2 (joint) adds, per scene, L_spatial = BCE of objectness (object / empty candidate) + BCE of
the relations between object candidates; and per query: L_text (next-token CE of an answer), the
grounding CE of a referring phrase over the scene's candidates, and L_align, a symmetric InfoNCE
between the scene's phrases of the batch and their objects (phrase -> object over those objects,
object -> phrase over those phrases).

A scene's losses count once for each of its queries and every term is a mean over samples, so N
processes follow one process with N times the scenes (the alignment is within a scene, which never
spans two processes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from g2vlm.heads import TEMPERATURE, depth_losses
from g2vlm.recon import pi3_loss

PHRASE_PREFIX = "Find: "  # the phrase embedding averages the whole user text, prefix included
QA_SUFFIX = " Answer the question simply."


def query_prompt(q) -> str:
    return PHRASE_PREFIX + q.text if q.kind == "refer" else q.text + QA_SUFFIX


class Trainee(nn.Module):
    """G2VLM and its loss weights, one module for `accelerator.prepare`."""

    def __init__(self, model, tcfg, stage: int):
        super().__init__()
        self.model, self.tcfg, self.stage = model, tcfg, stage

    def forward(self, scenes: list, queries: list[list]) -> tuple[torch.Tensor, dict]:
        """scenes: U `data.Scene`s (on the device); queries[u]: that scene's `data.Query`s of the batch.
        -> (total loss per sample [B], {term: [B]}) with samples ordered scene by scene."""
        m, t = self.model, self.tcfg
        g = m.geometry
        per_scene = []
        tokens = []
        for s in scenes:
            depth, normals = g.depth_head(s.rgb, s.sensor)
            terms = depth_losses(depth, normals, s.rgb, s.depth, s.normals)
            terms["recon"] = pi3_loss(
                g.recon(s.rgb[None]), s.depth[None], s.K[None], s.w2c[None], t.camera_weight
            )["total"]
            if self.stage == 2:
                tok = g.tokens(s.rgb, s.sensor, s.K, s.w2c, "sensor", depth=depth)
                tokens.append(tok)
                feats, objectness = g.object_features(tok, s.boxes, s.rgb, s.K, s.w2c)
                spatial = F.binary_cross_entropy_with_logits(objectness, s.is_object.float())
                obj = s.is_object.nonzero()[:, 0]
                if len(obj) > 1:
                    logits = g.relations(feats[obj], s.boxes[obj], s.w2c[0])  # [n, n, R]
                    target = s.relation_targets[obj][:, obj]
                    off = ~torch.eye(len(obj), dtype=torch.bool, device=logits.device)
                    spatial = spatial + F.binary_cross_entropy_with_logits(logits[off], target[off])
                terms["spatial"] = spatial
                terms["_feats"] = feats
            per_scene.append(terms)
        weights = {
            "depth": t.depth_weight,
            "normal": t.normal_weight,
            "smooth": t.smooth_weight,
            "recon": t.recon_weight,
            "spatial": t.spatial_weight,
        }
        parts: dict[str, list] = {k: [] for k in weights}
        parts.update({"text": [], "ground": [], "align": []})
        if self.stage == 2:
            prompts = [query_prompt(q) for qs in queries for q in qs]
            answers = [q.answers[0] if q.kind == "qa" else None for qs in queries for q in qs]
            text = {k: v.to(scenes[0].rgb.device) for k, v in m.encode(prompts, answers).items()}
            owner = [u for u, qs in enumerate(queries) for _ in qs]
            hidden, ce = m.run(text, [tokens[u] for u in owner])
            phrase = m.phrase_embeddings(hidden, text)  # [B, C] (QA rows: unused)
        b = 0
        for u, (s, qs) in enumerate(zip(scenes, queries)):
            terms = per_scene[u]
            align = (
                self._align(s, qs, terms.get("_feats"), phrase[b : b + len(qs)]) if self.stage == 2 else None
            )
            for j, q in enumerate(qs):
                for k in weights:
                    parts[k].append(terms[k] if k in terms else s.rgb.new_zeros(()))
                zero = s.rgb.new_zeros(())
                if self.stage == 2 and q.kind == "qa":
                    parts["text"].append(ce[b + j])
                    parts["ground"].append(zero)
                    parts["align"].append(zero)
                elif self.stage == 2:
                    scores = g.align.scores(terms["_feats"], phrase[b + j][None])[0]  # [N]
                    parts["ground"].append(
                        F.cross_entropy(
                            scores[None] / TEMPERATURE, torch.tensor([q.target], device=scores.device)
                        )
                    )
                    parts["align"].append(align[j])
                    parts["text"].append(zero)
                else:
                    for k in ("text", "ground", "align"):
                        parts[k].append(zero)
            b += len(qs)
        stacked = {k: torch.stack(v) for k, v in parts.items()}
        w = {**weights, "text": t.text_weight, "ground": t.ground_weight, "align": t.align_weight}
        total = sum(w[k] * v for k, v in stacked.items())
        return total, stacked

    def _align(self, s, qs, feats, phrase):
        """Per query: the symmetric InfoNCE between the scene's phrases and their objects (0 for QA)."""
        refer = [j for j, q in enumerate(qs) if q.kind == "refer"]
        out = [phrase.new_zeros(()) for _ in qs]
        if len(refer) < 2:
            return out
        targets = torch.tensor([qs[j].target for j in refer], device=phrase.device)
        objects, inv = torch.unique(targets, return_inverse=True)
        if len(objects) < 2:
            return out
        logits = self.model.geometry.align.scores(feats[objects], phrase[refer]) / TEMPERATURE  # [P, O]
        to_obj = F.cross_entropy(logits, inv, reduction="none")  # [P]
        pos = inv[:, None] == torch.arange(len(objects), device=phrase.device)[None]  # [P, O]
        log_p = torch.log_softmax(logits, 0)  # over phrases, per object
        to_text = -torch.logsumexp(log_p.masked_fill(~pos, float("-inf")), 0)  # [O]
        per_phrase = (to_obj + to_text[inv]) / 2
        for k, j in enumerate(refer):
            out[j] = per_phrase[k]
        return out
