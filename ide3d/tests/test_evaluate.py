"""Scores on hand-made predictions, the trivial baselines, the depth probe, the teacher plug-in,
the demo and the reproduce wiring."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ide3d.data import Query, Scene, load_scenes
from ide3d.evaluate import Predictions, largest_box, majority_answer, random_candidate, score
from ide3d.probe import depth_probe, fit_ridge
from ide3d.tests.conftest import make_cfg

ROOT = Path(__file__).resolve().parents[2]


def toy_scene() -> Scene:
    boxes = torch.tensor([[0.0, 0, 0, 1, 1, 1], [3.0, 0, 0, 1, 1, 1], [6.0, 0, 0, 2, 2, 2]])
    gt = boxes.numpy().astype(np.float64)
    queries = [
        Query("ground", "", "a", "scanrefer", "unique", [0], gt[[0]]),
        Query("ground", "", "b", "scanrefer", "multiple", [1], gt[[1]] + [0.5, 0, 0, 0, 0, 0]),  # IoU 1/3
        Query("ground", "", "c", "multi3drefer", "mt", [0, 1], gt[[0, 1]]),
        Query("ground", "", "d", "multi3drefer", "zt_w_d", [], np.zeros((0, 6))),
        Query("qa", "", "q", "synthetic-qa", "count", answers=["2"]),
        Query("qa", "", "r", "synthetic-qa", "left_of", answers=["yes"]),
    ]
    z = torch.zeros(1, 3, 4, 4)
    return Scene("toy", [0], z, z[:, 0], torch.eye(3)[None], torch.eye(4)[None], boxes, queries)


def test_scores_follow_the_protocols():
    scenes = [toy_scene()]
    preds = Predictions({(0, 0): [0], (0, 1): [1], (0, 2): [0], (0, 3): []}, {(0, 4): "two", (0, 5): "No."})
    metrics, per = score(scenes, preds)
    # IoU of query 1: boxes of 1 m shifted by 0.5 m -> 0.5 / 1.5 = 1/3.
    assert per["acc@0.25"].tolist() == [1.0, 1.0] and per["acc@0.5"].tolist() == [1.0, 0.0]
    assert metrics["acc@0.25_unique"] == 1.0 and metrics["acc@0.5_multiple"] == 0.0
    # Multi3DRefer: one of two targets found -> 2 * 1 / (1 + 2); "nothing" for a zero-target query -> 1.
    assert np.allclose(per["f1@0.5"], [2 / 3, 1.0])
    assert per["qa_em"].tolist() == [1.0, 0.0]  # "two" == "2" after normalisation; "No." != "yes"


def test_trivial_baselines():
    scenes = [toy_scene()]
    assert largest_box(scenes).chosen[(0, 0)] == [2]
    assert all(0 <= c[0] < 3 for c in random_candidate(scenes).chosen.values())
    assert set(majority_answer(scenes, scenes).answers.values()) <= {"2", "yes"}
    with pytest.raises(ValueError, match="no questions"):
        majority_answer([], scenes)


def test_ridge_probe_recovers_a_linear_map_and_runs_on_the_encoder(data_root, _tiny):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0]) + 4.0
    w, b, mean, std = fit_ridge(X, y, ridge=1e-8)
    assert np.allclose(((X - mean) / std) @ w + b, y, atol=1e-4)
    model, processor = _tiny
    cfg = make_cfg(data_root, "unused", "unused")
    train = load_scenes(cfg.data, "train", processor=processor)
    test = load_scenes(cfg.data, "test", processor=processor)
    metrics, per = depth_probe(model, train, test)
    assert (
        0 <= metrics["probe_delta1"] <= 1 and metrics["probe_abs_rel"] > 0 and len(per["probe_delta1"]) == 2
    )


class ConstantTeacher:
    """A plug-in teacher (`module:callable`): one learned-free feature per 2x2 block."""

    feature_dim = 5

    def features(self, frames, K=None, w2c=None):
        return torch.ones(frames.shape[0], 2, 2, 5)


def make_constant_teacher():
    return ConstantTeacher()


def test_teacher_plug_in_and_cache(data_root, tmp_path, monkeypatch):
    from ide3d.teacher import cached_features, load_teacher

    cfg = make_cfg(
        data_root, tmp_path, "unused", ["supervision.teacher=ide3d.tests.test_evaluate:make_constant_teacher"]
    )
    teacher = load_teacher(cfg.supervision)
    scenes = load_scenes(cfg.data, "train")
    feats = cached_features(teacher, scenes, tmp_path / "cache")
    assert feats[0].shape == (4, 2, 2, 5) and len(list((tmp_path / "cache").iterdir())) == len(scenes)
    again = cached_features(None, scenes, tmp_path / "cache")  # read back, the teacher is not called
    assert torch.equal(again[0], feats[0])
    cfg.supervision.teacher = "no_such_module:load"
    with pytest.raises(ValueError, match="supervision.teacher: cannot load 'no_such_module:load'"):
        load_teacher(cfg.supervision)
    cfg.supervision.teacher = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no teacher here"):
        load_teacher(cfg.supervision)


def test_demo_answers_grounds_and_draws(data_root, _tiny, tmp_path, capsys):
    from ide3d.demo import main
    from ide3d.model import save_pretrained

    save_pretrained(*_tiny, tmp_path / "model")
    scene = sorted(p for p in (data_root / "test").iterdir() if p.is_dir())[0]
    main(
        [
            "--images",
            str(scene),
            "--ask",
            "the red box",
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out"),
            "--num-frames",
            "4",
        ]
    )
    result = json.loads((tmp_path / "out" / f"{scene.name}_answer.json").read_text())
    assert "answer" in result and len(result["grounding"]["box"]) == 6
    assert (tmp_path / "out" / f"{scene.name}_grounding.png").is_file()
    # A folder of plain images: answered, not grounded, and the reason is said.
    images = tmp_path / "images"
    images.mkdir()
    for i, png in enumerate(sorted((scene / "rgb").iterdir())):
        (images / f"{i}.png").write_bytes(png.read_bytes())
    capsys.readouterr()
    main(
        [
            "--images",
            str(images),
            "--ask",
            "How many boxes?",
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert "not grounding: a folder of images has no depth or poses" in capsys.readouterr().err
    assert "grounding" not in json.loads((tmp_path / "out" / "images_answer.json").read_text())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--images", "/nonexistent"], "/nonexistent: --images folder not found"),
        (["--num-frames", "1"], "--num-frames: expected >= 2"),
        (["--model", "/nonexistent"], "no config.json"),
    ],
)
def test_demo_bad_input_is_one_line(args, message, data_root, capsys):
    from ide3d.demo import main

    scene = sorted(p for p in (data_root / "test").iterdir() if p.is_dir())[0]
    argv = ["--images", str(scene), "--ask", "the red box", "--model", "/nonexistent"]
    argv = argv + args if "--model" not in args else argv[:-2] + args
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_.value.code == 2
        and len(err) == 1
        and err[0].startswith("ide3d.demo: error: ")
        and message in err[0]
    )


def test_reproduce_variants_change_only_their_settings(tmp_path):
    from ide3d.config import load_config
    from ide3d.reproduce import OURS, VARIANTS, variant_config

    cfg = load_config(ROOT / "ide3d/configs/tiny.yaml")
    full = variant_config(cfg, OURS)
    base = variant_config(cfg, "no-aux-loss")
    assert (
        full.supervision.geometry_weight,
        full.supervision.cross_view_weight,
        full.supervision.global_weight,
    ) == (0.8, 0.1, 1.0)
    assert (
        base.supervision.geometry_weight,
        base.supervision.cross_view_weight,
        base.supervision.global_weight,
    ) == (0.0, 0.0, 0.0)
    strong = variant_config(cfg, "+global+geometry-strong")
    assert (
        strong.supervision.verifier_init.endswith("strong_verifier")
        and strong.supervision.cross_view_weight == 0
    )
    assert variant_config(cfg, "video3dllm-3d-inputs").model.token_pe and not full.model.token_pe
    for name in VARIANTS:  # identical training otherwise
        c = variant_config(cfg, name)
        assert c.train.steps == cfg.train.steps and c.train.seed == cfg.train.seed and c.data == cfg.data
    assert sys.modules["ide3d.reproduce"].PAPER["acc@0.25"]["dataset"].startswith("ScanRefer")
