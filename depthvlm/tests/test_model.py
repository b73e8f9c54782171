import math

import numpy as np
import pytest
import torch

from depthvlm.model import DepthVLMForConditionalGeneration, load_pretrained, save_pretrained, silog_loss


def test_processor_pixels_match_transformers_image_processor(tiny):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _, proc = tiny
    img = torch.rand(3, 48, 80)
    ours = proc([img], ["q"])
    ref = Qwen2VLImageProcessorPil(do_resize=False, do_rescale=False, patch_size=8, merge_size=2,
                                   image_mean=[0.5] * 3, image_std=[0.5] * 3)(
        images=[img.numpy()], return_tensors="pt", input_data_format="channels_first")
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-6)


@pytest.mark.parametrize("size", [(48, 80), (50, 70), (33, 17)])
def test_head_reads_image_tokens_on_the_grid_of_the_actual_size(tiny, size):
    model, proc = tiny
    img = torch.rand(3, *size)
    batch = proc([torch.rand(3, 32, 32), img], ["a", "a longer question"])  # two rows, left padding
    grid = batch["image_grid_thw"][1, 1:] // 2  # merged grid of the second image
    assert tuple(grid.tolist()) == tuple(s // 16 for s in proc.model_size(*size))
    # Fake hidden states that carry their own (row, position) so we can see what the head reads.
    B, L = batch["input_ids"].shape
    hidden = torch.stack(torch.meshgrid(torch.arange(B), torch.arange(L), indexing="ij"), -1).float()  # [B, L, 2]
    counts = (batch["image_grid_thw"][:, 1:].prod(-1) // 4).tolist()
    deepstack = [torch.zeros(sum(counts), 2).split(counts)] * 3
    maps = model.image_token_maps(batch["input_ids"], hidden, deepstack, batch["image_grid_thw"])
    llm = maps[1][3]  # [h, w, 2]
    assert llm.shape[:2] == tuple(grid.tolist())
    pos = (batch["input_ids"][1] == model.config.image_token_id).nonzero()[:, 0].float()
    assert torch.all(llm[..., 0] == 1)  # second row
    assert torch.equal(llm[..., 1].flatten(), pos)  # row-major over the grid, in sequence order
    with torch.no_grad():
        out = model(**batch)
    assert tuple(out.depth[1].shape) == size and bool((out.depth[1] > 0).all())


def test_one_pass_gives_the_text_of_generate_and_the_depth_of_forward(tiny):
    model, proc = tiny
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # a non-degenerate greedy answer
    batch = proc([torch.rand(3, 48, 64), torch.rand(3, 32, 32)], ["how far is the red box?", "hi"])
    ids, depth = model.generate_with_depth(batch, max_new_tokens=5)
    plain = {k: v for k, v in batch.items() if k != "image_sizes"}
    ref = model.generate(**plain, max_new_tokens=5, do_sample=False, predict_depth=False)
    assert torch.equal(ids, ref[:, batch["input_ids"].shape[1]:])
    with torch.no_grad():
        out = model(**batch)
    for a, b in zip(depth, out.depth):
        assert torch.allclose(a, b, atol=1e-5)


def test_silog_against_hand_value():
    pred = torch.tensor([[1.0, 2.0], [5.0, 3.0]])
    gt = torch.tensor([[1.0, 1.0], [0.0, 3.0]])  # one invalid pixel (gt = 0) is ignored
    d = [0.0, math.log(2.0), 0.0]
    mean_sq, mean = sum(x * x for x in d) / 3, sum(d) / 3
    expected = math.sqrt(mean_sq - 0.5 * mean ** 2 + 1e-8)
    assert silog_loss(pred, gt, 0.5).item() == pytest.approx(expected, rel=1e-6)
    from common.metrics import silog

    assert silog_loss(pred, gt, 0.5).item() == pytest.approx(silog(pred, gt, gt > 0, lam=0.5, scale=1.0), rel=1e-5)
    assert silog_loss(2 * gt + (gt == 0), gt, 1.0).item() == pytest.approx(0.0, abs=1e-3)  # lam=1: scale-invariant


def test_text_loss_on_answer_tokens_only(tiny):
    model, proc = tiny
    batch = proc([torch.rand(3, 32, 32)], ["How far is the red box?"], ["2.5"])
    labelled = batch["input_ids"][0][batch["labels"][0] != -100]
    assert proc.tokenizer.decode(labelled) == "2.5<|im_end|>"
    out = model(**batch)
    logits = out.logits[0, :-1]
    target = batch["labels"][0, 1:]
    manual = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    assert out.text_loss.item() == pytest.approx(manual.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.text_loss.item())  # no depth labels: text only


def test_depth_label_of_another_size_is_an_error(tiny):
    model, proc = tiny
    batch = proc([torch.rand(3, 32, 48)], ["q"])
    with pytest.raises(ValueError, match=r"depth_labels\[0\].*\[32, 48\]"):
        model(**batch, depth_labels=[torch.ones(32, 32)])


def test_save_load_round_trip_with_tokenizer(tiny, tmp_path):
    model, proc = tiny
    save_pretrained(model, proc, tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    model2, proc2 = load_pretrained(tmp_path)
    batch = proc([torch.rand(3, 32, 48)], ["how far?"])
    assert torch.equal(batch["input_ids"], proc2([torch.rand(3, 32, 48)], ["how far?"])["input_ids"])
    with torch.no_grad():
        a, b = model(**batch), model2(**batch)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.depth[0], b.depth[0])


def test_loads_a_plain_qwen3vl_checkpoint(tiny, tmp_path):
    """paper.yaml's path: a stock Qwen3-VL folder loads unchanged, the head starts fresh."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    model, proc = tiny
    raw = model.config.to_dict()
    for k in ("model_type", "depth_head", "depth_loss_weight", "silog_lambda", "transformers_version", "architectures"):
        raw.pop(k, None)
    qwen = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**raw))
    qwen.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    loaded, _ = load_pretrained(tmp_path, head={"features": 16, "out_channels": [8, 8, 16, 16]})
    assert isinstance(loaded, DepthVLMForConditionalGeneration)
    ref = qwen.state_dict()
    for k, v in loaded.state_dict().items():
        if not k.startswith("depth_head."):
            assert torch.equal(v, ref[k]), k


def test_bad_checkpoint_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


def test_demo_writes_answer_depth_png_and_ply(tiny, tmp_path, capsys):
    import trimesh
    from PIL import Image

    from depthvlm import demo

    model, proc = tiny
    save_pretrained(model, proc, tmp_path / "m")
    Image.fromarray((np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    demo.main(["--model", str(tmp_path / "m"), "--image", str(tmp_path / "x.png"), "--K", "50,50,28,20",
               "--focal", "40", "--ask", "how far?", "--out", str(tmp_path / "o")])
    from common.pictures import read_depth

    depth, meta = read_depth(tmp_path / "o" / "x_depth.png")  # 16-bit, scale in x_depth.json
    assert depth.shape == (40, 56) and meta["unit"] == "m"  # the input image's size, not the canonical one
    assert (depth > 0).float().mean() > 0.9  # the canonical camera sees the whole image (but a border)
    preview = Image.open(tmp_path / "o" / "x_depth_preview.png")
    assert preview.height == 40 and preview.width > 56  # the colour bar on the right
    assert 0 < len(trimesh.load(tmp_path / "o" / "x_points.ply").vertices) <= 32 * 44  # canonical 32 x 44 pixels
    assert (tmp_path / "o" / "x_answer.txt").is_file() and (tmp_path / "o" / "x_contact_sheet.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # one line, exit status 2, before the model is loaded
        demo.main(["--model", str(tmp_path / "m"), "--image", str(tmp_path / "x.png"), "--K", "1,2"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "depthvlm.demo: error: --K '1,2': expected four numbers fx,fy,cx,cy in pixels", err


def test_tokenizer_learned_from_the_templates_keeps_names_whole_and_digits_apart():
    from depthvlm.data import CLOSER, tokenizer_corpus
    from depthvlm.processing import build_tokenizer

    tok = build_tokenizer(tokenizer_corpus())
    assert tok.get_vocab() == build_tokenizer(tokenizer_corpus()).get_vocab()  # deterministic
    question = CLOSER.format(a="the blue box", b="the pink cylinder")
    ids = tok(question)["input_ids"]
    assert tok.decode(ids) == question
    assert tok.convert_ids_to_tokens(tok("the pink cylinder")["input_ids"]) == ["the", "Ġpink", "Ġcylinder"]
    assert tok.convert_ids_to_tokens(tok("12.5")["input_ids"]) == ["1", "2", ".", "5"]
    assert len(tok("hello, 3 unknown words")["input_ids"]) > 0  # any text still encodes, byte by byte


def test_saved_tokenizer_loads_without_a_model_type_warning(tiny, tmp_path, caplog):
    import logging

    model, proc = tiny
    save_pretrained(model, proc, tmp_path)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        load_pretrained(tmp_path)
    assert not [r for r in caplog.records if "model of type" in r.getMessage()]


def test_rope_base_and_position_table_knobs_reach_the_random_model():
    """model.rope_theta sets the text M-RoPE base; model.vision_pos_init_std redraws the vision
    tower's position table (None keeps transformers' N(0, 0.02))."""
    from dataclasses import replace

    from depthvlm.model import build_model
    from depthvlm.tests.conftest import small_model_config

    default, _ = build_model(small_model_config(), seed=0)
    changed, _ = build_model(replace(small_model_config(), rope_theta=100.0, vision_pos_init_std=0.5), seed=0)
    theta = lambda m: m.config.text_config.rope_parameters["rope_theta"]  # noqa: E731
    assert theta(default) == 10000.0 and theta(changed) == 100.0
    std = lambda m: float(m.model.visual.pos_embed.weight.std())  # noqa: E731
    assert std(default) < 0.05 and abs(std(changed) - 0.5) < 0.05
