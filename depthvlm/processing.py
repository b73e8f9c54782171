"""Tokenizer and image/text processing for Qwen3-VL, without downloads.

`build_tokenizer()` makes a local byte-level tokenizer (merges optionally learned from a corpus) with the special tokens Qwen3-VL's chat
format needs; `DepthVLMProcessor` turns (image, messages) into the model's inputs with the same
pixel layout as transformers' `Qwen2VLImageProcessor` (which Qwen3-VL uses): normalise with
mean = std = 0.5, duplicate the frame over the temporal patch, patchify in merge-block order.
Image tokens in the sequence are then row-major over the merged grid (H / (patch * merge),
W / (patch * merge)), which is what the depth head relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

# Qwen's chat format, reduced to what we use: system/user/assistant turns, images as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to one per token).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: list[str] | None = None, vocab_size: int = 512):
    """A byte-level BPE tokenizer plus Qwen3-VL's special tokens. Without `corpus`: the 256 byte
    tokens and no merges. With `corpus`: merges learned from it (up to `vocab_size` tokens), so that
    words such as object names become single tokens, as in a real VLM's vocabulary; digits always
    stay one token each (as in Qwen's tokenizer), so numbers are read and written digit by digit."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    split = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if corpus:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = split
        tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet,
                                                            show_progress=False))
    else:
        vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}  # 256 byte symbols
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class DepthVLMProcessor:
    """Images + chat messages -> `input_ids`, `attention_mask`, `mm_token_type_ids`, `pixel_values`,
    `image_grid_thw`, `image_sizes` (and `labels` on the answer tokens only, for training)."""

    def __init__(self, tokenizer, patch_size: int = 16, merge_size: int = 2, temporal_patch_size: int = 2,
                 image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)):
        self.tokenizer = tokenizer
        self.patch_size, self.merge_size, self.temporal_patch_size = patch_size, merge_size, temporal_patch_size
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.image_token = "<|image_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer: has no {self.image_token} token")

    @property
    def factor(self) -> int:
        """Pixels per LLM image token along each side (patch * merge; 32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    # -- images --------------------------------------------------------------------------------
    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """The size the image is fed at: each side rounded to the nearest multiple of `factor`."""
        f = self.factor
        return max(f, round(height / f) * f), max(f, round(width / f) * f)

    def patchify(self, image: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """image [3, H, W] in [0, 1] -> (patches [gh*gw, 3*T*p*p], grid [1, gh, gw]).

        Sizes that are not multiples of `factor` are resized (bilinear) to `model_size`; the depth
        head resizes its output back to (H, W).
        """
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image: expected [3, H, W], got {list(image.shape)}")
        H, W = self.model_size(*image.shape[-2:])
        if (H, W) != tuple(image.shape[-2:]):
            image = F.interpolate(image[None], size=(H, W), mode="bilinear", align_corners=False,
                                  antialias=True)[0]  # [3, H, W]
        mean = torch.tensor(self.image_mean, dtype=image.dtype)[:, None, None]
        std = torch.tensor(self.image_std, dtype=image.dtype)[:, None, None]
        x = (image.float() - mean) / std  # [3, H, W]
        p, m, T = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = H // p, W // p
        x = x.reshape(3, gh // m, m, p, gw // m, m, p)
        x = x.permute(1, 4, 2, 5, 0, 3, 6)  # [gh/m, gw/m, m, m, 3, p, p]
        x = x[:, :, :, :, :, None].expand(*x.shape[:5], T, p, p)  # [gh/m, gw/m, m, m, 3, T, p, p]
        return x.reshape(gh * gw, 3 * T * p * p), [1, gh, gw]

    # -- text ----------------------------------------------------------------------------------
    def _expand(self, text: str, n_tokens: list[int]) -> str:
        parts = text.split(self.image_token)
        if len(parts) - 1 != len(n_tokens):
            raise ValueError(f"messages: {len(parts) - 1} image placeholders for {len(n_tokens)} images")
        out = parts[0]
        for n, part in zip(n_tokens, parts[1:]):
            out += self.image_token * n + part
        return out

    def __call__(self, images: list, prompts: list[str], answers: list[str] | None = None,
                 system: str | None = None) -> dict:
        """One image and one question per sample; `answers` given -> `labels` on answer tokens.

        images: list of [3, H, W] float tensors in [0, 1]. Padding is on the left so that
        generation continues every row at the same position.
        """
        if len(images) != len(prompts) or (answers is not None and len(answers) != len(prompts)):
            raise ValueError(f"images, prompts, answers: lengths {len(images)}, {len(prompts)}, "
                             f"{None if answers is None else len(answers)} differ")
        patches, grids, rows, label_rows = [], [], [], []
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            pv, grid = self.patchify(image)
            patches.append(pv)
            grids.append(grid)
            n = grid[1] * grid[2] // self.merge_size ** 2
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            prompt_text = self._expand(self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True), [n])
            ids = self.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
            labels = [-100] * len(ids)
            if answers is not None:
                # Loss on the answer and its end-of-turn token only (the prompt is re-templated
                # without the reply to find where the answer starts, as DepthVLM's collator does).
                answer_ids = self.tokenizer(answers[i] + "<|im_end|>", add_special_tokens=False)["input_ids"]
                ids = ids + answer_ids
                labels = labels + answer_ids
            rows.append(ids)
            label_rows.append(labels)
        L = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), L), pad, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((len(rows), L), dtype=torch.long)
        labels = torch.full((len(rows), L), -100, dtype=torch.long)
        for b, (ids, lab) in enumerate(zip(rows, label_rows)):
            input_ids[b, L - len(ids):] = torch.tensor(ids)
            attention_mask[b, L - len(ids):] = 1
            labels[b, L - len(ids):] = torch.tensor(lab)
        out = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.image_token_id).long(),  # 1 = image token
            "pixel_values": torch.cat(patches),  # [sum(gh*gw), 3*T*p*p]
            "image_grid_thw": torch.tensor(grids, dtype=torch.long),  # [N_img, 3]
            "image_sizes": torch.tensor([list(im.shape[-2:]) for im in images], dtype=torch.long),  # [N_img, 2]
        }
        if answers is not None:
            out["labels"] = labels
        return out

    def decode(self, ids) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True)

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / "depthvlm_processor.json").write_text(json.dumps({
            "patch_size": self.patch_size, "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
            "image_mean": self.image_mean, "image_std": self.image_std}, indent=1))

    @classmethod
    def from_pretrained(cls, path, **overrides) -> "DepthVLMProcessor":
        """Local folder with a tokenizer; `depthvlm_processor.json` when saved by us, else the
        Qwen3-VL `preprocessor_config.json` (patch_size, merge_size, temporal_patch_size, mean, std)."""
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: processor folder not found")
        # Our own folders hold a fast tokenizer; AutoTokenizer would also read config.json, whose
        # model_type (depthvlm_qwen3_vl) AutoConfig does not know, and warn.
        ours = (path / "depthvlm_processor.json").is_file()
        tokenizer = (PreTrainedTokenizerFast if ours else AutoTokenizer).from_pretrained(path, local_files_only=True)
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHAT_TEMPLATE
        kwargs = {}
        for name in ("depthvlm_processor.json", "preprocessor_config.json"):
            if (path / name).is_file():
                raw = json.loads((path / name).read_text())
                keys = ("patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std")
                kwargs = {k: raw[k] for k in keys if k in raw}
                break
        kwargs.update(overrides)
        return cls(tokenizer, **kwargs)
