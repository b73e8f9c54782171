"""Shared fixtures: a tiny synthetic split and a trained-for-a-few-steps teacher, once per session."""

import copy

import pytest
import torch

from common.synthetic import generate_split
from ide3d.config import load_config
from ide3d.model import build_model

torch.set_num_threads(1)  # the machine is shared: spinning OpenMP threads stall under load
TINY = "ide3d/configs/tiny.yaml"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ide3d_synthetic")
    generate_split(root, "train", scenes=3, views=4, size=64, seed=0, progress=False)
    generate_split(root, "test", scenes=2, views=4, size=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def teacher_path(data_root, tmp_path_factory):
    from ide3d.data import load_scenes
    from ide3d.teacher import train_teacher

    path = tmp_path_factory.mktemp("ide3d_teacher") / "teacher"
    cfg = make_cfg(data_root, path.parent / "unused", path, ["teacher.steps=3"])
    train_teacher(cfg, load_scenes(cfg.data, "train"), path, progress=False)
    return path


def tiny_overrides(data_root, out_dir, teacher_path, extra=()) -> list[str]:
    """tiny.yaml's overrides for the tests (also as `python -m ide3d.train` arguments): 4 frames, a
    few steps, checkpoints every 2."""
    return [
        f"data.root={data_root}",
        "data.frames=4",
        f"train.out_dir={out_dir}",
        f"supervision.teacher_path={teacher_path}",
        "train.steps=4",
        "train.checkpoint_every=2",
        "train.scenes_per_batch=2",
        "train.queries_per_scene=3",
        "teacher.steps=3",
        "train.verifier_steps=2",
        "eval.batch_size=8",
        "eval.max_new_tokens=4",
        *extra,
    ]


def make_cfg(data_root, out_dir, teacher_path, extra=()):
    """tiny.yaml on the test split with `tiny_overrides`."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return load_config(root / TINY, tiny_overrides(data_root, out_dir, teacher_path, extra))


@pytest.fixture(scope="session")
def _tiny(data_root):
    return build_model(make_cfg(data_root, "unused", "unused").model, seed=0)


@pytest.fixture
def tiny(_tiny):
    """A fresh copy of the session's random-weight (model, processor)."""
    return copy.deepcopy(_tiny)
