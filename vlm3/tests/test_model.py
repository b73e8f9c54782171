"""The unchanged Qwen3-VL: label masking, save/load, learning, resuming after a kill, config errors."""

import json

import numpy as np
import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from common.metrics import depth_metrics
from common.tests import kill_resume
from vlm3 import prompts as P
from vlm3.config import load_config
from vlm3.data import QuestionBuilder, SceneCache, TaskDataset, TaskSettings
from vlm3.model import VLM3
from vlm3.train import build_mixture, train


@pytest.fixture(scope="module")
def examples(data_root):
    cache = SceneCache(data_root, "train", zoom=(1.0, 1.3), seed=0)
    builder = QuestionBuilder(
        cache, TaskSettings(focal_depth=60, focal_pose=45, depth_max_points=2, min_object_pixels=20)
    )
    return [
        TaskDataset(builder, t, 8, seed=0)[i]
        for t in ("depth", "correspondence", "pose", "object")
        for i in range(2)
    ]


def test_is_the_stock_qwen3vl(tiny_vlm):
    assert type(tiny_vlm.model) is Qwen3VLForConditionalGeneration


def test_labels_mask_everything_but_the_answer(tiny_vlm, examples):
    batch = tiny_vlm.encode(
        [e.images for e in examples], [e.prompt for e in examples], [e.answer for e in examples]
    )
    tok = tiny_vlm.tokenizer
    n_images = 0
    for b, ex in enumerate(examples):
        labels, ids = batch["labels"][b], batch["input_ids"][b]
        supervised = labels != -100
        assert tok.decode(labels[supervised]) == ex.answer + "<|im_end|>"
        assert torch.equal(labels[supervised], ids[supervised])
        first = int(supervised.nonzero()[0])
        assert (labels[:first] == -100).all()  # prompt, image and chat tokens
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")
        assert not supervised[batch["attention_mask"][b] == 0].any()  # padding
        assert not supervised[ids == tiny_vlm.image_token_id].any()
        n_images += len(ex.images)
    tokens_per_image = batch["image_grid_thw"].prod(-1) // 4
    assert int((batch["input_ids"] == tiny_vlm.image_token_id).sum()) == int(tokens_per_image.sum())
    assert len(batch["image_grid_thw"]) == n_images
    assert torch.equal(batch["mm_token_type_ids"], (batch["input_ids"] == tiny_vlm.image_token_id).long())


def test_save_load_round_trip(tiny_vlm, examples, tmp_path):
    tiny_vlm.save_pretrained(tmp_path)
    loaded = VLM3.from_pretrained(tmp_path)
    ims, prompts, answers = (
        [e.images for e in examples],
        [e.prompt for e in examples],
        [e.answer for e in examples],
    )
    a, b = tiny_vlm.encode(ims, prompts, answers), loaded.encode(ims, prompts, answers)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tiny_vlm.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        assert torch.equal(tiny_vlm.model(**a).logits, loaded.model(**b).logits)
    assert tiny_vlm.generate(ims[:2], prompts[:2], 6) == loaded.generate(ims[:2], prompts[:2], 6)


def test_unmerged_patches_one_token_per_patch_and_round_trip(cfg_overrides, examples, tmp_path):
    """tiny.yaml's merge_size 1: every 16 px patch is an LLM token; save/load keeps it."""
    cfg = load_config(None, cfg_overrides + ["model.merge_size=1"])
    vlm = VLM3.build(cfg.model)
    ims, prompts = [e.images for e in examples[:4]], [e.prompt for e in examples[:4]]
    batch = vlm.encode(ims, prompts)
    grid = batch["image_grid_thw"]  # [n_images, 3] (t, h, w) in 16 px patches
    assert int((batch["input_ids"] == vlm.image_token_id).sum()) == int(grid.prod(-1).sum())
    H, W = ims[0][0].shape[-2:]
    h, w = smart_resize(H, W, factor=16, min_pixels=cfg.model.min_pixels, max_pixels=cfg.model.max_pixels)
    assert (int(grid[0, 1]) * 16, int(grid[0, 2]) * 16) == (h, w)  # one token per 16 px patch
    vlm.save_pretrained(tmp_path)
    loaded = VLM3.from_pretrained(tmp_path)
    assert loaded.merge == 1 and loaded.model.config.vision_config.spatial_merge_size == 1
    assert vlm.generate(ims[:2], prompts[:2], 4) == loaded.generate(ims[:2], prompts[:2], 4)


def test_pairs_as_video_put_both_views_of_a_cell_in_one_token(cfg_overrides, examples, tmp_path):
    """model.pair_as_video: a two-image question is one 2-frame video (the first view in temporal
    slot 0, the second in slot 1), one-image questions stay images; labels and save/load unchanged."""
    cfg = load_config(None, cfg_overrides + ["model.pair_as_video=true"])
    vlm = VLM3.build(cfg.model)
    pair = next(e for e in examples if e.task == "correspondence")
    single = next(e for e in examples if e.task == "depth")
    batch = vlm.encode(
        [pair.images, single.images], [pair.prompt, single.prompt], [pair.answer, single.answer]
    )
    assert len(batch["video_grid_thw"]) == 1 and len(batch["image_grid_thw"]) == 1
    n_video = int(batch["video_grid_thw"].prod()) // 4  # merge 2 x 2
    assert int((batch["input_ids"][0] == vlm.video_token_id).sum()) == n_video
    assert int((batch["input_ids"][0] == vlm.image_token_id).sum()) == 0
    assert (
        int((batch["input_ids"][1] == vlm.image_token_id).sum()) == int(batch["image_grid_thw"].prod()) // 4
    )
    assert torch.equal(batch["mm_token_type_ids"][0] == 2, batch["input_ids"][0] == vlm.video_token_id)
    alone = [vlm.encode([[im]], ["x"])["pixel_values"] for im in pair.images]  # each view as an image
    clip = batch["pixel_values_videos"].reshape(n_video * 4, 3, 2, -1)  # [N, C, T, P*P]
    assert torch.equal(clip[:, :, 0], alone[0].reshape(n_video * 4, 3, 2, -1)[:, :, 0])
    assert torch.equal(clip[:, :, 1], alone[1].reshape(n_video * 4, 3, 2, -1)[:, :, 1])
    assert not torch.equal(clip[:, :, 0], clip[:, :, 1])
    tok = vlm.tokenizer
    assert tok.decode(batch["labels"][0][batch["labels"][0] != -100]) == pair.answer + "<|im_end|>"
    assert torch.isfinite(vlm.loss(batch))
    vlm.save_pretrained(tmp_path)
    loaded = VLM3.from_pretrained(tmp_path)
    assert loaded.pair_as_video
    ims, prompts = [pair.images, single.images], [pair.prompt, single.prompt]
    assert vlm.generate(ims, prompts, 4) == loaded.generate(ims, prompts, 4)
    with pytest.raises(ValueError, match="pair_as_video: the two views must have one size"):
        vlm.encode([[pair.images[0], pair.images[0][:, :-8]]], ["x"])


def test_from_pretrained_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="config.json: not found"):
        VLM3.from_pretrained(tmp_path)


def test_overfits_a_handful_of_depth_questions(tiny_vlm, data_root):
    """Learning test: after training on 4 depth questions, the model answers them; untrained it does not."""
    cache = SceneCache(data_root, "train", zoom=(1.0, 1.0), seed=0)
    ds = TaskDataset(QuestionBuilder(cache, TaskSettings(focal_depth=60)), "depth", 4, seed=0)
    exs = [ds[i] for i in range(4)]
    ims, prompts = [e.images for e in exs], [e.prompt for e in exs]
    gt = np.array([e.target["depth"][0] for e in exs])

    def delta1(vlm):
        pred = [P.parse_depth(t) or 0.0 for t in vlm.generate(ims, prompts, 12)]
        return depth_metrics(np.array(pred)[None], gt[None])["delta1"]

    before = delta1(tiny_vlm)
    batch = tiny_vlm.encode(ims, prompts, [e.answer for e in exs])
    opt = torch.optim.AdamW(tiny_vlm.model.parameters(), lr=3e-3)
    tiny_vlm.model.train()
    for _ in range(80):
        loss = tiny_vlm.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.05
    assert delta1(tiny_vlm) == 1.0 and before < 1.0


def test_resume_after_a_kill_reaches_the_same_weights_and_log(cfg_overrides, tmp_path):
    """`vlm3.train` killed with SIGKILL after a checkpoint (and steps logged past it), then run with
    --resume: the final weights and AdamW state equal the uninterrupted run's bit for bit, and
    metrics.jsonl has the same lines (all fields but the wall-clock "seconds"), each step once."""
    args = ["-m", "vlm3.train", *cfg_overrides, "train.steps=8", "train.checkpoint_every=3"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    kill_resume.run([*args, f"train.out_dir={full}"], tmp_path / "full.log")
    step = kill_resume.kill_after_checkpoint([*args, f"train.out_dir={cut}"],
                                             cut / "checkpoint" / "trainer_state.json", cut / "metrics.jsonl",
                                             tmp_path / "cut.log")
    assert step in (3, 6)
    assert max(json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()) > step
    kill_resume.run([*args, f"train.out_dir={cut}", "--resume"], tmp_path / "resume.log")
    for name in ("model.safetensors", "optimizer.safetensors"):
        kill_resume.assert_same_weights(full / "checkpoint" / name, cut / "checkpoint" / name)
    assert json.loads((cut / "checkpoint" / "trainer_state.json").read_text())["step"] == 8
    rows = kill_resume.assert_same_log(full / "metrics.jsonl", cut / "metrics.jsonl", time_keys=("seconds",))
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_resume_without_a_checkpoint_is_an_error(cfg_overrides, tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        train(load_config(None, cfg_overrides + [f"train.out_dir={tmp_path / 'none'}"]), resume=True,
              progress=False)


def test_worker_processes_build_the_same_batches(cfg_overrides, tmp_path):
    """train.workers > 0 builds the questions in other processes; the weights come out the same."""
    runs = []
    for workers in (0, 2):
        cfg = load_config(
            None, cfg_overrides + [f"train.out_dir={tmp_path / str(workers)}", f"train.workers={workers}"]
        )
        runs.append(train(cfg, progress=False))
    for (name, pa), (_, pb) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        assert torch.equal(pa, pb), name
    with pytest.raises(ValueError, match="train.workers: expected an int >= 0, got -1"):  # at load time
        load_config(None, cfg_overrides + [f"train.out_dir={tmp_path / 'bad'}", "train.workers=-1"])


def test_mixture_follows_the_ratios(tiny_cfg):
    cfg = load_config(None, [])
    cfg.data, cfg.train = tiny_cfg.data, tiny_cfg.train
    cfg.data.mixture = {"depth": 3.0, "correspondence": 1.0, "pose": 0.0, "object": 0.0}
    mix = build_mixture(cfg)
    counts = mix.counts()
    assert counts["pose"] == counts["object"] == 0 and counts["depth"] > counts["correspondence"]
    cfg.data.mixture = {"depth": 1.0, "sky": 1.0}
    with pytest.raises(ValueError, match="unknown task 'sky'"):
        build_mixture(cfg)
    cfg.data.mixture = {"depth": 1.0}
    for bad in ({"depth": 0}, {"sky": 2}):
        cfg.data.turns = bad
        with pytest.raises(ValueError, match="data.turns"):
            build_mixture(cfg)
    cfg.data.turns = {}


def test_config_typos_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'train.stpes'"):
        load_config(None, ["train.stpes=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  focal_dpeth: 1000\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key 'data.focal_dpeth'"):
        load_config(bad)
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["train.steps"])


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).parents[1] / "configs"
    tiny = load_config(root / "tiny.yaml")
    paper = load_config(root / "paper.yaml")
    assert tiny.model.pretrained_path is None and paper.model.pretrained_path
    assert (paper.data.focal_depth, paper.data.focal_pose) == (1000.0, 750.0)
    assert not hasattr(tiny.data, "corr_same_view")  # copy lessons: vlm3.diagnostics.rendered --copy-lessons


def test_conversations_label_every_answer(tiny_vlm, examples):
    """A multi-turn sample is the chat template's rendering of the whole conversation; every answer
    (+ <|im_end|>) is labelled, nothing else; a sample without follow-ups encodes as before."""
    tok = tiny_vlm.tokenizer
    ex = examples[2]  # correspondence: two images
    turns = [("What is 1?", "one"), ("And 2?", "two")]
    single = tiny_vlm.encode([ex.images], [ex.prompt], [ex.answer])
    empty = tiny_vlm.encode([ex.images], [ex.prompt], [ex.answer], [[]])
    assert all(torch.equal(single[k], empty[k]) for k in single)
    batch = tiny_vlm.encode([ex.images] * 2, [ex.prompt] * 2, [ex.answer] * 2, [turns, []])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    supervised = labels != -100
    assert tok.decode(labels[supervised]) == "".join(a + "<|im_end|>" for a in [ex.answer, "one", "two"])
    messages = [
        {"role": "user", "content": [{"type": "image"}] * 2 + [{"type": "text", "text": ex.prompt}]},
        {"role": "assistant", "content": ex.answer},
    ]
    for q, a in turns:
        messages += [
            {"role": "user", "content": [{"type": "text", "text": q}]},
            {"role": "assistant", "content": a},
        ]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    text = tok.decode(ids[batch["attention_mask"][0] == 1]).replace("<|image_pad|>", "")
    assert text + "\n" == rendered.replace("<|image_pad|>", "")
    assert batch["image_grid_thw"].shape[0] == 4  # the images of both samples, once each
    loss = tiny_vlm.loss(batch)
    assert torch.isfinite(loss)


def test_rope_base_and_position_table_init_are_config(cfg_overrides, tmp_path):
    cfg = load_config(None, cfg_overrides + ["model.rope_theta=100", "model.vision_pos_init_std=0.5"])
    vlm = VLM3.build(cfg.model)
    assert vlm.model.config.text_config.rope_parameters["rope_theta"] == 100.0
    assert float(vlm.model.model.visual.pos_embed.weight.detach().std()) == pytest.approx(0.5, rel=0.1)
    default = VLM3.build(load_config(None, cfg_overrides).model)
    assert float(default.model.model.visual.pos_embed.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    vlm.save_pretrained(tmp_path)  # a loaded model keeps its rope base and weights
    loaded = VLM3.from_pretrained(tmp_path)
    assert loaded.model.config.text_config.rope_parameters["rope_theta"] == 100.0
    assert torch.equal(loaded.model.model.visual.pos_embed.weight, vlm.model.model.visual.pos_embed.weight)


def test_two_processes_follow_one_with_twice_the_batch(cfg_overrides, tmp_path):
    """torchrun with 2 CPU processes (gloo) at batch 2 each: the same loss curve and weights as one
    process at batch 4, and one log / one checkpoint, written by the main process only."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    common = [*cfg_overrides, "train.steps=3", "train.checkpoint_every=3"]
    runs = {
        "one": [sys.executable, "-m", "vlm3.train", *common, "train.batch_size=4"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                "-m", "vlm3.train", *common, "train.batch_size=2"],
    }
    for name, cmd in runs.items():
        r = subprocess.run([*cmd, f"train.out_dir={tmp_path / name}"], env=env, capture_output=True, text=True,
                           cwd=root, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    logs = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in runs}
    assert len(logs["one"]) == len(logs["two"]) == 3
    for a, b in zip(logs["one"], logs["two"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["tasks"] == b["tasks"], (a, b)
    wa, wb = (load_file(str(tmp_path / n / "checkpoint" / "model.safetensors")) for n in runs)
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff < 1e-4, diff  # float noise of the all-reduce (Adam rescales near-zero gradients)
