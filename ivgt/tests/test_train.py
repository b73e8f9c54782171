"""Training: a tiny model overfits one scene; --resume after a kill reaches the uninterrupted weights
and log."""

import json

import pytest
from safetensors.torch import load_file

from common.synthetic import generate_split
from common.tests import kill_resume, two_processes
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


def test_resume_from_checkpoint_old_left_between_the_renames_of_a_save(one_scene, tmp_path, capsys):
    """A kill between a save's two renames leaves checkpoint.old (the previous checkpoint) and
    checkpoint.tmp but no checkpoint: resuming continues from checkpoint.old and reaches the weights
    and log of the uninterrupted run; the next save puts a checkpoint back and removes the rest."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(_cfg(one_scene, full, 6), progress=False)
    train(_cfg(one_scene, cut, 6), progress=False, stop_at=5)  # checkpoints at steps 2 and 4, step 5 logged
    (cut / "checkpoint").rename(cut / "checkpoint.old")
    (cut / "checkpoint.tmp").mkdir()  # the step-6 save, cut short
    log = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    (cut / "metrics.jsonl").write_text("".join(json.dumps({**r, "seconds": -1}) + "\n" for r in log))
    train(_cfg(one_scene, cut, 6), resume=True, progress=False)
    assert "resuming from" in capsys.readouterr().err
    weights = "model/diffusion_pytorch_model.safetensors"
    kill_resume.assert_same_weights(full / weights, cut / weights)
    rows = kill_resume.assert_same_log(full / "metrics.jsonl", cut / "metrics.jsonl", time_keys=("seconds",))
    assert [r["step"] for r in rows] == list(range(1, 7))
    # steps 1-4 were not trained again (their lines, marked above, are kept); 5 and 6 were
    seconds = [json.loads(line)["seconds"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert seconds[:4] == [-1] * 4 and -1 not in seconds[4:]
    assert sorted(p.name for p in cut.glob("checkpoint*")) == ["checkpoint"]


def test_two_processes_follow_one_with_twice_the_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo), one scene each per step: the log and weights of one
    process at 2 scenes per step (stage 2's eikonal term included), far closer than those of one
    process at one scene per step; only the main process writes."""
    data = tmp_path / "syn"
    generate_split(data, "train", scenes=3, views=6, size=32, seed=5, progress=False)
    source = f'train.sources={{one: {{root: "{data}", split: train, weight: 1.0, domain: ""}}}}'
    args = [*MODEL, "train.steps=4", "train.rays_per_view=32", "train.input_views=3", "train.target_views=1",
            "train.warmup=1", "train.stage2_start=2", "train.checkpoint_every=2", "train.lr=0.003", source]
    runs = {"one": 2, "half": 1}
    for name, batch in runs.items():
        kill_resume.run(["-m", "ivgt.train", *args, f"train.batch_size={batch}",
                         f"train.output_dir={tmp_path / name}"], tmp_path / f"{name}.log")
    two = two_processes.run("ivgt.train", [*args, "train.batch_size=1"], "train.output_dir", tmp_path / "two",
                            tmp_path / "two.log")
    outs = {"one": tmp_path / "one", "two": two, "half": tmp_path / "half"}
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in outs["one"].iterdir())
    logs = {n: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            for n, d in outs.items()}
    assert [r["step"] for r in logs["two"]] == [1, 2, 3, 4]
    for a, b in zip(logs["one"], logs["two"]):
        assert a["total"] == pytest.approx(b["total"], rel=1e-4), (a, b)
        assert a["eikonal"] == pytest.approx(b["eikonal"], rel=1e-4, abs=1e-6), (a, b)
    w = {n: load_file(str(d / "model" / "diffusion_pytorch_model.safetensors")) for n, d in outs.items()}
    diff = max((w["one"][k] - w["two"][k]).abs().max().item() for k in w["one"])
    other = max((w["one"][k] - w["half"][k]).abs().max().item() for k in w["one"])
    print(f"ivgt weights: 2 x 1 vs 1 x 2 scenes {diff:.2e}, 1 x 1 vs 1 x 2 scenes {other:.2e}")
    assert diff < 1e-4 and diff < other / 50, (diff, other)
