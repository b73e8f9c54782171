"""The inference model of 3D-IDE: LLaVA-Video (SigLIP + Qwen2, transformers' LLaVA-OneVision classes)
with Video-3D LLM's grounding head. Nothing else: the verifier, the projection to the 3D teacher and
the teacher itself live in `supervision.py` and `teacher.py`, run only in training, and are never
part of this model or of its checkpoint (Sec. 3, "zero cost at inference").

`IDE3DForConditionalGeneration` is `LlavaOnevisionForConditionalGeneration` unchanged underneath
(same modules, weight names and `generate`), plus `ground_head`. Its config stays a
`LlavaOnevisionConfig` (model_type "llava_onevision") with the grounding settings in `config.ide3d`,
so the checkpoint also loads in the stock class (the ground head's keys are then the only extra).

The video path is transformers' `get_video_features`, spelt out in `encode_video` so that training
can read what it needs from the same pass: the SigLIP layers (verifier), the projected patch
features before pooling (object features), and the pooled tokens, to which Video-3D LLM's 3D
position encoding is added when `config.ide3d["token_pe"]` (the "3D inputs" variant only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from common.checkpoint import check_weights_folder
from ide3d.grounding import GroundingHead, pool_object_features, sincos_3d
from ide3d.processing import IDE3DProcessor, build_tokenizer

GROUND_PREFIX = "ground_head."


@dataclass
class VideoEncoding:
    vision_hidden: tuple  # SigLIP hidden states, each [B*F, g*g, Cv] (embeddings first)
    patch_features: torch.Tensor  # [B, F, g, g, C] after the projector, before pooling
    tokens: torch.Tensor  # [B, F*p*p + 1, C] pooled visual tokens (+ 3D encoding) and the newline


@dataclass
class IDE3DOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    last_hidden_state: torch.Tensor | None = None  # [B, L, C] after the final norm
    text_loss: torch.Tensor | None = None  # [B] mean CE over each sample's answer tokens (0: none)
    video: VideoEncoding | None = None


class IDE3DForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    config_class = LlavaOnevisionConfig

    def __init__(self, config: LlavaOnevisionConfig):
        super().__init__(config)
        from ide3d.config import ModelConfig  # the one place the grounding defaults are written

        settings = getattr(config, "ide3d", None) or {}
        config.ide3d = {**grounding_settings(ModelConfig()), **settings}
        self.ground_head = GroundingHead(config.text_config.hidden_size)
        self.post_init()

    # -- settings --------------------------------------------------------------------------------
    @property
    def settings(self) -> dict:
        return self.config.ide3d

    @property
    def grid(self) -> int:
        v = self.config.vision_config
        return v.image_size // v.patch_size

    def position_encoding(self, xyz: torch.Tensor) -> torch.Tensor:
        """sin-cos 3D encoding [..., C] of world points xyz [..., 3] (metres) at the LLM width."""
        s = self.settings
        pe = sincos_3d(xyz, self.config.text_config.hidden_size, s["pe_min"], s["pe_max"], s["pe_voxel"])
        return pe * s.get("pe_scale", 1.0)

    # -- vision ----------------------------------------------------------------------------------
    def encode_video(
        self,
        pixel_values_videos: torch.Tensor,
        token_xyz: torch.Tensor | None = None,
        token_has_points: torch.Tensor | None = None,
    ) -> VideoEncoding:
        """pixel_values_videos [B, F, 3, S, S] -> VideoEncoding (transformers' get_video_features,
        with its intermediate results kept).

        token_xyz [B, F, p, p, 3], token_has_points [B, F, p, p]: each pooled token's mean world
        point; used only when config.ide3d["token_pe"] (Video-3D LLM's 3D inputs), where the encoding
        is added to the token (zero where a token has no valid depth).
        """
        B, Fr = pixel_values_videos.shape[:2]
        m = self.model
        vision = m.vision_tower(
            pixel_values_videos.flatten(0, 1), output_hidden_states=True, return_dict=True
        )
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"vision_feature_layer: expected one layer, got {layer!r}")
        selected = vision.hidden_states[layer]  # [B*F, g*g, Cv]
        patches = m.multi_modal_projector(selected)  # [B*F, g*g, C]
        pooled = m.apply_pooling(patches)  # [B*F, p*p, C]
        p = int(round(pooled.shape[1] ** 0.5))
        if self.settings["token_pe"] and token_xyz is not None:
            pe = self.position_encoding(token_xyz.flatten(0, 1))  # [B*F, p, p, C]
            if token_has_points is not None:
                pe = pe * token_has_points.flatten(0, 1)[..., None].to(pe)
            pooled = pooled + pe.reshape(B * Fr, p * p, -1).to(pooled)
        tokens = pooled.reshape(B, Fr * p * p, -1)  # [B, F*p*p, C]
        newline = m.image_newline[None, None, :].expand(B, 1, -1).to(tokens)  # [B, 1, C]
        g = self.grid
        return VideoEncoding(
            vision_hidden=vision.hidden_states,
            patch_features=patches.reshape(B, Fr, g, g, -1),
            tokens=torch.cat([tokens, newline], 1),
        )

    # -- language --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        pixel_values_videos=None,
        token_xyz=None,
        token_has_points=None,
        video_index=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        mm_encoder_outputs=None,
        **kwargs,
    ) -> IDE3DOutput:
        """LLaVA-OneVision's forward on a video, returning the final hidden states too.

        pixel_values_videos [U, F, 3, S, S] with video_index [B] (sample b shows video video_index[b];
        default: one video per sample, U = B). labels [B, L] (-100 = no target): `text_loss` [B] is
        each sample's mean next-token CE over its answer tokens, and `loss` their mean over the
        samples that have any, so that N processes at batch B average to one process at batch N * B.
        """
        video = None
        if pixel_values_videos is not None:
            video = self.encode_video(pixel_values_videos, token_xyz, token_has_points)
            tokens = video.tokens if video_index is None else video.tokens[video_index]  # [B, T, C]
            mm_encoder_outputs = {"video": BaseModelOutputWithPooling(pooler_output=tokens)}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )
        hidden = out.last_hidden_state  # [B, L, C]
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])  # [B, L', V]
        loss = text_loss = None
        if labels is not None:
            target = labels[:, 1:]  # [B, L-1]
            ce = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
            ).view_as(target)  # [B, L-1]
            n = (target != -100).sum(1)  # [B]
            text_loss = ce.sum(1) / n.clamp_min(1)
            loss = text_loss[n > 0].mean() if bool((n > 0).any()) else None
        return IDE3DOutput(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            last_hidden_state=hidden,
            text_loss=text_loss,
            video=video,
        )

    # -- grounding -------------------------------------------------------------------------------
    def object_features(
        self, patch_features: torch.Tensor, membership: torch.Tensor, boxes: torch.Tensor
    ) -> torch.Tensor:
        """Candidate features [N, C]: mean patch feature inside each box (patch_features [F, g, g, C],
        membership [N, F, g, g]) plus the sin-cos encoding of its centre (boxes [N, 6])."""
        feats = pool_object_features(patch_features, membership)  # [N, C]
        return feats + self.position_encoding(boxes[:, :3].to(feats)).to(feats)

    def ground_scores(self, query: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """query [C] (the `<ground>` hidden state), objects [N, C] -> cosine scores [N + 1]."""
        return self.ground_head(query, objects)

    @torch.no_grad()
    def answer(self, batch: dict, max_new_tokens: int = 8) -> torch.Tensor:
        """Greedy answer tokens [B, T] for a batch from `IDE3DProcessor` or `ide3d.data.collate`
        (no answers given; `video_index` optional, as in `forward`)."""
        video = self.encode_video(
            batch["pixel_values_videos"], batch.get("token_xyz"), batch.get("token_has_points")
        )
        index = batch.get("video_index")
        tokens = video.tokens if index is None else video.tokens[index]  # [B, T, C]
        ids = self.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            mm_encoder_outputs={"video": BaseModelOutputWithPooling(pooler_output=tokens)},
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
        return ids[:, batch["input_ids"].shape[1] :]


# -------------------------------------------------------------------------------------------------
# Building and loading
# -------------------------------------------------------------------------------------------------


def grounding_settings(mcfg) -> dict:
    return {
        "ground_temperature": float(mcfg.ground_temperature),
        "pe_min": [float(x) for x in mcfg.pe_min],
        "pe_max": [float(x) for x in mcfg.pe_max],
        "pe_voxel": float(mcfg.pe_voxel),
        "token_pe": bool(mcfg.token_pe),
        "pe_scale": float(mcfg.pe_scale),
    }


def llava_config(
    mcfg, vocab_size: int, pad_id: int, eos_id: int, image_id: int, video_id: int
) -> LlavaOnevisionConfig:
    """LLaVA-Video's config (SigLIP + Qwen2, transformers' LLaVA-OneVision) of the sizes in ModelConfig."""
    return LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=mcfg.vision_hidden,
            intermediate_size=mcfg.vision_mlp,
            num_hidden_layers=mcfg.vision_layers,
            num_attention_heads=mcfg.vision_heads,
            image_size=mcfg.image_size,
            patch_size=mcfg.patch_size,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=vocab_size,
            hidden_size=mcfg.text_hidden,
            intermediate_size=mcfg.text_mlp,
            num_hidden_layers=mcfg.text_layers,
            num_attention_heads=mcfg.text_heads,
            num_key_value_heads=mcfg.text_kv_heads,
            max_position_embeddings=32768,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            rope_parameters={"rope_type": "default", "rope_theta": float(mcfg.rope_theta)},
            initializer_range=mcfg.init_std,
        ),
        initializer_range=mcfg.init_std,
        image_token_index=image_id,
        video_token_index=video_id,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[mcfg.image_size, mcfg.image_size]],
        ide3d=grounding_settings(mcfg),
    )


def tiny_config(mcfg, tokenizer) -> LlavaOnevisionConfig:
    """A small random-weight LLaVA-Video with the local tokenizer's special ids."""
    ids = tokenizer.convert_tokens_to_ids
    return llava_config(
        mcfg,
        mcfg.vocab_size or len(tokenizer),
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        ids("<image>"),
        ids("<video>"),
    )


def meta_model(mcfg) -> IDE3DForConditionalGeneration:
    """The model of ModelConfig's sizes on the `meta` device (no memory, no weights): parameter counts
    and FLOPs at paper scale (paper.yaml: LLaVA-Video-7B-Qwen2). Qwen2's token ids."""
    if mcfg.vocab_size <= 0:
        raise ValueError("model.vocab_size: needed for a meta-device model (Qwen2: 152064)")
    config = llava_config(mcfg, mcfg.vocab_size, 151643, 151645, 151646, 151647)
    with torch.device("meta"):
        return IDE3DForConditionalGeneration(config)


def build_model(mcfg, seed: int = 0):
    """(model, processor): random tiny weights and a local tokenizer, or a local checkpoint."""
    if mcfg.pretrained_path:
        return load_pretrained(
            mcfg.pretrained_path, settings=grounding_settings(mcfg), dtype=getattr(torch, mcfg.dtype)
        )
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(mcfg.tokenizer_vocab)
    processor = IDE3DProcessor(tokenizer, image_size=mcfg.image_size, patch_size=mcfg.patch_size)
    model = IDE3DForConditionalGeneration(tiny_config(mcfg, tokenizer)).to(getattr(torch, mcfg.dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def load_pretrained(path, settings: dict | None = None, dtype=torch.float32):
    """(model, processor) from a local folder: one we saved, or LLaVA-Video-7B-Qwen2 in transformers'
    LLaVA-OneVision format, whose ground head starts from random weights (the only missing keys
    allowed). Every other key must be present with its shape; nothing is downloaded."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no config.json (expected a local LLaVA-OneVision / 3D-IDE checkpoint folder)"
        )
    check_weights_folder(path)  # safetensors only: a folder of pytorch_model.bin is refused, named
    config = LlavaOnevisionConfig.from_pretrained(path)
    if config.model_type != "llava_onevision":
        raise ValueError(
            f"{path / 'config.json'}: model_type {config.model_type!r}, expected 'llava_onevision'"
        )
    if settings is not None and not getattr(config, "ide3d", None):
        config.ide3d = settings
    processor = IDE3DProcessor.from_pretrained(path)  # adds <ground> to a stock LLaVA-Video tokenizer
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # our one-line error below says what the key report would
    try:
        model, info = IDE3DForConditionalGeneration.from_pretrained(
            path,
            config=config,
            dtype=dtype,
            use_safetensors=True,
            local_files_only=True,
            output_loading_info=True,
        )
    except RuntimeError as exc:  # transformers refuses weights of other shapes
        raise ValueError(
            f"{path}: the weights do not fit config.json (a checkpoint of another architecture?): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [k for k in info["missing_keys"] if not k.startswith(GROUND_PREFIX)]
    problems = {
        "missing": missing,
        "unexpected": list(info["unexpected_keys"]),
        "mismatched": [k for k, *_ in info.get("mismatched_keys", [])],
    }
    for kind, keys in problems.items():
        if keys:
            raise ValueError(
                f"{path}: {len(keys)} {kind} weight(s), e.g. {sorted(keys)[:3]} "
                "(a checkpoint of another architecture?)"
            )
    if len(processor.tokenizer) > model.config.text_config.vocab_size:  # <ground> was added
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=True)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return model, processor


def save_pretrained(model: IDE3DForConditionalGeneration, processor: IDE3DProcessor, path) -> Path:
    """config.json + model.safetensors (the inference model only) + tokenizer + processor settings."""
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
