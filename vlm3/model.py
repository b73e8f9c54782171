"""VLM3's model: `transformers`' Qwen3-VL, unchanged (the paper's point: no architecture change).

`VLM3` bundles the `Qwen3VLForConditionalGeneration`, its tokenizer and its image processor, and
turns (images, prompt[, answer]) into model inputs:

- the chat template puts `<|vision_start|><|image_pad|><|vision_end|>` per image before the text;
  each `<|image_pad|>` is expanded to the image's number of merged patches (grid t*h*w / merge^2),
  as `Qwen3VLProcessor` does (that class needs torchvision for its video half, so the image half is
  done here with the PIL image processor);
- with `pair_as_video`, the two views of a two-image question enter as one 2-frame video
  (`<|video_pad|>`, `pixel_values_videos`): Qwen3-VL's temporal patch of 2 frames puts both views
  of a 16 x 16 px cell into one token, so the vision tower compares them before the LLM does (see
  diagnostics/DIAGNOSTICS.md); every other input is unchanged;
- training targets are the answer tokens and the closing `<|im_end|>` only; every prompt, image
  and padding token has label -100 (next-token cross-entropy on the answer, VLM3 Sec. 3).

`tiny` builds a random-weight Qwen3-VL and a byte-level BPE tokenizer trained on the prompt
templates (nothing downloaded); `from_pretrained(path)` loads a saved model or Qwen3-VL-4B.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from common.checkpoint import check_weights_folder
from vlm3 import prompts as P

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen's chat format, restricted to what VLM3 needs (user turns with images and text, assistant text).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def template_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Prompts and answers of every task with random values: the tiny tokenizer's training text."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pts = rng.integers(0, 2000, size=(int(rng.integers(1, 4)), 2))
        out.append(P.depth_prompt(pts) + P.depth_answer(rng.uniform(0.3, 80, len(pts)), think=True))
        out.append(P.marker_depth_prompt())
        q = rng.integers(0, 1000, size=(2, int(rng.integers(1, 4)), 2))
        out.append(P.correspondence_prompt(q[0]) + P.correspondence_answer(q[1]))
        for kind in P.POSE_QUESTIONS:
            t = rng.normal(size=3)
            out.append(
                P.pose_prompt(kind)
                + P.pose_answer(
                    kind,
                    angle=rng.uniform(0, 90),
                    ypr=rng.uniform(-90, 90, 3),
                    t_unit=t / np.linalg.norm(t),
                    distance=rng.uniform(0, 5),
                )
            )
        for kind in P.OBJECT_QUESTIONS:
            b = np.sort(rng.integers(0, 1000, size=(2, 4)), axis=-1)
            out.append(P.object_prompt(kind, b[0], b[1]) + P.object_answer(kind, rng.uniform(0, 10)))
    return out


def build_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """A local byte-level BPE tokenizer with Qwen's special tokens and chat template.

    Digits are split one per token (as Qwen's tokenizer does), so numbers are spelt digit by digit.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(template_corpus(seed=seed), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def tiny_qwen3vl_config(cfg, tokenizer) -> Qwen3VLConfig:
    """A small Qwen3-VL: same classes and code paths as Qwen3-VL-4B, random weights."""
    half = cfg.text_head_dim // 2  # M-RoPE splits the rotary half-dimension over (t, h, w)
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_hidden,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            num_key_value_heads=cfg.text_kv_heads,
            head_dim=cfg.text_head_dim,
            intermediate_size=cfg.text_intermediate,
            max_position_embeddings=4096,
            pad_token_id=ids["<|endoftext|>"],
            rope_parameters=dict(
                rope_type="default",
                rope_theta=float(cfg.rope_theta),
                mrope_section=section,
                mrope_interleaved=True,
            ),
        ),
        vision_config=dict(
            depth=cfg.vision_depth,
            hidden_size=cfg.vision_hidden,
            num_heads=cfg.vision_heads,
            intermediate_size=cfg.vision_intermediate,
            patch_size=cfg.patch_size,
            spatial_merge_size=cfg.merge_size,
            temporal_patch_size=2,
            out_hidden_size=cfg.text_hidden,
            num_position_embeddings=256,
            deepstack_visual_indexes=list(range(min(cfg.vision_depth, 3))),
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> [H, W, 3] uint8 (what camera images are before the processor)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected [3, H, W] float in [0, 1], got shape {tuple(image.shape)}")
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


INPUT_FILE = "vlm3_input.json"  # beside the weights: how image pairs enter the model


class VLM3:
    """A Qwen3-VL with its tokenizer and image processor (see the module docstring)."""

    def __init__(
        self, model: Qwen3VLForConditionalGeneration, tokenizer, image_processor, pair_as_video: bool = False
    ):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.merge = image_processor.merge_size
        self.pair_as_video = bool(pair_as_video)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def tiny(cls, cfg, seed: int = 0) -> "VLM3":
        tokenizer = build_tokenizer(cfg.tokenizer_vocab, seed=0)
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(tiny_qwen3vl_config(cfg, tokenizer))
        if cfg.vision_pos_init_std is not None:
            with torch.no_grad():
                model.model.visual.pos_embed.weight.normal_(0.0, cfg.vision_pos_init_std)
        return cls(model, tokenizer, cls.make_image_processor(cfg), pair_as_video=cfg.pair_as_video)

    @staticmethod
    def make_image_processor(cfg) -> Qwen2VLImageProcessorPil:
        return Qwen2VLImageProcessorPil(
            patch_size=cfg.patch_size,
            merge_size=cfg.merge_size,
            temporal_patch_size=2,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )

    @classmethod
    def build(cls, cfg, seed: int = 0) -> "VLM3":
        """tiny.yaml: random weights; paper.yaml: `cfg.pretrained_path` (a local folder)."""
        if cfg.pretrained_path is None:
            return cls.tiny(cfg, seed)
        vlm = cls.from_pretrained(cfg.pretrained_path, dtype=cfg.dtype, image_cfg=cfg)
        vlm.pair_as_video = bool(cfg.pair_as_video)
        return vlm

    @classmethod
    def from_pretrained(cls, path, dtype: str = "float32", image_cfg=None) -> "VLM3":
        path = Path(path)
        for name in ("config.json", "preprocessor_config.json"):
            if not (path / name).is_file():
                raise ValueError(
                    f"{path / name}: not found; expected a folder written by VLM3.save_pretrained "
                    f"or a local copy of Qwen3-VL (config.json, *.safetensors, tokenizer files, "
                    f"preprocessor_config.json)"
                )
        check_weights_folder(path)  # safetensors only: a folder of pytorch_model.bin is refused, named
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            path, dtype=getattr(torch, dtype), use_safetensors=True, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        kwargs = {}
        if image_cfg is not None:  # bound the number of image tokens as the config says
            kwargs = {"min_pixels": image_cfg.min_pixels, "max_pixels": image_cfg.max_pixels}
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
        pair_as_video = False  # a Qwen3-VL folder has no INPUT_FILE: pairs as two images
        if (path / INPUT_FILE).is_file():
            pair_as_video = bool(json.loads((path / INPUT_FILE).read_text()).get("pair_as_video", False))
        return cls(model, tokenizer, image_processor, pair_as_video=pair_as_video)

    def save_pretrained(self, path) -> None:
        """config.json + model.safetensors, the tokenizer, the image processor and INPUT_FILE."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        (Path(path) / INPUT_FILE).write_text(json.dumps({"pair_as_video": self.pair_as_video}))

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- inputs ------------------------------------------------------------------------------
    def _as_clip(self, n_images: int) -> bool:
        """Whether a question's images enter as one 2-frame video (`pair_as_video` and a pair)."""
        return self.pair_as_video and n_images == 2

    def _visual_content(self, n_images: int) -> list[dict]:
        return [{"type": "video"}] if self._as_clip(n_images) else [{"type": "image"}] * n_images

    def prompt_text(self, n_images: int, prompt: str) -> str:
        content = self._visual_content(n_images) + [{"type": "text", "text": prompt}]
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )

    def conversation_pieces(self, n_images: int, turns) -> list[tuple[str, str]]:
        """[(prompt text, answer text)] of a multi-turn conversation on n_images images, cut where the
        chat template puts each answer: prompt piece k runs from the end of answer k-1 (its
        `<|im_end|>` included) to the assistant header; answer piece k is the answer + `<|im_end|>`."""
        eos = self.tokenizer.eos_token
        messages, done, pieces = [], "", []
        for k, (prompt, answer) in enumerate(turns):
            content = (self._visual_content(n_images) if k == 0 else []) + [{"type": "text", "text": prompt}]
            messages.append({"role": "user", "content": content})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if not text.startswith(done):
                raise ValueError(
                    "the chat template renders an earlier turn differently once a later one "
                    "follows; multi-turn training samples (data.turns) need a template that does not"
                )
            pieces.append((text[len(done) :], answer + eos))
            messages.append({"role": "assistant", "content": answer})
            done = text + answer + eos
        return pieces

    def _clip(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views [3, H, W] as one 2-frame video: flattened patches [N, 3 * 2 * P * P] with the first
        view in temporal slot 0 and the second in slot 1 (what Qwen3-VL's video processor makes of a
        2-frame clip), and its grid [1, 3]."""
        if first.shape != second.shape:
            raise ValueError(
                f"pair_as_video: the two views must have one size, got {tuple(first.shape)} and "
                f"{tuple(second.shape)}"
            )
        a = self.image_processor(images=[_to_uint8(first)], return_tensors="pt")
        b = self.image_processor(images=[_to_uint8(second)], return_tensors="pt")
        n = a["pixel_values"].shape[0]
        clip = (
            a["pixel_values"].reshape(n, 3, 2, -1).clone()
        )  # [N, C, T, P*P]: an image fills T by repetition
        clip[:, :, 1] = b["pixel_values"].reshape(n, 3, 2, -1)[:, :, 1]
        return clip.reshape(n, -1), a["image_grid_thw"]

    def _images(self, image_lists):
        """Vision inputs of a batch and the token count of each visual item in order (an image, or a
        pair as one video)."""
        flat, videos, grids, is_clip = [], [], [], []
        for ims in image_lists:
            if self._as_clip(len(ims)):
                pixels, grid = self._clip(*ims)
                videos.append(pixels)
                grids.append(grid)
                is_clip.append(True)
            else:
                flat += [_to_uint8(im) for im in ims]
                is_clip += [False] * len(ims)
        out = {}
        if flat:
            img = self.image_processor(images=flat, return_tensors="pt")
            out = {"pixel_values": img["pixel_values"], "image_grid_thw": img["image_grid_thw"]}
        if videos:
            out.update(pixel_values_videos=torch.cat(videos), video_grid_thw=torch.cat(grids))
        tokens = {
            kind: iter((out[key].prod(-1) // self.merge**2).tolist() if key in out else [])
            for kind, key in ((False, "image_grid_thw"), (True, "video_grid_thw"))
        }
        return out, [next(tokens[c]) for c in is_clip]  # tokens per visual item, in order

    def _expand(self, text: str, counts) -> str:
        """Each image or video placeholder repeated as many times as its item has tokens."""
        parts = re.split(f"({re.escape(self.image_token)}|{re.escape(self.video_token)})", text)
        texts, pads = parts[::2], parts[1::2]  # text, placeholder, text, ..., text
        if len(pads) != len(counts):
            raise ValueError(
                f"prompt has {len(pads)} image/video placeholders for {len(counts)} visual items"
            )
        return "".join(t + p * c for t, p, c in zip(texts, pads, counts)) + texts[-1]

    def encode(self, image_lists, prompts, answers=None, turns=None) -> dict:
        """A batch of model inputs. With answers: right-padded, with `labels` on the answer tokens
        (+ `<|im_end|>`) only; `turns` (optional, per example) adds further (prompt, answer) turns on
        the same images, every answer labelled. Without answers: left-padded prompts ending in the
        assistant header, for `generate`."""
        vision, counts = self._images(image_lists)
        seqs, labels, k = [], [], 0
        for b, (ims, prompt) in enumerate(zip(image_lists, prompts)):
            if answers is None:
                pieces = [(self.prompt_text(len(ims), prompt), None)]
            else:
                more = list(turns[b]) if turns else []
                pieces = self.conversation_pieces(len(ims), [(prompt, answers[b])] + more)
            n_items = 1 if self._as_clip(len(ims)) else len(ims)
            ids, lab = [], []
            for n, (text, answer) in enumerate(pieces):
                if n == 0:
                    text = self._expand(text, counts[k : k + n_items])
                part = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                ids, lab = ids + part, lab + [-100] * len(part)
                if answer is not None:
                    target = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
                    ids, lab = ids + target, lab + target
            k += n_items
            seqs.append(ids)
            labels.append(lab)
        L = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(seqs), L), pad, dtype=torch.long)  # [B, L]
        attention = torch.zeros((len(seqs), L), dtype=torch.long)
        label_t = torch.full((len(seqs), L), -100, dtype=torch.long)
        for b, (ids, lab) in enumerate(zip(seqs, labels)):
            sl = slice(0, len(ids)) if answers is not None else slice(L - len(ids), L)
            input_ids[b, sl] = torch.tensor(ids)
            attention[b, sl] = 1
            label_t[b, sl] = torch.tensor(lab)
        types = (input_ids == self.image_token_id).long() + 2 * (input_ids == self.video_token_id).long()
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": types,
            **vision,
        }  # 1 on image tokens, 2 on video tokens
        if answers is not None:
            batch["labels"] = label_t
        return batch

    def loss(self, batch: dict, num_items_in_batch=None) -> torch.Tensor:
        """Next-token cross-entropy on the answer tokens (transformers shifts the labels): their mean,
        or their sum / num_items_in_batch (a global batch's token count, across processes)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if num_items_in_batch is None:
            return self.model(**batch).loss
        return self.model(**batch, num_items_in_batch=num_items_in_batch).loss

    @torch.no_grad()
    def generate(self, image_lists, prompts, max_new_tokens: int = 40, min_new_tokens: int = 0) -> list[str]:
        """Greedy answers (DepthLM/VLM3 decode greedily), one string per prompt.

        min_new_tokens forces a length (the perf benchmark times realistic answer lengths with
        random weights)."""
        self.model.eval()
        batch = {k: v.to(self.device) for k, v in self.encode(image_lists, prompts).items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in batch:
                batch[key] = batch[key].to(self.model.dtype)
        out = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
        new = out[:, batch["input_ids"].shape[1] :]  # [B, T]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)
