"""Training: a tiny model overfits one scene; --resume reaches the uninterrupted weights."""

import json

import pytest
import torch
from safetensors.torch import load_file

from common.synthetic import generate_split
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


def test_resume_reaches_the_uninterrupted_weights(one_scene, tmp_path):
    train(_cfg(one_scene, tmp_path / "a", 4), progress=False)
    train(_cfg(one_scene, tmp_path / "b", 4), progress=False, stop_at=2)  # interrupted after a checkpoint
    train(_cfg(one_scene, tmp_path / "b", 4), resume=True, progress=False)
    a = load_file(str(tmp_path / "a" / "model" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
