"""Prompts, tokenizer and video processing for the LLaVA-Video (LLaVA-OneVision classes) model.

Prompts follow Video-3D LLM's llava-style records: grounding asks "Identify the object according to
the following description.\\n<description>" (Multi3DRefer adds "There may be no corresponding
object, or there may be one or more objects.") and the assistant's turn is the single token
`<ground>`, whose last hidden state scores the candidate boxes; QA asks "<question> Answer the
question simply." and the answer is text. The chat format is Qwen2's (`<|im_start|>role ...`).

Video layout (transformers' `LlavaOnevisionProcessor`): the `<video>` placeholder is expanded to
F * ceil(g / 2)^2 + 1 tokens for F frames of g x g patches (2x2 bilinear pooling, one newline
token at the end). Frames are resized to image_size x image_size and normalised with mean = std =
0.5 (SigLIP), channels first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from common.synthetic.scene import CATEGORIES, PALETTE, PLURALS

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<ground>"]
GROUND_TOKEN = "<ground>"
VIDEO_TOKEN = "<video>"
SYSTEM = "You are a helpful assistant."
GROUND_PROMPT = "Identify the object according to the following description.\n{}"
MULTI_SUFFIX = "\nThere may be no corresponding object, or there may be one or more objects."
QA_SUFFIX = " Answer the question simply."

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ground_prompt(description: str, multi: bool) -> str:
    """Video-3D LLM's grounding instruction (ScanRefer; `multi`: Multi3DRefer's, which allows 0..n)."""
    return GROUND_PROMPT.format(description[:1].upper() + description[1:]) + (MULTI_SUFFIX if multi else "")


def qa_prompt(question: str) -> str:
    return question + QA_SUFFIX


def tokenizer_corpus() -> list[str]:
    """Deterministic training text for the tiny tokenizer's merges: the prompt templates over every
    synthetic colour and category, so names are single tokens as in a real vocabulary."""
    out = [SYSTEM, GROUND_PROMPT.format(""), MULTI_SUFFIX, QA_SUFFIX]
    for c in PALETTE:
        out += [f"all {c} objects", f"the {c} object", f"How many {c} objects are there in the scene?"]
        for k in CATEGORIES:
            name = f"the {c} {k}"
            out += [
                name,
                f"the {k} closest to {name}",
                f"the {k} farthest from {name}",
                f"the {k} to the left of {name} in view 3",
                f"all objects to the right of {name} in view 5",
                f"In view 2, which is closer to the camera, {name} or the blue cone?",
                f"In view 4, is {name} to the left of the red sphere?",
                f"How tall is {name}, in metres?",
                f"What is the diameter of {name}, in metres?",
                f"How far apart are the centres of {name} and the green box, in metres?",
            ]
    for k in CATEGORIES:
        out += [f"all {PLURALS[k]}", f"the {k}", f"How many {PLURALS[k]} are there in the scene?"]
        for w in ("largest", "smallest", "tallest", "shortest"):
            out.append(f"the {w} {k}")
    return out * 4 + ["yes", "no", "0.25", "1.50"]


def build_tokenizer(vocab_size: int = 640):
    """A byte-level BPE tokenizer with merges learned from `tokenizer_corpus()` and the special
    tokens of the chat format and of grounding; digits stay one token each (as in Qwen2's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
        chat_template=CHAT_TEMPLATE,
    )


class IDE3DProcessor:
    """(frames, prompt[, answer]) -> model inputs; see the module docstring for the layout."""

    def __init__(
        self,
        tokenizer,
        image_size: int = 384,
        patch_size: int = 14,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
    ):
        self.tokenizer = tokenizer
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        for token in (VIDEO_TOKEN, GROUND_TOKEN):
            if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
                raise ValueError(f"tokenizer: has no {token} token")
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.ground_token_id = tokenizer.convert_tokens_to_ids(GROUND_TOKEN)

    @property
    def grid(self) -> int:
        """Patches per side of a frame (SigLIP: 384 // 14 = 27)."""
        return self.image_size // self.patch_size

    @property
    def pooled(self) -> int:
        """Visual tokens per side of a frame after LLaVA-Video's 2x2 pooling (27 -> 14)."""
        return math.ceil(self.grid / 2)

    def num_video_tokens(self, frames: int) -> int:
        return frames * self.pooled**2 + 1

    def video(self, frames) -> torch.Tensor:
        """frames [F, 3, H, W] in [0, 1] (or a list of [3, H, W] of one size) -> pixel values
        [F, 3, S, S], S = image_size."""
        if isinstance(frames, (list, tuple)):
            sizes = [tuple(f.shape[-2:]) for f in frames]
            for i, size in enumerate(sizes):
                if size != sizes[0]:
                    raise ValueError(
                        f"frames: frame {i} is {size[0]}x{size[1]}, frame 0 is {sizes[0][0]}x"
                        f"{sizes[0][1]}; every frame of a video needs one size"
                    )
            frames = torch.stack(list(frames))
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames: expected [F, 3, H, W], got {list(frames.shape)}")
        S = self.image_size
        x = frames.float()
        if tuple(x.shape[-2:]) != (S, S):
            x = F.interpolate(
                x, size=(S, S), mode="bilinear", align_corners=False, antialias=True
            )  # [F, 3, S, S]
        mean = torch.tensor(self.image_mean)[:, None, None]
        std = torch.tensor(self.image_std)[:, None, None]
        return (x - mean) / std

    def __call__(self, videos: list, prompts: list[str], answers: list | None = None) -> dict:
        """videos: list of [F, 3, H, W] in [0, 1] (same F); prompts: user texts; answers: assistant
        texts (`GROUND_TOKEN` for grounding), None for generation. Returns `text(...)`'s fields and
        pixel_values_videos [B, F, 3, S, S]."""
        if len(videos) != len(prompts):
            raise ValueError(f"videos, prompts: lengths {len(videos)}, {len(prompts)} differ")
        counts = {len(v) for v in videos}
        if len(counts) != 1:
            raise ValueError(
                f"videos: every video of a batch needs the same number of frames, got {sorted(counts)}"
            )
        out = self.text(prompts, answers, counts.pop())
        out["pixel_values_videos"] = torch.stack([self.video(v) for v in videos])  # [B, F, 3, S, S]
        return out

    def text(self, prompts: list[str], answers: list | None, frames: int) -> dict:
        """Token ids for videos of `frames` frames. Left padding, so that generation continues every
        row at the same position.

        Returns input_ids, attention_mask [B, L]; labels [B, L] (answer and `<|im_end|>` only, when
        answers are given; none for grounding samples, which train the InfoNCE head only, as in
        Video-3D LLM); ground_index [B] (position of the `<ground>` token, -1 where there is none).
        """
        if answers is not None and len(answers) != len(prompts):
            raise ValueError(f"prompts, answers: lengths {len(prompts)}, {len(answers)} differ")
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{VIDEO_TOKEN}\n{prompt}"},
            ]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            text = text.replace(VIDEO_TOKEN, VIDEO_TOKEN * self.num_video_tokens(frames))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            labels = [-100] * len(ids)
            if answers is not None and answers[i] is not None:
                reply = self.tokenizer(answers[i] + "<|im_end|>", add_special_tokens=False)["input_ids"]
                ids, labels = ids + reply, labels + reply
            rows.append(ids)
            label_rows.append(labels)
        L, B = max(len(r) for r in rows), len(rows)
        input_ids = torch.full((B, L), self.tokenizer.pad_token_id, dtype=torch.long)  # [B, L]
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        labels = torch.full((B, L), -100, dtype=torch.long)
        for b, (ids, lab) in enumerate(zip(rows, label_rows)):
            input_ids[b, L - len(ids) :] = torch.tensor(ids)
            attention_mask[b, L - len(ids) :] = 1
            labels[b, L - len(ids) :] = torch.tensor(lab)
        is_ground = input_ids == self.ground_token_id  # [B, L]
        if bool((is_ground.sum(1) > 1).any()):
            raise ValueError("prompts: a sample holds more than one <ground> token")
        labels[is_ground.any(1)] = -100
        ground_index = torch.where(is_ground.any(1), is_ground.float().argmax(1).long(), torch.full((B,), -1))
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "ground_index": ground_index}
        if answers is not None:
            out["labels"] = labels
        return out

    def decode(self, ids) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / "ide3d_processor.json").write_text(
            json.dumps(
                {
                    "image_size": self.image_size,
                    "patch_size": self.patch_size,
                    "image_mean": self.image_mean,
                    "image_std": self.image_std,
                },
                indent=1,
            )
        )

    @classmethod
    def from_pretrained(cls, path) -> "IDE3DProcessor":
        """A folder we saved (`ide3d_processor.json`), or a LLaVA-Video checkpoint folder whose
        tokenizer has `<video>` (the `<ground>` token is added if missing, as Video-3D LLM does) and
        whose vision config gives the frame and patch size."""
        from transformers import AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: processor folder not found")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tokenizer.convert_tokens_to_ids(GROUND_TOKEN) in (None, tokenizer.unk_token_id):
            tokenizer.add_tokens([GROUND_TOKEN], special_tokens=True)
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHAT_TEMPLATE
        if (path / "ide3d_processor.json").is_file():
            return cls(tokenizer, **json.loads((path / "ide3d_processor.json").read_text()))
        vision = json.loads((path / "config.json").read_text()).get("vision_config", {})
        return cls(
            tokenizer, image_size=vision.get("image_size", 384), patch_size=vision.get("patch_size", 14)
        )
