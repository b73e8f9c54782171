"""The tiny configs' tokenizer: a byte-level BPE trained on the prompt templates, with Qwen2's chat
tokens and template (`paper.yaml` loads the pre-trained language model's own)."""

from __future__ import annotations

SYSTEM = "You are a helpful assistant."
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_corpus() -> list[str]:
    """Prompt templates over every synthetic colour and category (the tiny tokenizer's merges)."""
    from common.synthetic.scene import CATEGORIES, PALETTE, PLURALS

    out = [SYSTEM, "Find: ", " Answer the question simply."]
    for c in PALETTE:
        out += [f"How many {c} objects are there in the scene?", f"the {c} object"]
        for k in CATEGORIES:
            name = f"the {c} {k}"
            out += [
                name,
                f"the {k} closest to {name}",
                f"the {k} to the left of {name} in view 1",
                f"In view 2, which is closer to the camera, {name} or the blue cone?",
                f"In view 0, is {name} to the left of the red sphere?",
                f"How tall is {name}, in metres?",
                f"How far apart are the centres of {name} and the green box, in metres?",
            ]
    for k in CATEGORIES:
        out += [f"How many {PLURALS[k]} are there in the scene?", f"the largest {k}", f"the smallest {k}"]
    return out * 4 + ["yes", "no", "0.25", "1.50"]


def build_tokenizer(vocab_size: int = 640):
    """A byte-level BPE tokenizer (merges from `tokenizer_corpus`, digits one token each) with Qwen2's
    chat tokens; the same recipe as the other packages' tiny tokenizers (copied on purpose)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        tokenizer_corpus(),
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
