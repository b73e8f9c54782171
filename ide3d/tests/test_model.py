"""The inference model: LLaVA-OneVision's classes and layout, save/load, paper scale on `meta`."""

import json

import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from ide3d.config import load_config
from ide3d.model import load_pretrained, meta_model, save_pretrained
from ide3d.processing import GROUND_TOKEN, ground_prompt, qa_prompt


def test_video_layout_matches_transformers(tiny):
    model, processor = tiny
    frames = torch.rand(3, 3, 50, 70)  # any size: resized to the model's input
    batch = processor(
        [frames, frames], [ground_prompt("the red box", False), qa_prompt("How many?")], [GROUND_TOKEN, "2"]
    )
    g = processor.grid
    assert batch["pixel_values_videos"].shape == (2, 3, 3, processor.image_size, processor.image_size)
    n_video = int((batch["input_ids"][0] == processor.video_token_id).sum())
    assert n_video == processor.num_video_tokens(3) == 3 * ((g + 1) // 2) ** 2 + 1
    with torch.no_grad():
        ours = model.encode_video(batch["pixel_values_videos"])
        stock = model.model.get_video_features(batch["pixel_values_videos"]).pooler_output
    assert torch.equal(ours.tokens, stock)  # the video path is transformers' own
    assert ours.patch_features.shape == (2, 3, g, g, model.config.text_config.hidden_size)
    # Grounding samples train the head only; QA samples are supervised on the answer and <|im_end|>.
    assert int(batch["ground_index"][0]) >= 0 and int(batch["ground_index"][1]) == -1
    assert (batch["labels"][0] == -100).all()
    answer = processor.tokenizer("2<|im_end|>", add_special_tokens=False)["input_ids"]
    assert batch["labels"][1][batch["labels"][1] != -100].tolist() == answer


def test_forward_losses_are_per_sample(tiny):
    model, processor = tiny
    frames = [torch.rand(2, 3, 64, 64) for _ in range(2)]
    batch = processor(frames, [qa_prompt("How many red objects?"), qa_prompt("Is it left?")], ["3", "no"])
    batch["position_ids"] = (batch["attention_mask"].cumsum(1) - 1).clamp_min(0)
    batch.pop("ground_index")
    out = model(**batch)
    assert out.text_loss.shape == (2,) and torch.allclose(out.loss, out.text_loss.mean())
    # A sample's loss does not depend on its batch mates (left padding with mask-aware positions).
    alone = processor(frames[:1], [qa_prompt("How many red objects?")], ["3"])
    alone["position_ids"] = (alone["attention_mask"].cumsum(1) - 1).clamp_min(0)
    alone.pop("ground_index")
    assert torch.allclose(model(**alone).text_loss[0], out.text_loss[0], atol=1e-5)


def test_save_load_round_trip_and_stock_class(tiny, tmp_path):
    model, processor = tiny
    save_pretrained(model, processor, tmp_path / "m")
    loaded, proc2 = load_pretrained(tmp_path / "m")
    for (n, a), (m, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == m and torch.equal(a, b)
    assert loaded.settings == model.settings and proc2.image_size == processor.image_size
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "llava_onevision"
    # The checkpoint loads in the stock class: the ground head is the only extra.
    stock, info = LlavaOnevisionForConditionalGeneration.from_pretrained(
        tmp_path / "m", output_loading_info=True, use_safetensors=True
    )
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert all(k.startswith("ground_head.") for k in info["unexpected_keys"]) and info["unexpected_keys"]
    ids = processor([torch.rand(2, 3, 64, 64)], [qa_prompt("How many?")])
    ids.pop("ground_index")
    with torch.no_grad():
        assert torch.allclose(stock(**ids).logits, loaded(**ids).logits, atol=1e-5)


def test_checkpoint_of_another_architecture_is_named(tiny, tmp_path):
    model, processor = tiny
    save_pretrained(model, processor, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["text_config"]["hidden_size"] = 2 * config["text_config"]["hidden_size"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="another architecture|mismatched|size mismatch"):
        load_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path / "nothing")


def test_paper_scale_on_meta_device():
    cfg = load_config("ide3d/configs/paper.yaml")
    model = meta_model(cfg.model)
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.ground_head.parameters())
    print(f"LLaVA-Video-7B-Qwen2 + ground head: {total / 1e9:.3f} B parameters ({head / 1e6:.1f} M head)")
    assert 8.0e9 < total - head < 8.1e9  # LLaVA-Video-7B-Qwen2: 8.03 B
    assert next(model.parameters()).device.type == "meta"
