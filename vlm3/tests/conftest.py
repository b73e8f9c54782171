"""Shared fixtures: a tiny synthetic split (generated once per session) and a tiny VLM3."""

import copy

import pytest
import torch

from common.synthetic import generate_split
from vlm3.config import load_config
from vlm3.model import VLM3

torch.set_num_threads(1)  # the machine is shared: spinning OpenMP threads stall under load

TINY_MODEL = [
    "model.text_hidden=64",
    "model.text_layers=2",
    "model.text_heads=2",
    "model.text_kv_heads=1",
    "model.text_head_dim=32",
    "model.text_intermediate=128",
    "model.vision_depth=1",
    "model.vision_hidden=32",
    "model.vision_heads=1",
    "model.vision_intermediate=64",
    "model.min_pixels=1024",
    "model.max_pixels=4096",
    "model.tokenizer_vocab=600",
]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm3_synthetic")
    for split in ("train", "test"):
        generate_split(root, split, scenes=2, views=4, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def cfg_overrides(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("vlm3_run")
    return TINY_MODEL + [
        f"data.root={data_root}",
        "data.focal_depth=60",
        "data.focal_pose=45",
        "data.zoom=[1.0, 1.3]",
        "data.min_object_pixels=20",
        f"train.out_dir={out}",
        "train.batch_size=4",
        "train.steps=4",
        "train.warmup=1",
        "train.checkpoint_every=2",
        "data.samples={depth: 64, correspondence: 64, pose: 64, object: 64}",
        "eval.depth=8",
        "eval.correspondence=4",
        "eval.pose_pairs=2",
        "eval.object=6",
        "eval.max_new_tokens=12",
    ]


@pytest.fixture(scope="session")
def tiny_cfg(cfg_overrides):
    return load_config(None, cfg_overrides)


@pytest.fixture(scope="session")
def _tiny_vlm(tiny_cfg):
    return VLM3.tiny(tiny_cfg.model, seed=0)


@pytest.fixture
def tiny_vlm(_tiny_vlm):
    """A fresh copy of the session's random-weight model (building the tokenizer takes seconds)."""
    return copy.deepcopy(_tiny_vlm)
