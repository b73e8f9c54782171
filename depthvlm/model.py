"""DepthVLM: Qwen3-VL with a DPT depth head on its language backbone (arXiv 2605.15876, Sec. 3).

`DepthVLMForConditionalGeneration` is transformers' `Qwen3VLForConditionalGeneration` unchanged
underneath (same modules, same weight names, `PreTrainedModel` save/load and `generate`), plus
`depth_head`. One prefill pass gives the next-token logits and the depth map: the vision encoder
runs once, its DeepStack features go both into the language model (as in Qwen3-VL) and into the
head, and the head also reads the language model's last hidden states at the image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from safetensors import safe_open
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.utils import ModelOutput

from common.checkpoint import check_weights_folder
from common.errors import CheckpointError
from depthvlm.head import DPTDepthHead, official_key_map


@strict
class DepthVLMConfig(Qwen3VLConfig):
    """Qwen3VLConfig plus the depth head's settings (`depth_head`: features, out_channels) and the
    stage-2 depth loss weight w (loss = text + w * depth, Sec. 3.3; w = 1.0) and SILog lambda."""

    model_type = "depthvlm_qwen3_vl"
    depth_head: dict | None = None
    depth_loss_weight: float = 1.0
    silog_lambda: float = 0.5


@dataclass
class DepthVLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    depth: list | None = None  # per image [H, W] metric z-depth in metres
    depth_loss: torch.Tensor | None = None
    text_loss: torch.Tensor | None = None


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """SILog (Eigen et al. 2014) on valid pixels (gt > 0, pred > 0): sqrt(mean d^2 - lam mean(d)^2 + 1e-8),
    d = log pred - log gt, lam = 0.5 and no x10 scale, as DepthVLM's training loss."""
    valid = (gt > 0) & (pred > 0)  # [H, W]
    if not valid.any():
        return pred.sum() * 0.0  # keeps the graph; an image without valid depth adds nothing
    d = torch.log(pred[valid]) - torch.log(gt[valid])  # [N]
    return torch.sqrt((d ** 2).mean() - lam * d.mean() ** 2 + 1e-8)


class DepthVLMForConditionalGeneration(Qwen3VLForConditionalGeneration):
    config: DepthVLMConfig
    config_class = DepthVLMConfig

    def __init__(self, config: DepthVLMConfig):
        super().__init__(config)
        taps = list(config.vision_config.deepstack_visual_indexes)
        if len(set(taps)) != 3:
            raise ValueError(f"vision_config.deepstack_visual_indexes: the head reads 3 distinct DeepStack layers, got {taps}")
        head = dict(config.depth_head or {})
        self.depth_head = DPTDepthHead(config.text_config.hidden_size, **head)
        self.post_init()

    # ---------------------------------------------------------------------------------------------
    def image_token_maps(self, input_ids, last_hidden, deepstack, image_grid_thw) -> list[list[torch.Tensor]]:
        """Per image, the four head inputs as [h, w, C] maps on the merged patch grid.

        Image tokens are found from `input_ids` (== image_token_id), in row-major (batch, position)
        order: the order in which Qwen3-VL scatters image embeddings. Image i owns the next
        h_i * w_i of them, with (h_i, w_i) = grid_thw[i, 1:] / merge, row-major over its grid.
        """
        merge = self.config.vision_config.spatial_merge_size
        grids = (image_grid_thw[:, 1:] // merge).tolist()  # [N_img][h, w]
        counts = [h * w for h, w in grids]
        mask = input_ids == self.config.image_token_id  # [B, L]
        if int(mask.sum()) != sum(counts):
            raise ValueError(f"input_ids: {int(mask.sum())} image tokens, but image_grid_thw gives {sum(counts)}")
        llm = last_hidden[mask].split(counts)  # N_img x [h*w, C]
        maps = []
        for i, (h, w) in enumerate(grids):
            feats = [deepstack[j][i] for j in range(len(deepstack))] + [llm[i]]  # 4 x [h*w, C]
            maps.append([f.reshape(h, w, -1) for f in feats])  # 4 x [h, w, C]
        return maps

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, pixel_values=None, image_grid_thw=None,
                mm_token_type_ids=None, image_sizes=None, depth_labels=None, predict_depth=None,
                logits_to_keep=0, num_items_in_batch=None, **kwargs) -> DepthVLMOutput:
        """Qwen3-VL's forward plus, when images are given, the depth map of each image.

        image_sizes [N_img, 2]: (H, W) to decode depth at (default: the patch grid's pixel size).
        depth_labels: list of [H, W] z-depth maps in metres (0 = invalid), one per image, the same
        size as the image; None for an image skips its head (no depth, no loss). Loss: SILog
        (lambda 0.5) + text CE on `labels` != -100 as
        text + w * depth; depth alone when no token is labelled (stage 1). The text CE is the mean
        over the labelled tokens, or their sum / num_items_in_batch (a global batch's token count,
        across processes).
        """
        want_depth = pixel_values is not None and (predict_depth is None or predict_depth)
        mm_encoder_outputs = None
        if want_depth:
            # Run the vision encoder ourselves so its DeepStack features reach the head too.
            vision = self.model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
            mm_encoder_outputs, pixel_values = {"image": vision}, None
        outputs = self.model(input_ids=input_ids, pixel_values=pixel_values, image_grid_thw=image_grid_thw,
                             position_ids=position_ids, attention_mask=attention_mask,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                             mm_token_type_ids=mm_token_type_ids, mm_encoder_outputs=mm_encoder_outputs, **kwargs)
        hidden = outputs.last_hidden_state  # [B, L, C] (after the final norm)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])  # [B, L', V]

        text_loss = None
        if labels is not None and bool((labels != -100).any()):
            text_loss = self.loss_function(logits=logits, labels=labels, num_items_in_batch=num_items_in_batch,
                                           vocab_size=self.config.text_config.vocab_size)
        depth, depth_loss = None, None
        if want_depth:
            if input_ids is None:
                raise ValueError("input_ids: needed to find the image-token positions for the depth head")
            maps = self.image_token_maps(input_ids, hidden, vision.deepstack_features, image_grid_thw)
            factor = self.config.vision_config.patch_size * self.config.vision_config.spatial_merge_size
            sizes = (image_sizes.tolist() if image_sizes is not None
                     else [[h * factor // 1, w * factor] for h, w in (image_grid_thw[:, 1:] //
                           self.config.vision_config.spatial_merge_size).tolist()])
            if depth_labels is not None and len(depth_labels) != len(maps):
                raise ValueError(f"depth_labels: {len(depth_labels)} maps for {len(maps)} images")
            # A None label skips the head for that image (its depth is None): training steps that
            # supervise depth on a few images of the batch pay for the head on those only.
            decode = [depth_labels is None or g is not None for g in (depth_labels or maps)]
            depth = [self.depth_head(m, tuple(s)) if d else None
                     for m, s, d in zip(maps, sizes, decode)]  # N_img x [H, W] (or None)
            if depth_labels is not None:
                pairs = [(p, g) for p, g in zip(depth, depth_labels) if g is not None]
                for i, (p, g) in enumerate(zip(depth, depth_labels)):
                    if g is not None and tuple(g.shape) != tuple(p.shape):
                        raise ValueError(f"depth_labels[{i}]: shape {list(g.shape)}, expected the image "
                                         f"size {list(p.shape)} (resample depth with the image)")
                if pairs:
                    depth_loss = torch.stack([silog_loss(p, g.to(p), self.config.silog_lambda)
                                              for p, g in pairs]).mean()
        if text_loss is not None and depth_loss is not None:
            loss = text_loss + self.config.depth_loss_weight * depth_loss
        else:
            loss = text_loss if text_loss is not None else depth_loss
        return DepthVLMOutput(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                              hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                              depth=depth, depth_loss=depth_loss, text_loss=text_loss)

    @torch.no_grad()
    def generate_with_depth(self, inputs: dict, max_new_tokens: int = 16) -> tuple[torch.Tensor, list]:
        """Greedy answer tokens [B, T] and depth maps (N_img x [H, W]) from one prefill pass.

        The prompt minus its last token (the newline after "assistant", after every image token)
        is run once with the depth head and its KV cache is handed to `generate`, which continues
        from it: the image-token states do not depend on later tokens (causal attention), so the
        text is exactly what `generate` alone gives and the encoder and prompt run once. The image
        is in the cache, so `generate` gets no pixels; it positions the new tokens with the M-RoPE
        offsets (`rope_deltas`) that the prefill stored.
        """
        cut = {k: inputs[k][:, :-1] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        out = self(**cut, pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"],
                   image_sizes=inputs.get("image_sizes"), use_cache=True)
        ids = self.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            mm_token_type_ids=inputs["mm_token_type_ids"], past_key_values=out.past_key_values,
                            max_new_tokens=max_new_tokens, do_sample=False, predict_depth=False)
        return ids[:, inputs["input_ids"].shape[1]:], out.depth


# -------------------------------------------------------------------------------------------------
# Building and loading
# -------------------------------------------------------------------------------------------------


def head_kwargs(mcfg) -> dict:
    return {"features": int(mcfg.head_features), "out_channels": [int(c) for c in mcfg.head_out_channels],
            "relu_skip": bool(mcfg.head_relu_skip)}


def tiny_config(mcfg, tokenizer) -> DepthVLMConfig:
    """A small random-weight Qwen3-VL (sizes from ModelConfig) with the tokenizer's special ids."""
    head_dim = mcfg.text_hidden // mcfg.text_heads
    half = head_dim // 2  # M-RoPE splits the rotary half-dims over (t, h, w)
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    return DepthVLMConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=mcfg.text_hidden, intermediate_size=mcfg.text_mlp,
                         num_hidden_layers=mcfg.text_layers, num_attention_heads=mcfg.text_heads,
                         num_key_value_heads=mcfg.text_kv_heads, head_dim=head_dim, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": float(mcfg.rope_theta),
                                          "mrope_section": section, "mrope_interleaved": True},
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(depth=mcfg.vision_depth, hidden_size=mcfg.vision_hidden, intermediate_size=mcfg.vision_mlp,
                           num_heads=mcfg.vision_heads, patch_size=mcfg.patch_size,
                           spatial_merge_size=mcfg.spatial_merge, out_hidden_size=mcfg.text_hidden,
                           num_position_embeddings=mcfg.num_position_embeddings,
                           deepstack_visual_indexes=list(mcfg.deepstack_layers)),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        depth_head=head_kwargs(mcfg),
    )


def build_model(mcfg, seed: int = 0):
    """(model, processor) from ModelConfig: random tiny weights, or a local Qwen3-VL / DepthVLM folder."""
    from depthvlm.data import tokenizer_corpus
    from depthvlm.processing import DepthVLMProcessor, build_tokenizer

    dtype = getattr(torch, mcfg.dtype)
    if mcfg.pretrained_path:
        return load_pretrained(mcfg.pretrained_path, head=head_kwargs(mcfg), dtype=dtype)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tokenizer_corpus())  # object names as single tokens
    processor = DepthVLMProcessor(tokenizer, patch_size=mcfg.patch_size, merge_size=mcfg.spatial_merge)
    model = DepthVLMForConditionalGeneration(tiny_config(mcfg, tokenizer)).to(dtype)
    if mcfg.vision_pos_init_std is not None:  # as vlm3.model.VLM3.tiny (copied on purpose)
        with torch.no_grad():
            model.model.visual.pos_embed.weight.normal_(0.0, float(mcfg.vision_pos_init_std))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def load_pretrained(path, head: dict | None = None, dtype=torch.float32):
    """(model, processor) from a local folder: a DepthVLM checkpoint we saved (head included); the
    official DepthVLM release (e.g. DepthVLM-4B: `model_type` qwen3_vl with its DPT head under
    `depth_head.`), whose head is mapped key by key (`load_official_head`) and computes as the
    official one (`relu_skip`); or a plain Qwen3-VL
    checkpoint (e.g. Qwen3-VL-4B-Instruct), whose depth head starts from random weights (stage 1
    trains it). `head` sizes the head for the last two (paper: features 256, [256, 512, 1024, 1024]).
    Every tensor of the folder must land in the model and every parameter be loaded (a head made
    fresh excepted); otherwise one error naming the folder and the first such key."""
    import json

    from depthvlm.processing import DepthVLMProcessor

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a local Qwen3-VL or DepthVLM checkpoint folder)")
    files = check_weights_folder(path)  # safetensors only: a folder of pytorch_model.bin is refused, named
    raw = json.loads((path / "config.json").read_text())
    kind = raw.get("model_type")
    official = False
    if kind == DepthVLMConfig.model_type:
        config = DepthVLMConfig.from_pretrained(path)
    elif kind == "qwen3_vl":
        official = bool(official_head_files(files))
        base = Qwen3VLConfig.from_pretrained(path).to_dict()
        head_type = base.pop("depth_head_type", None)  # the official config records its head's kind
        if official and head_type not in (None, "dpt"):
            raise CheckpointError(path / "config.json", f"depth_head_type {head_type!r}: only the official DPT head "
                                                        "('dpt') maps onto this package's head")
        for key in ("model_type", "transformers_version", "architectures", "depth_head_mlp_hidden",
                    "depth_head_feature_mode"):
            base.pop(key, None)
        # The official head computes with relu(x) skips (in-place ReLUs), whatever `head` says.
        config = DepthVLMConfig(**base, depth_head={**(head or {}), **({"relu_skip": True} if official else {})})
    else:
        raise ValueError(f"{path / 'config.json'}: model_type {kind!r}, expected 'qwen3_vl' or "
                         f"{DepthVLMConfig.model_type!r}")
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head's keys are checked below, not reported as a warning
    try:
        model, info = DepthVLMForConditionalGeneration.from_pretrained(
            path, config=config, dtype=dtype, local_files_only=True, use_safetensors=True, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh_head = kind == "qwen3_vl"  # its head is mapped from the official layout below, or made fresh
    ok = lambda key: fresh_head and key.startswith(OFFICIAL_HEAD_PREFIX)  # noqa: E731
    mismatched = [k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]]
    for what, keys in (("unexpected tensor", [k for k in info["unexpected_keys"] if not ok(k)]),
                       ("missing tensor", [k for k in info["missing_keys"] if not ok(k)]),
                       ("tensor of another shape", mismatched)):
        if keys:
            raise CheckpointError(path, f"{what} {sorted(keys)[0]!r} ({len(keys)} in all): the weights do not match "
                                        "the architecture of config.json")
    if official:
        load_official_head(model.depth_head, files)
    processor = DepthVLMProcessor.from_pretrained(path)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return model, processor


OFFICIAL_HEAD_PREFIX = "depth_head."


def official_head_files(files) -> dict[str, Path]:
    """The `depth_head.*` tensors of safetensors files (the official release's head): name without
    the prefix -> the file holding it."""
    where = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(OFFICIAL_HEAD_PREFIX):
                    where[key[len(OFFICIAL_HEAD_PREFIX):]] = Path(file)
    return where


def load_official_head(head: DPTDepthHead, files) -> int:
    """Copy the official head's tensors (`depth_head.*` in `files`, the official `DPTDepthHead`
    layout) into ours by `official_key_map`. Every official key must be there, no other, and every
    shape must be ours; otherwise one CheckpointError naming the file and the first such key,
    before anything is copied. Returns the number of tensors read."""
    where = official_head_files(files)
    mapping = official_key_map()
    extra, missing = sorted(set(where) - set(mapping)), sorted(set(mapping) - set(where))
    if extra:
        raise CheckpointError(where[extra[0]], f"unexpected tensor '{OFFICIAL_HEAD_PREFIX}{extra[0]}' ({len(extra)} "
                                               "in all): not the official DPT depth head")
    if missing:
        named = files[0] if len(files) == 1 else Path(files[0]).parent
        raise CheckpointError(named, f"no tensor '{OFFICIAL_HEAD_PREFIX}{missing[0]}' ({len(missing)} of the "
                                     f"{len(mapping)} tensors of the official DPT depth head are missing)")
    own = head.state_dict()
    state = {}
    for key in sorted(mapping):
        with safe_open(str(where[key]), framework="pt") as f:
            shape = list(f.get_slice(OFFICIAL_HEAD_PREFIX + key).get_shape())
            for target in mapping[key]:
                if shape != list(own[target].shape):
                    raise CheckpointError(where[key], f"'{OFFICIAL_HEAD_PREFIX}{key}' has shape {shape}, the head "
                                                      f"(depth_head config) expects {list(own[target].shape)} "
                                                      f"for '{target}'")
            value = f.get_tensor(OFFICIAL_HEAD_PREFIX + key)
        for target in mapping[key]:
            state[target] = value.to(own[target].dtype)
    head.load_state_dict(state, strict=True)
    return len(mapping)


def save_pretrained(model, processor, path) -> None:
    """config.json + model.safetensors + tokenizer + processor settings in one folder."""
    model.save_pretrained(path)
    processor.save_pretrained(path)
