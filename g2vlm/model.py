"""G2VLM as the text describes it: a geometry encoder, a transformers language model (Qwen2) whose
token embeddings attend to the geometry tokens (`fusion.py`), and heads for reconstruction, the scene
graph, alignment and text; plus the official design's RGB-only path (`recon.py`).

`G2VLM` bundles `lm` (transformers' `Qwen2ForCausalLM`, unchanged), `geometry` (`G2VLMGeometry`, a
diffusers `ModelMixin`: encoder, fusion, heads, reconstruction network) and the tokenizer. A scene
becomes geometry tokens in one of two modes:
- "sensor": the depth head completes the sensor depth, and the encoder lifts the completed depth
  with the given intrinsics and poses;
- "rgb": the reconstruction network predicts each view's depth and pose from RGB alone (metric
  scale from its scale head); the first view's pose anchors the frame (the world frame of the
  proposals), and the encoder takes the predicted world points.
With `geometry_free` the tokens are RGB patch features with no position (the baseline VLM).

Saved as `<dir>/language_model` (transformers) + `<dir>/geometry` (diffusers) + the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from common.cameras import invert_pose
from common.checkpoint import check_weights_folder
from g2vlm.fusion import Fusion, pad_tokens
from g2vlm.geometry import GeometryEncoder, GeometryTokens, point_map_normals
from g2vlm.heads import (
    TEMPERATURE,
    AlignmentHead,
    DepthHead,
    ObjectHead,
    RelationalGrounding,
    RelationHead,
    pool_boxes,
)
from g2vlm.recon import ReconstructionNet, metric_outputs
from g2vlm.tokenizer import CHAT_TEMPLATE, SYSTEM, build_tokenizer


class G2VLMGeometry(ModelMixin, ConfigMixin):
    """Every non-language part of G2VLM, saved with diffusers' config.json + safetensors."""

    @register_to_config
    def __init__(
        self,
        text_hidden: int = 128,
        geo_dim: int = 64,
        knn: int = 8,
        edgeconv_layers: int = 2,
        voxel_sizes: tuple = (0.25, 0.5, 1.0),
        max_tokens: int = 512,
        pixel_stride: int = 2,
        fusion_layers: int = 2,
        fusion_heads: int = 4,
        geometry_bias: bool = True,
        bias_sigma: float = 1.0,
        geometry_free: bool = False,
        image_size: int = 64,
        recon_patch: int = 8,
        recon_dim: int = 64,
        recon_layers: int = 4,
        recon_heads: int = 4,
        recon_registers: int = 5,
        max_views: int = 8,
    ):
        super().__init__()
        self.encoder = GeometryEncoder(geo_dim, knn, edgeconv_layers, voxel_sizes, max_tokens, pixel_stride)
        self.patch_embed = nn.Conv2d(3, geo_dim, recon_patch, stride=recon_patch)  # geometry-free tokens
        self.fusion = Fusion(
            text_hidden,
            geo_dim,
            fusion_layers,
            fusion_heads,
            bias_sigma,
            use_bias=geometry_bias and not geometry_free,
        )
        self.depth_head = DepthHead()
        self.recon = ReconstructionNet(
            image_size, recon_patch, recon_dim, recon_layers, recon_heads, recon_registers
        )
        self.objects = ObjectHead(geo_dim)
        self.relations = RelationHead(geo_dim)
        self.align = AlignmentHead(geo_dim, text_hidden)
        self.grounding = RelationalGrounding(geo_dim, text_hidden, max_views)

    def rgb_only(self, rgb: torch.Tensor, w2c0: torch.Tensor) -> tuple:
        """RGB [V, 3, S, S] -> (depth [V, S, S], w2c [V, 4, 4], world points [V, S, S, 3], normals
        [V, S, S, 3] world), the frame anchored by the first view's pose w2c0 [4, 4]."""
        out = self.recon(rgb[None])
        depth, w2c_rel = metric_outputs(out)  # relative to view 0
        w2c = w2c_rel[0] @ w2c0  # world -> view 0 -> view v
        c2w = invert_pose(w2c)
        local = (
            out["local_points"][0] * (depth[0] / out["local_points"][0][..., 2].clamp_min(1e-6))[..., None]
        )
        world = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], local) + c2w[:, None, None, :3, 3]
        normals = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3], point_map_normals(local))
        return depth[0], w2c, world, normals

    def tokens(
        self, rgb, depth_in, K, w2c, mode: str = "sensor", vertices=None, vertex_normals=None, depth=None
    ) -> GeometryTokens:
        """One scene's geometry tokens (module docstring). rgb [V, 3, S, S]; depth_in [V, S, S] the sensor
        depth ("sensor" mode, ignored in "rgb"); K [V, 3, 3]; w2c [V, 4, 4] (only view 0's in "rgb");
        depth [V, S, S]: the depth head's completion of depth_in when the caller already ran it."""
        if self.config.geometry_free:
            g = self.patch_embed(rgb * 2 - 1)  # [V, C, h, w]
            feats = g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])  # [V*h*w, C]
            return GeometryTokens(
                xyz=torch.zeros(feats.shape[0], 3, device=rgb.device),
                feats=feats,
                scale=torch.zeros(feats.shape[0], dtype=torch.long, device=rgb.device),
            )
        enc = self.encoder
        if mode == "sensor":
            if depth is None:
                depth, _ = self.depth_head(rgb, depth_in)
            xyz, normals, feats = enc.pixel_points(rgb, depth.detach(), K, w2c)
        elif mode == "rgb":
            depth, _, world, normals = self.rgb_only(rgb, w2c[0])
            xyz, normals, feats = enc.pixel_points_from_world(
                rgb, depth.detach(), world.detach(), normals.detach()
            )
        else:
            raise ValueError(f"mode: expected 'sensor' or 'rgb', got {mode!r}")
        if vertices is not None and len(vertices):
            vn = vertex_normals if vertex_normals is not None else torch.zeros_like(vertices)
            xyz, normals = torch.cat([xyz, vertices.to(xyz)]), torch.cat([normals, vn.to(xyz)])
            feats = torch.cat([feats, enc.vertex_mlp(torch.cat([vertices, vn], -1).to(feats))])
        return enc.encode_points(xyz, normals, feats)

    def object_features(self, tokens: GeometryTokens, boxes: torch.Tensor, rgb=None, K=None, w2c=None):
        """Candidate features [N, C] and objectness logits [N]. A box pools the geometry tokens whose voxel
        overlaps it (context at 0.25-1 m) plus the encoder's points inside it (the object itself, at
        pixel resolution). Geometry-free tokens have no position: a box pools the patch tokens its
        projected box covers in each view (cameras, no depth)."""
        if self.config.geometry_free:
            pooled = self._pool_projected(tokens, boxes, K, w2c, rgb.shape[-1])
        else:
            half = torch.tensor(self.config.voxel_sizes, device=boxes.device)[tokens.scale] / 2
            pooled = pool_boxes(tokens.xyz, tokens.feats, half, boxes)
            if tokens.point_xyz is not None:
                zero = torch.zeros(tokens.point_xyz.shape[0], device=boxes.device)
                pooled = pooled + pool_boxes(tokens.point_xyz, tokens.point_feats, zero, boxes)
        return self.objects(pooled, boxes)

    def ground(self, feats, boxes, w2c, phrases) -> torch.Tensor:
        """Grounding logits [P, N] of phrases [P, Ct] over candidates (feats [N, C], boxes [N, 6]) seen by
        views w2c [V, 4, 4]: the alignment's cosine / 0.07, plus the relational term over the scene's 3D
        layout (`heads.RelationalGrounding`), which is geometry grounding: off without it (the ablation)
        and in the geometry-free VLM, whose tokens carry no positions."""
        logits = self.align.scores(feats, phrases) / TEMPERATURE
        if self.config.geometry_bias and not self.config.geometry_free:
            logits = logits + self.grounding(feats, boxes, w2c, phrases)
        return logits

    def _pool_projected(self, tokens, boxes, K, w2c, S):
        from common.metrics import box_corners

        p = self.config.recon_patch
        g = S // p
        centers = (torch.arange(g, device=boxes.device) + 0.5) * p  # patch centres, pixels
        V = K.shape[0]
        w = torch.zeros(boxes.shape[0], V * g * g, device=boxes.device)
        for n, box in enumerate(boxes):
            c = torch.from_numpy(box_corners(box[:3].cpu().numpy(), box[3:].cpu().numpy())).to(K)  # [8, 3]
            for v in range(V):
                cam = c @ w2c[v, :3, :3].T + w2c[v, :3, 3]
                if bool((cam[:, 2] <= 0.05).any()):
                    continue
                uv = cam[:, :2] / cam[:, 2:] * K[v, [0, 1], [0, 1]] + K[v, :2, 2]
                inx = (centers >= uv[:, 0].min()) & (centers <= uv[:, 0].max())
                iny = (centers >= uv[:, 1].min()) & (centers <= uv[:, 1].max())
                w[n, v * g * g : (v + 1) * g * g] = (iny[:, None] & inx[None]).flatten().float()
        return (w @ tokens.feats) / w.sum(1, keepdim=True).clamp_min(1.0)


class G2VLM(nn.Module):
    def __init__(self, lm, geometry: G2VLMGeometry, tokenizer):
        super().__init__()
        self.lm, self.geometry, self.tokenizer = lm, geometry, tokenizer

    # -- text --------------------------------------------------------------------------------------
    def encode(self, prompts: list[str], answers: list | None = None) -> dict:
        """Chat-formatted token ids, left-padded: input_ids, attention_mask, position_ids [B, L],
        content_mask [B, L] (the user's text: the tokens a phrase embedding averages) and labels (answer +
        <|im_end|> only) when answers are given. The chat template is tokenised in three pieces (before,
        inside and after the user's text) so that the text's span is known exactly."""
        rows, labs, spans = [], [], []
        for i, prompt in enumerate(prompts):
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                tokenize=False,
                add_generation_prompt=True,
            )
            start = text.rindex(prompt)
            pieces = [self.tokenizer(t, add_special_tokens=False)["input_ids"]
                      for t in (text[:start], prompt, text[start + len(prompt):])]
            ids = pieces[0] + pieces[1] + pieces[2]
            span = (len(pieces[0]), len(pieces[0]) + len(pieces[1]))
            lab = [-100] * len(ids)
            if answers is not None and answers[i] is not None:
                reply = self.tokenizer(answers[i] + "<|im_end|>", add_special_tokens=False)["input_ids"]
                ids, lab = ids + reply, lab + reply
            rows.append(ids)
            labs.append(lab)
            spans.append(span)
        L, B = max(map(len, rows)), len(rows)
        out = {
            "input_ids": torch.full((B, L), self.tokenizer.pad_token_id),
            "attention_mask": torch.zeros(B, L, dtype=torch.long),
            "labels": torch.full((B, L), -100),
            "content_mask": torch.zeros(B, L, dtype=torch.bool),
        }
        for b, (ids, lab, (a, z)) in enumerate(zip(rows, labs, spans)):
            pad = L - len(ids)
            out["input_ids"][b, pad:] = torch.tensor(ids)
            out["attention_mask"][b, pad:] = 1
            out["labels"][b, pad:] = torch.tensor(lab)
            out["content_mask"][b, pad + a:pad + z] = True
        out["position_ids"] = (out["attention_mask"].cumsum(1) - 1).clamp_min(0)
        if answers is None:
            out.pop("labels")
        return out

    def phrase_embeddings(self, text: dict) -> torch.Tensor:
        """Referring phrases' embeddings [B, C] for alignment and grounding: the mean of the language
        model's last hidden states over the phrase's tokens (`content_mask`), the phrase read as text
        alone. The geometry enters on the object side only: a phrase fused with the scene's tokens
        carries the scene into the alignment space (measured: grounding Acc@0.25 0.13 fused vs 0.26
        text-only after 400 stage-2 steps; README, departures)."""
        hidden = self.lm.model(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"], position_ids=text["position_ids"]
        ).last_hidden_state  # [B, L, C]
        m = text["content_mask"].to(hidden)[..., None]  # [B, L, 1]
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def fused_embeddings(self, input_ids: torch.Tensor, tokens: list[GeometryTokens]) -> torch.Tensor:
        """Token embeddings [B, L, C] after cross-attention to each sample's geometry tokens."""
        feats, xyz, mask = pad_tokens(tokens)
        return self.geometry.fusion(self.lm.get_input_embeddings()(input_ids), feats, xyz, mask)

    def run(self, text: dict, tokens: list[GeometryTokens]):
        """The language model on fused embeddings -> (last hidden states [B, L, C], per-sample CE [B] or
        None)."""
        embeds = self.fused_embeddings(text["input_ids"], tokens)
        out = self.lm.model(
            inputs_embeds=embeds, attention_mask=text["attention_mask"], position_ids=text["position_ids"]
        )
        hidden = out.last_hidden_state
        ce = None
        if "labels" in text:
            logits = self.lm.lm_head(hidden[:, :-1])  # [B, L-1, V]
            target = text["labels"][:, 1:]
            tok = F.cross_entropy(
                logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
            ).view_as(target)
            n = (target != -100).sum(1)
            ce = tok.sum(1) / n.clamp_min(1)
        return hidden, ce

    @torch.no_grad()
    def answer(self, prompts: list[str], tokens: list[GeometryTokens], max_new_tokens: int = 8) -> list[str]:
        text = {k: v.to(self.device) for k, v in self.encode(prompts).items()}
        embeds = self.fused_embeddings(text["input_ids"], tokens)
        ids = self.lm.generate(
            inputs_embeds=embeds,
            attention_mask=text["attention_mask"],
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @property
    def device(self):
        return next(self.parameters()).device

    # -- saving --------------------------------------------------------------------------------------
    def save_pretrained(self, path) -> Path:
        path = Path(path)
        self.lm.save_pretrained(path / "language_model")
        self.tokenizer.save_pretrained(path / "language_model")
        self.geometry.save_pretrained(path / "geometry")
        (path / "g2vlm.json").write_text(json.dumps({"format": "g2vlm", "version": 1}))
        return path

    @classmethod
    def from_pretrained(cls, path) -> "G2VLM":
        from transformers import AutoTokenizer

        path = Path(path)
        if not (path / "g2vlm.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a G2VLM folder (expected g2vlm.json, language_model/, geometry/)"
            )
        for part in ("language_model", "geometry"):  # safetensors only, checked before any loading
            check_weights_folder(path / part)
        tokenizer = AutoTokenizer.from_pretrained(path / "language_model", local_files_only=True)
        lm = load_language_model(path / "language_model")
        try:
            geometry = G2VLMGeometry.from_pretrained(path / "geometry", use_safetensors=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ValueError(
                f"{path / 'geometry'}: cannot load the geometry model ({str(exc).splitlines()[0]})"
            ) from None
        if geometry.config.text_hidden != lm.config.hidden_size:
            raise ValueError(
                f"{path}: geometry fusion width {geometry.config.text_hidden} != language model width "
                f"{lm.config.hidden_size}"
            )
        return cls(lm, geometry, tokenizer)


def load_language_model(path):
    """A local Qwen2 causal LM folder; every key and shape is checked (an error names the folder)."""
    from transformers import Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a local Qwen2 language model folder)")
    check_weights_folder(path)  # safetensors only: a folder of pytorch_model.bin is refused, named
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        lm, info = Qwen2ForCausalLM.from_pretrained(
            path, use_safetensors=True, local_files_only=True, output_loading_info=True
        )
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{path}: the weights do not fit config.json ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    problems = [k for k in ("missing_keys", "unexpected_keys") if info.get(k)]
    if problems:
        raise ValueError(f"{path}: {problems[0].replace('_', ' ')} {sorted(info[problems[0]])[:3]}")
    return lm


def geometry_from_config(mcfg, text_hidden: int) -> G2VLMGeometry:
    """The non-language parts of ModelConfig's sizes, fused into a language model of width `text_hidden`."""
    return G2VLMGeometry(
        text_hidden=text_hidden,
        geo_dim=mcfg.geo_dim,
        knn=mcfg.knn,
        edgeconv_layers=mcfg.edgeconv_layers,
        voxel_sizes=tuple(mcfg.voxel_sizes),
        max_tokens=mcfg.max_tokens,
        pixel_stride=mcfg.pixel_stride,
        fusion_layers=mcfg.fusion_layers,
        fusion_heads=mcfg.fusion_heads,
        geometry_bias=mcfg.geometry_bias,
        bias_sigma=mcfg.bias_sigma,
        geometry_free=mcfg.geometry_free,
        image_size=mcfg.image_size,
        recon_patch=mcfg.recon_patch,
        recon_dim=mcfg.recon_dim,
        recon_layers=mcfg.recon_layers,
        recon_heads=mcfg.recon_heads,
        recon_registers=mcfg.recon_registers,
        max_views=mcfg.max_views,
    )


def build_model(mcfg, seed: int = 0) -> G2VLM:
    """A G2VLM from ModelConfig: a random tiny Qwen2 and local tokenizer, or a local Qwen2 folder."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    if mcfg.pretrained_path:
        lm = load_language_model(mcfg.pretrained_path)
        tokenizer = AutoTokenizer.from_pretrained(mcfg.pretrained_path, local_files_only=True)
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHAT_TEMPLATE
    else:
        tokenizer = build_tokenizer(mcfg.tokenizer_vocab)
        lm = Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=mcfg.vocab_size or len(tokenizer),
                hidden_size=mcfg.text_hidden,
                intermediate_size=mcfg.text_mlp,
                num_hidden_layers=mcfg.text_layers,
                num_attention_heads=mcfg.text_heads,
                num_key_value_heads=mcfg.text_kv_heads,
                max_position_embeddings=4096,
                initializer_range=mcfg.init_std,
                rope_parameters={"rope_type": "default", "rope_theta": float(mcfg.rope_theta)},
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                tie_word_embeddings=False,
            )
        )
    geometry = geometry_from_config(mcfg, lm.config.hidden_size)
    return G2VLM(lm, geometry, tokenizer)
