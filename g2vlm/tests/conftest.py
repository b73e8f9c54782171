"""Shared fixtures: a tiny synthetic split and a tiny G2VLM, built once per session."""

import copy
from pathlib import Path

import pytest
import torch

from common.synthetic import generate_split
from g2vlm.config import load_config
from g2vlm.model import build_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def make_cfg(data_root, out_dir="unused", extra=()):
    return load_config(
        ROOT / "g2vlm/configs/tiny.yaml",
        [
            f"data.root={data_root}",
            f"train.out_dir={out_dir}",
            "model.max_tokens=64",
            "train.stage1.steps=2",
            "train.stage2.steps=4",
            "train.checkpoint_every=2",
            "train.stage2.queries_per_scene=4",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("g2vlm_synthetic")
    generate_split(root, "train", scenes=3, views=4, size=64, seed=0, progress=False)
    generate_split(root, "test", scenes=2, views=4, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def scenes(data_root):
    from g2vlm.data import load_scenes

    return load_scenes(make_cfg(data_root), "train")


@pytest.fixture(scope="session")
def _tiny(data_root):
    return build_model(make_cfg(data_root).model, seed=0)


@pytest.fixture
def tiny(_tiny):
    return copy.deepcopy(_tiny)
