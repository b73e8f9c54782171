"""Training: the inference checkpoint holds no training-only module, resume after a kill is exact,
two processes shard like one with twice the batch, a tiny model learns, and bad settings are one
line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from common.tests import kill_resume
from ide3d.data import load_scenes
from ide3d.evaluate import predict, score
from ide3d.model import build_model, load_pretrained
from ide3d.tests.conftest import TINY, make_cfg, tiny_overrides
from ide3d.train import main as train_main
from ide3d.train import pretrain_verifier, train

ROOT = Path(__file__).resolve().parents[2]
NO_AUX = ["supervision.geometry_weight=0", "supervision.cross_view_weight=0", "supervision.global_weight=0"]


def weights(path) -> dict:
    return load_file(str(Path(path) / "model.safetensors"))


def test_training_only_modules_leave_the_inference_model(data_root, teacher_path, tmp_path):
    full = train(make_cfg(data_root, tmp_path / "full", teacher_path), progress=False)
    base = train(make_cfg(data_root, tmp_path / "base", teacher_path, NO_AUX), progress=False)
    names_full, names_base = weights(full), weights(base)
    assert sorted(names_full) == sorted(names_base)  # same parameters as the baseline VLM
    assert sum(v.numel() for v in names_full.values()) == sum(v.numel() for v in names_base.values())
    assert not any(k.startswith(("supervision", "verifier", "proj_3d")) for k in names_full)
    ckpt = load_file(str(tmp_path / "full" / "checkpoint" / "supervision.safetensors"))
    assert any(k.startswith("verifier.") for k in ckpt) and any(k.startswith("proj_3d.") for k in ckpt)
    log = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["geometry"] > 0 and r["cross_view"] > 0 and r["global"] > 0 for r in log)


def test_resume_after_a_kill_reaches_the_same_weights_and_log(data_root, teacher_path, tmp_path):
    """`ide3d.train` killed with SIGKILL after a checkpoint (and steps logged past it), then run with
    --resume: the final model, the training-only modules and the AdamW state equal the uninterrupted
    run's bit for bit, and metrics.jsonl has the same lines (all fields but the wall-clock "seconds"),
    each step once."""
    steps = ["train.steps=8", "train.checkpoint_every=3"]
    args = ["-m", "ide3d.train", "--config", str(ROOT / TINY),
            *tiny_overrides(data_root, "unused", teacher_path, steps)]
    full, cut = tmp_path / "full", tmp_path / "cut"
    kill_resume.run([*args, f"train.out_dir={full}"], tmp_path / "full.log")
    step = kill_resume.kill_after_checkpoint([*args, f"train.out_dir={cut}"],
                                             cut / "checkpoint" / "trainer_state.json", cut / "metrics.jsonl",
                                             tmp_path / "cut.log")
    assert step in (3, 6) and not (cut / "final").exists()
    assert max(json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()) > step
    kill_resume.run([*args, f"train.out_dir={cut}", "--resume"], tmp_path / "resume.log")
    kill_resume.assert_same_weights(full / "final" / "model.safetensors", cut / "final" / "model.safetensors")
    for name in ("supervision.safetensors", "optimizer.safetensors"):
        kill_resume.assert_same_weights(full / "checkpoint" / name, cut / "checkpoint" / name)
    rows = kill_resume.assert_same_log(full / "metrics.jsonl", cut / "metrics.jsonl", time_keys=("seconds",))
    assert [r["step"] for r in rows] == list(range(1, 9))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_follow_one_with_twice_the_batch(data_root, teacher_path, tmp_path):
    common = [
        "--config",
        str(ROOT / "ide3d/configs/tiny.yaml"),
        f"data.root={data_root}",
        "data.frames=4",
        f"supervision.teacher_path={teacher_path}",
        "train.steps=3",
        "train.checkpoint_every=3",
        "train.queries_per_scene=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "ide3d.train",
            *common,
            f"train.out_dir={tmp_path / 'one'}",
            "train.scenes_per_batch=2",
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
            "ide3d.train",
            *common,
            f"train.out_dir={tmp_path / 'two'}",
            "train.scenes_per_batch=1",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    curve = {
        run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    }
    assert len(curve["one"]) == len(curve["two"]) == 3  # one log, written by the main process only
    for a, b in zip(curve["one"], curve["two"]):
        for key in ("loss", "task", "geometry", "cross_view", "global"):
            assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-5), (key, a, b)
    wa, wb = weights(tmp_path / "one" / "final"), weights(tmp_path / "two" / "final")
    # Within float noise: Adam rescales gradients that are zero up to rounding (attention key
    # biases cancel in the softmax) to steps of the learning rate's size, so allow 1e-4.
    diff = {k: (wa[k] - wb[k]).abs().max().item() for k in wa}
    assert max(diff.values()) < 1e-4, sorted(diff.items(), key=lambda kv: -kv[1])[:5]


def test_tiny_model_learns_to_ground_its_training_queries(data_root, teacher_path, tmp_path):
    """Learning test: the trained model against the untrained one on the queries it saw."""
    cfg = make_cfg(
        data_root,
        tmp_path / "learn",
        teacher_path,
        NO_AUX + ["train.steps=120", "train.warmup=0.0", "train.queries_per_scene=8"],
    )
    model, processor = build_model(cfg.model, seed=0)
    scenes = load_scenes(cfg.data, "train", processor=processor)
    before, _ = score(scenes, predict(model, processor, scenes))
    trained, _ = load_pretrained(train(cfg, progress=False))
    after, _ = score(scenes, predict(trained, processor, scenes))
    # Measured (120 steps): Acc@0.25 0.17 -> 0.31, F1@0.25 0.11 -> 0.35, QA exact match 0 -> 0.57.
    assert after["acc@0.25"] > before["acc@0.25"] + 0.1, (before, after)
    assert after["f1@0.25"] > before["f1@0.25"] + 0.15, (before, after)
    assert after["qa_em"] > before["qa_em"] + 0.3, (before, after)


def test_strong_verifier_pretraining_and_loading(data_root, teacher_path, tmp_path):
    cfg = make_cfg(data_root, tmp_path / "strong", teacher_path)
    path = pretrain_verifier(cfg, tmp_path / "verifier", progress=False)
    assert (path / "config.json").is_file() and json.loads((path / "pretraining.json").read_text())[
        "steps"
    ] == 2
    cfg = make_cfg(
        data_root, tmp_path / "strong", teacher_path, [f"supervision.verifier_init={path}", "train.steps=1"]
    )
    train(cfg, progress=False)
    ckpt = load_file(str(tmp_path / "strong" / "checkpoint" / "supervision.safetensors"))
    assert any(k.startswith("verifier.") for k in ckpt)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=-5", "train.steps: expected an int >= 1, got -5"),
        ("train.checkpoint_every=0", "train.checkpoint_every: expected an int >= 1, got 0"),
        (
            "supervision.geometry_weight=0",
            "supervision.cross_view_weight: expected 0 when geometry_weight is 0",
        ),
        ("supervision.global_wieght=1.0", "unknown key 'supervision.global_wieght'; did you mean"),
        ("data.source=kinect", "data.source: expected 'synthetic', 'scannet' or 'video3dllm', got 'kinect'"),
    ],
)
def test_bad_settings_are_one_line(override, message, data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(
            [
                "--config",
                str(ROOT / "ide3d/configs/tiny.yaml"),
                f"data.root={data_root}",
                f"train.out_dir={tmp_path}",
                override,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("ide3d.train: error: ") and message in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "metrics.jsonl").exists()
