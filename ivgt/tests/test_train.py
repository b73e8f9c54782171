"""Training: a tiny model overfits one scene; --resume after a kill reaches the uninterrupted weights
and log."""

import json

import pytest

from common.synthetic import generate_split
from common.tests import kill_resume
from ivgt.config import load_config
from ivgt.train import train

MODEL = ["model.image_size=[32, 32]", "model.encoder_dim=32", "model.encoder_layers=1", "model.encoder_heads=2",
         "model.dim=32", "model.depth=1", "model.heads=2", "model.feature_dim=8", "model.decoder_hidden=32",
         "model.n_coarse=12", "model.n_fine=12", "model.up_sample_steps=1"]


@pytest.fixture(scope="module")
def one_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    generate_split(root, "train", scenes=1, views=6, size=32, seed=3)
    return root


def _cfg(root, out, steps, **extra):
    src = {"one": {"root": str(root), "split": "train", "weight": 1.0, "domain": ""}}
    cfg = load_config(None, MODEL + [f"train.steps={steps}", f"train.output_dir={out}", "train.rays_per_view=32",
                                     "train.input_views=3", "train.target_views=1", "train.warmup=2",
                                     f"train.stage2_start={steps // 2}", "train.checkpoint_every=2"]
                      + [f"train.{k}={v}" for k, v in extra.items()])
    cfg.train.sources = src
    return cfg


def test_tiny_model_overfits_one_scene(one_scene, tmp_path):
    train(_cfg(one_scene, tmp_path, 60, lr=0.003, gt_camera_prob=1.0), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["rgb"] + r["depth"] for r in rows[:5]) / 5
    last = sum(r["rgb"] + r["depth"] for r in rows[-5:]) / 5
    assert last < 0.6 * first, (first, last)


def test_resume_after_a_kill_reaches_the_uninterrupted_weights_and_log(one_scene, tmp_path):
    """`ivgt.train` killed with SIGKILL after a checkpoint (and steps logged past it), then run with
    --resume: the final weights equal the uninterrupted run's bit for bit, and metrics.jsonl has the
    same lines (all fields but the wall-clock "seconds"), each step once."""
    source = f'train.sources={{one: {{root: "{one_scene}", split: train, weight: 1.0, domain: ""}}}}'
    args = ["-m", "ivgt.train", *MODEL, "train.steps=20", "train.rays_per_view=32", "train.input_views=3",
            "train.target_views=1", "train.warmup=2", "train.stage2_start=10", "train.checkpoint_every=5",
            source]
    a, b = tmp_path / "a", tmp_path / "b"
    kill_resume.run([*args, f"train.output_dir={a}"], tmp_path / "a.log")
    step = kill_resume.kill_after_checkpoint([*args, f"train.output_dir={b}"],
                                             b / "checkpoint" / "trainer_state.json", b / "metrics.jsonl",
                                             tmp_path / "b.log")
    assert step in (5, 10, 15) and not (b / "model").exists()
    assert max(json.loads(x)["step"] for x in (b / "metrics.jsonl").read_text().splitlines()) > step
    kill_resume.run([*args, f"train.output_dir={b}", "--resume"], tmp_path / "resume.log")
    weights = "model/diffusion_pytorch_model.safetensors"
    kill_resume.assert_same_weights(a / weights, b / weights)
    rows = kill_resume.assert_same_log(a / "metrics.jsonl", b / "metrics.jsonl", time_keys=("seconds",))
    assert [r["step"] for r in rows] == list(range(1, 21))
