"""The training objective of one batch, per scene and per query (G2VLM text, "Loss Components").

Stage 1 (geometry pre-training), per scene: L_depth + L_normal + L_smooth of the depth head on the
sensor depth, and L_recon = Pi3's loss of the RGB-only network (`recon.pi3_loss`).
Stage 2 (joint) adds, per scene, L_spatial = BCE of objectness (object / empty candidate) + BCE of
the relations between object candidates; and per query: L_text (next-token CE of an answer, the
language model over geometry-fused embeddings), the grounding CE of a referring phrase over the
scene's candidates (`G2VLMGeometry.ground`: alignment + the relational term), and L_align, a
symmetric InfoNCE between the scene's phrases of the batch and their objects (phrase -> object over
those objects, object -> phrase over those phrases). Phrases are read as text alone
(`G2VLM.phrase_embeddings`).

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
            rows = [(u, q) for u, qs in enumerate(queries) for q in qs]
            dev = scenes[0].rgb.device
            qa = [i for i, (_, q) in enumerate(rows) if q.kind == "qa"]
            refer = [i for i, (_, q) in enumerate(rows) if q.kind != "qa"]
            ce = torch.zeros(len(rows), device=dev)  # [B] (refer rows: unused)
            phrase = torch.zeros(len(rows), m.lm.config.hidden_size, device=dev)  # [B, C] (QA rows: unused)
            if qa:  # answers: the language model over geometry-fused embeddings
                enc = m.encode([query_prompt(rows[i][1]) for i in qa], [rows[i][1].answers[0] for i in qa])
                _, ce_qa = m.run({k: v.to(dev) for k, v in enc.items()}, [tokens[rows[i][0]] for i in qa])
                ce = ce.index_put((torch.tensor(qa, device=dev),), ce_qa)
            if refer:  # phrases: the language model over the text alone (`G2VLM.phrase_embeddings`)
                enc = m.encode([query_prompt(rows[i][1]) for i in refer])
                ph = m.phrase_embeddings({k: v.to(dev) for k, v in enc.items()})
                phrase = phrase.to(ph.dtype).index_put((torch.tensor(refer, device=dev),), ph)
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
                    logits = g.ground(terms["_feats"], s.boxes, s.w2c, phrase[b + j][None])  # [1, N]
                    parts["ground"].append(
                        F.cross_entropy(logits, torch.tensor([q.target], device=logits.device))
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
