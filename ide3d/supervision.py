"""The training objective L = L_task + L_geometry + L_cross-view + L_global (Sec. 3, "Loss & Training").

L_task is next-token cross-entropy on a QA sample's answer, or the grounding InfoNCE on a grounding
sample (Video-3D LLM trains grounding samples on InfoNCE alone). The three others are the
training-only pressure on the encoder, computed by `Supervision`, which holds the only parameters
that exist in training alone: the verifier and the projection to the teacher's width. `Trainee`
puts the model and `Supervision` in one module so that `accelerate` wraps (and averages the
gradients of) both; only the model is saved for inference.

Every loss is computed per sample and averaged over samples, so that N processes at batch B give
the gradients of one process at batch N * B.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from common.checkpoint import check_weights_folder
from ide3d.consistency import GlobalProjection, cross_view_loss, global_loss
from ide3d.grounding import infonce_loss
from ide3d.verifier import Verifier, geometric_loss


class Supervision(nn.Module):
    def __init__(self, scfg, vision_hidden: int, text_hidden: int, teacher_dim: int | None):
        super().__init__()
        self.cfg = scfg
        self.verifier = None
        if scfg.geometry_weight > 0:
            if scfg.verifier_init:  # the strong-verifier ablation: a pre-trained decoder
                check_weights_folder(scfg.verifier_init)
                self.verifier = Verifier.from_pretrained(scfg.verifier_init, use_safetensors=True)
                if self.verifier.config.vision_hidden != vision_hidden:
                    raise ValueError(
                        f"supervision.verifier_init: {scfg.verifier_init} reads "
                        f"{self.verifier.config.vision_hidden}-d features, the vision tower gives "
                        f"{vision_hidden}"
                    )
            else:
                self.verifier = Verifier(
                    vision_hidden,
                    scfg.verifier_dim,
                    scfg.verifier_features,
                    tuple(scfg.verifier_channels),
                    tuple(scfg.verifier_layers),
                )
        self.proj_3d = None
        if scfg.global_weight > 0:
            if teacher_dim is None:
                raise ValueError("supervision.global_weight > 0 needs a teacher (supervision.teacher)")
            self.proj_3d = GlobalProjection(text_hidden, teacher_dim)

    def forward(self, out, batch: dict, grid: int, video_token_id: int) -> dict:
        """Per-scene losses [U] (unweighted) of the terms that are on. `out` is the model's output
        (with `video`), `batch` from `ide3d.data.collate` plus `teacher` [U, F, h, w, D] and
        `neighbours` (U lists of F frame indices) when the global / cross-view terms are on."""
        U, Fr = batch["depth"].shape[:2]
        S = batch["depth"].shape[-1]
        losses = {}
        if self.verifier is not None:
            depth, conf = self.verifier(out.video.vision_hidden, grid, S)  # [U*F, S, S] each
            depth, conf = depth.unflatten(0, (U, Fr)), conf.unflatten(0, (U, Fr))
            c = self.cfg
            losses["geometry"] = torch.stack(
                [
                    geometric_loss(
                        depth[u], conf[u], batch["depth"][u], c.conf_alpha, c.grad_scales, c.quantile
                    )
                    for u in range(U)
                ]
            )
            if c.cross_view_weight > 0:
                losses["cross_view"] = torch.stack(
                    [
                        cross_view_loss(
                            depth[u],
                            batch["depth"][u],
                            batch["K"][u],
                            batch["w2c"][u],
                            batch["neighbours"][u],
                        )
                        for u in range(U)
                    ]
                )
        if self.proj_3d is not None:
            # The visual tokens precede the text, so their states are the same for every query of a
            # scene: the first sample of each scene stands for all of them.
            first = [int((batch["video_index"] == u).nonzero()[0]) for u in range(U)]
            hidden = out.last_hidden_state[first]  # [U, L, C]
            mask = batch["input_ids"][first] == video_token_id  # [U, L]
            tokens = hidden[mask].view(U, -1, hidden.shape[-1])[:, :-1]  # [U, F*p*p, C] (newline dropped)
            p = int(round((tokens.shape[1] // Fr) ** 0.5))
            student = self.proj_3d(tokens).view(U, Fr, p, p, -1)  # [U, F, p, p, D]
            losses["global"] = torch.stack([global_loss(student[u], batch["teacher"][u]) for u in range(U)])
        return losses


class Trainee(nn.Module):
    """The model and the training-only modules, one module for `accelerator.prepare`."""

    def __init__(self, model, supervision: Supervision, video_token_id: int):
        super().__init__()
        self.model = model
        self.supervision = supervision
        self.video_token_id = video_token_id

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """-> (total loss per sample [B], {term: [B]}) with the config's weights applied to the
        total; a scene's training-only losses count once for each of its samples."""
        m = self.model
        index = batch["video_index"]  # [B]
        out = m(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            pixel_values_videos=batch["pixel_values_videos"],
            token_xyz=batch["token_xyz"],
            token_has_points=batch["token_has_points"],
            video_index=index,
            labels=batch["labels"],
        )
        task = []
        tau = m.settings["ground_temperature"]
        for b in range(index.shape[0]):
            gi, u = int(batch["ground_index"][b]), int(index[b])
            if gi >= 0:
                objects = m.object_features(
                    out.video.patch_features[u], batch["membership"][u], batch["boxes"][u]
                )
                scores = m.ground_scores(out.last_hidden_state[b, gi], objects)  # [N+1]
                task.append(infonce_loss(scores, batch["targets"][b], tau))
            else:
                task.append(out.text_loss[b])
        parts = {"task": torch.stack(task)}
        parts.update(
            {k: v[index] for k, v in self.supervision(out, batch, m.grid, self.video_token_id).items()}
        )
        c = self.supervision.cfg
        weights = {
            "task": 1.0,
            "geometry": c.geometry_weight,
            "cross_view": c.cross_view_weight,
            "global": c.global_weight,
        }
        total = sum(weights[k] * v for k, v in parts.items())
        return total, parts
