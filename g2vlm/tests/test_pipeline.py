"""Save / load, the two stages, exact resume after a kill, learning, evaluation protocols, 7-Scenes,
the demo and bad input."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.tests import kill_resume
from g2vlm.data import load_scenes
from g2vlm.evaluate import evaluate_scene, graph_triplets, pool, qa_score, recon_metrics
from g2vlm.model import G2VLM, build_model
from g2vlm.tests.conftest import ROOT, make_cfg
from g2vlm.train import train


def test_save_load_round_trip(tiny, scenes, tmp_path):
    tiny.save_pretrained(tmp_path / "m")
    loaded = G2VLM.from_pretrained(tmp_path / "m")
    a, b = tiny.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s = scenes[0]
    with torch.no_grad():
        ta = tiny.geometry.tokens(s.rgb, s.sensor, s.K, s.w2c)
        tb = loaded.geometry.tokens(s.rgb, s.sensor, s.K, s.w2c)
    assert torch.equal(ta.feats, tb.feats)
    assert tiny.answer(["How many boxes?"], [ta], 4) == loaded.answer(["How many boxes?"], [tb], 4)
    with pytest.raises(FileNotFoundError, match="not a G2VLM folder"):
        G2VLM.from_pretrained(tmp_path)


def test_stage1_trains_geometry_only_and_resume_after_a_kill_in_stage_2_is_exact(data_root, tmp_path):
    """`g2vlm.train`: stage 1 moves the depth head and not the language model, stage 2 moves the
    language model. Killed with SIGKILL in stage 2 after a checkpoint (and steps logged past it), then
    run with --resume: stage 2's final model and AdamW state equal the uninterrupted run's bit for
    bit, and metrics.jsonl has the same lines (all fields but the wall-clock "seconds"), each step
    once."""
    overrides = [f"data.root={data_root}", "model.max_tokens=64", "train.stage1.steps=2",
                 "train.stage2.steps=8", "train.checkpoint_every=3", "train.stage2.queries_per_scene=4"]
    args = ["-m", "g2vlm.train", "--config", str(ROOT / "g2vlm/configs/tiny.yaml"), *overrides]
    full, cut = tmp_path / "full", tmp_path / "cut"
    kill_resume.run([*args, f"train.out_dir={full}"], tmp_path / "full.log")

    s1 = load_file(str(full / "stage1" / "final" / "language_model" / "model.safetensors"))
    init = G2VLM.from_pretrained(full / "stage1" / "final")
    cfg = make_cfg(data_root, full, overrides)
    untrained = build_model(cfg.model, seed=cfg.train.seed)  # what training started from
    fresh_lm = untrained.lm.state_dict()
    assert all(torch.equal(s1[k], fresh_lm[k]) for k in s1)
    # Stage 1 moved the depth head and not the language model (which stage 2 then trains).
    head = init.geometry.depth_head.state_dict()
    assert any(not torch.equal(v, untrained.geometry.depth_head.state_dict()[k]) for k, v in head.items())
    s2 = G2VLM.from_pretrained(full / "stage2" / "final")
    assert not all(torch.equal(a, b) for a, b in zip(s2.lm.parameters(), init.lm.parameters()))

    step = kill_resume.kill_after_checkpoint([*args, f"train.out_dir={cut}"],
                                             cut / "stage2" / "checkpoint" / "trainer_state.json",
                                             cut / "metrics.jsonl", tmp_path / "cut.log",
                                             past=lambda row, s: row["stage"] == 2 and row["step"] > s)
    assert step in (3, 6) and (cut / "stage1" / "final").is_dir() and not (cut / "stage2" / "final").exists()
    kill_resume.run([*args, f"train.out_dir={cut}", "--resume"], tmp_path / "resume.log")
    files = sorted(p.relative_to(full) for p in (full / "stage2" / "final").rglob("*.safetensors"))
    assert len(files) == 2, files  # the language model and the geometry model
    for name in [*files, "stage2/checkpoint/optimizer.safetensors"]:
        kill_resume.assert_same_weights(full / name, cut / name)
    rows = kill_resume.assert_same_log(full / "metrics.jsonl", cut / "metrics.jsonl", time_keys=("seconds",))
    assert [(r["stage"], r["step"]) for r in rows] == [(1, 1), (1, 2)] + [(2, s) for s in range(1, 9)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_follow_one_with_twice_the_scenes(data_root, tmp_path):
    common = [
        "--config",
        str(ROOT / "g2vlm/configs/tiny.yaml"),
        f"data.root={data_root}",
        "model.max_tokens=64",
        "train.stage1.steps=2",
        "train.stage2.steps=2",
        "train.stage2.queries_per_scene=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "g2vlm.train",
            *common,
            f"train.out_dir={tmp_path / 'one'}",
            "train.stage1.scenes_per_batch=2",
            "train.stage2.scenes_per_batch=2",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "g2vlm.train",
            *common,
            f"train.out_dir={tmp_path / 'two'}",
            "train.stage1.scenes_per_batch=1",
            "train.stage2.scenes_per_batch=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    curves = [
        [json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("one", "two")
    ]
    assert len(curves[0]) == len(curves[1]) == 4
    for a, b in zip(*curves):
        for key in ("loss", "depth", "recon", "spatial", "text", "ground", "align"):
            assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-5), (key, a, b)


def test_tiny_model_learns_its_training_scenes(data_root, tmp_path):
    """Learning test: trained against untrained on the scenes it saw (grounding, scene graph, depth)."""
    overrides = ["train.stage1.steps=40", "train.stage2.steps=60", "train.stage2.queries_per_scene=8",
                 "train.checkpoint_every=1000"]
    cfg = make_cfg(data_root, tmp_path / "learn", overrides)
    scenes = load_scenes(cfg, "train")
    untrained = pool([evaluate_scene(build_model(cfg.model), s, cfg.eval, ("sensor",)) for s in scenes])[0]
    model = G2VLM.from_pretrained(train(cfg, progress=False))
    trained = pool([evaluate_scene(model, s, cfg.eval, ("sensor",)) for s in scenes])[0]
    # Measured: Acc@0.25 0.06 -> 0.19, scene-graph F1 0.05 -> 0.28, F-score 0.04 -> 0.21,
    # Chamfer 0.81 -> 0.19.
    assert trained["acc@0.25"] > untrained["acc@0.25"] + 0.08, (untrained, trained)
    assert trained["sg_f1"] > untrained["sg_f1"] + 0.1, (untrained, trained)
    assert trained["sensor_fscore"] > untrained["sensor_fscore"] + 0.1, (untrained, trained)
    assert trained["sensor_chamfer"] < 0.5 * untrained["sensor_chamfer"], (untrained, trained)


def test_protocols_on_hand_made_cases(scenes):
    from common.cameras import depth_to_points

    s = next(x for x in scenes if x.domain == "indoor")
    exact = recon_metrics(s, depth_to_points(s.depth, s.K, s.w2c), make_cfg("unused").eval)
    assert exact["acc"] < 1e-6 and exact["fscore"] == 1.0 and exact["iou"] == 1.0 and exact["nc"] > 0.99
    # Scene graph: the candidates of objects 0 and 1 (whatever their order) related as the ground truth says.
    cand = {o: j for j, o in enumerate(s.object_of) if o >= 0}
    gt_pairs = [(a, b, r) for a, b, r in zip(*np.nonzero(s.relations)) if a in cand and b in cand][:3]
    from g2vlm.relations import RELATIONS

    graph = {
        "objects": [{"id": cand[o]} for o in sorted(cand)],
        "relations": [
            {"subject": cand[a], "predicate": RELATIONS[r], "object": cand[b]} for a, b, r in gt_pairs
        ],
    }
    assert graph_triplets(s, graph) == {(int(a), RELATIONS[r], int(b)) for a, b, r in gt_pairs}
    q = type("Q", (), {"value": 2.0, "answers": ["2.00"]})()
    assert qa_score("about 2 m", q) == 1.0 and qa_score("2.2", q) == pytest.approx(0.9)  # MRA
    c = type("Q", (), {"value": None, "answers": ["yes"]})()
    assert qa_score("Yes.", c) == 1.0


def test_seven_scenes_reconstruction_on_a_fixture(tmp_path, tiny):
    from common.tests import datasets_fixtures as fx
    from g2vlm.data import load_seven_scenes

    seq = tmp_path / "chess" / "seq-03"
    for i in range(5):
        fx.rgb(seq / f"frame-{i:06d}.color.png", 48, 64, seed=i)
        fx.u16(seq / f"frame-{i:06d}.depth.png", np.full((48, 64), 1500 + 100 * i))
        fx.matrix_txt(seq / f"frame-{i:06d}.pose.txt", fx.c2w_example(i))
    (tmp_path / "chess" / "TestSplit.txt").write_text("sequence3\n")
    cfg = make_cfg("unused", extra=[f"data.seven_scenes_root={tmp_path}", "data.seven_scenes_stride=2"])
    (scene,) = load_seven_scenes(cfg)
    assert scene.scene_id == "chess/seq-03" and scene.rgb.shape == (3, 3, 64, 64)  # frames 0, 2, 4
    out = evaluate_scene(tiny, scene, cfg.eval, recon_only=True)
    assert len(out["sensor_acc"]) == 1 and len(out["rgb_acc"]) == 1 and not out["acc@0.25"]


def test_demo_writes_its_outputs_and_answers_bad_input_in_one_line(data_root, tiny, tmp_path, capsys):
    from g2vlm.demo import main

    tiny.save_pretrained(tmp_path / "model")
    scene = sorted(p for p in (data_root / "test").iterdir() if p.is_dir())[0]
    main(
        [
            "--images",
            str(scene),
            "--ask",
            "How many boxes are there?",
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {
        f"{scene.name}_points.ply",
        f"{scene.name}_scene_graph.json",
        f"{scene.name}_answer.json",
    } <= names
    import trimesh

    cloud = trimesh.load(tmp_path / "out" / f"{scene.name}_points.ply")  # opens as MeshLab would read it
    assert len(cloud.vertices) > 100 and cloud.colors.shape == (len(cloud.vertices), 4)
    if f"{scene.name}_mesh.ply" in names:  # TSDF fusion of an untrained model's depth may find no surface
        mesh = trimesh.load(tmp_path / "out" / f"{scene.name}_mesh.ply")
        assert mesh.faces.max() < len(mesh.vertices) and mesh.visual.kind == "vertex"
        assert f"{scene.name}_mesh.glb" in names
    images = tmp_path / "images"
    images.mkdir()
    for png in sorted((scene / "rgb").iterdir()):
        (images / png.name).write_bytes(png.read_bytes())
    depth = tmp_path / "depth"
    depth.mkdir()
    from common.tests import datasets_fixtures as fx

    for png in sorted((scene / "rgb").iterdir()):
        fx.u16(depth / png.name, np.full((32, 32), 2000))  # another size than the 64 px images
    (tmp_path / "bad.ply").write_text("ply\nformat nonsense\n")
    cases = [
        (["--depth", str(depth), "--K", "50,50,32,32"], "expected size (H, W) = (64, 64), got (32, 32)"),
        (["--depth", str(scene / "depth")], "intrinsics missing: the sensor-depth mode needs --K"),
        (["--mesh", str(tmp_path / "bad.ply")], "bad.ply: not a mesh or point cloud trimesh can read"),
        (["--K", "0,50,32,32"], "--K '0,50,32,32': expected finite fx,fy,cx,cy with focal lengths"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main(
                [
                    "--images",
                    str(images),
                    "--ask",
                    "?",
                    "--model",
                    str(tmp_path / "model"),
                    "--out",
                    str(tmp_path / "out2"),
                    *extra,
                ]
            )
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("g2vlm.demo: error: "), err
        assert message in err[0], err
    # The photos with their cameras in a cameras.json beside them and full-size sensor depth: the
    # sensor-depth mode runs, and the loader's line says what it found.
    from common.datasets import read_scene

    sample = read_scene(scene)
    views = [{"name": f"{n}.png", "K": sample.K[i].tolist(), "w2c": sample.w2c[i].tolist()}
             for i, n in enumerate(sample.view_names)]
    (images / "cameras.json").write_text(json.dumps({"width": 64, "height": 64, "views": views}))
    for png in sorted((scene / "rgb").iterdir()):
        fx.u16(depth / png.name, np.full((64, 64), 2000))
    capsys.readouterr()
    main(["--images", str(images), "--ask", "?", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out3"),
          "--depth", str(depth)])
    assert "cameras from cameras JSON" in capsys.readouterr().out
    assert json.loads((tmp_path / "out3" / "images_answer.json").read_text())["mode"] == "sensor"


@pytest.mark.parametrize("args, message", [
    (["train.stage2.steps=-1"], "train.stage2.steps: expected an int >= 0, got -1"),
    (["model.knn=1"], "model.knn: expected >= 2"),
    (["train.stage3.steps=1"], "unknown key 'train.stage3.steps'"),
    (["--stages", "3"], "--stages: expected 1, 2 or 1,2"),
])
def test_train_bad_settings_are_one_line(args, message, data_root, tmp_path, capsys):
    from g2vlm.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(ROOT / "g2vlm/configs/tiny.yaml"), f"data.root={data_root}",
              f"train.out_dir={tmp_path}", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("g2vlm.train: error: ") and message in err[0]
    assert not (tmp_path / "metrics.jsonl").exists()
