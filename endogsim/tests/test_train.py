"""4DGS reconstruction: learning on held-out frames, CLI outputs, save/load, resume, bad input."""

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file
from PIL import Image

from common.config import ConfigError
from common.errors import DatasetError
from common.tests import kill_resume
from endogsim import evaluate as evaluate_mod
from endogsim import train as train_mod
from endogsim.config import load_config
from endogsim.evaluate import evaluate_reconstruction, evaluate_static_baseline
from endogsim.gaussians import GaussianModel
from endogsim.synthetic_scene import make_surgical_scene
from endogsim.clip import load_clip
from endogsim.train import init_reconstruction, train_reconstruction

SMALL = ["recon.model.plane_resolution=[8, 8, 8, 6]", "recon.model.plane_features=8", "recon.model.mlp_width=16",
         "recon.init_stride=2"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 frames of 32x40 (the blocks look: cheaper, and the look does not matter here): frames 1 and 9
    held out."""
    out = tmp_path_factory.mktemp("clip")
    make_surgical_scene(out, seed=0, frames=10, size=(32, 40), look="blocks")
    return out


def cfg(*overrides):
    return load_config(overrides=SMALL + list(overrides))


def test_cli_trains_a_model_that_beats_the_untrained_one_on_held_out_frames(clip, tmp_path):
    out = tmp_path / "run"
    train_mod.main(["--data", str(clip), "--out", str(out), "--seed", "0", *SMALL, "recon.steps=40",
                    "recon.coarse_steps=10", "recon.checkpoint_every=15"])
    c = cfg()
    untrained = evaluate_reconstruction(init_reconstruction(c.recon, load_clip(clip, c.recon)), clip, c.recon)
    result = json.loads((out / "results.json").read_text())
    assert result["frames"] == [1, 9] == untrained["frames"]
    assert result["psnr"] > untrained["psnr"] + 3.0, (result["psnr"], untrained["psnr"])
    assert result["ssim"] > untrained["ssim"]
    assert np.isfinite(result["depth_rmse"]) and result["depth_rmse"] < untrained["depth_rmse"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 41))
    assert {"l1", "ssim", "depth", "total", "frame"} <= set(lines[0])
    assert all(r["frame"] not in (1, 9) for r in lines)  # held-out frames never trained on
    assert (out / "checkpoint" / "optimizer.safetensors").is_file() and not (out / "checkpoint.tmp").exists()
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 40

    # save / load round trip: the saved model renders and scores exactly as the trained one did
    loaded = GaussianModel.from_pretrained(out / "model", use_safetensors=True)
    again = evaluate_reconstruction(loaded, clip, c.recon)
    assert again["psnr"] == pytest.approx(result["psnr"], abs=1e-9)
    assert again["depth_rmse"] == pytest.approx(result["depth_rmse"], abs=1e-12)

    # the evaluate CLI gives the same numbers and writes renders
    evaluate_mod.main(["--model", str(out / "model"), "--data", str(clip), "--out", str(tmp_path / "eval.json"),
                       "--renders", str(tmp_path / "renders")])
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["psnr"] == pytest.approx(result["psnr"], abs=1e-9)
    assert {"psnr", "ssim", "depth_rmse"} <= set(ev["static_baseline"])
    assert sorted(p.name for p in (tmp_path / "renders").glob("*.png")) == ["000001.png", "000009.png"]


def test_resume_after_a_kill_reaches_the_same_weights_and_log(clip, tmp_path):
    """`endogsim.train` killed with SIGKILL after a checkpoint (and steps logged past it), then run
    with --resume: the final weights equal the uninterrupted run's bit for bit, and metrics.jsonl
    has the same lines (all fields but the wall-clock "seconds"), each step once."""
    args = ["-m", "endogsim.train", "--data", str(clip), "--seed", "0", *SMALL, "recon.steps=60",
            "recon.coarse_steps=10", "recon.checkpoint_every=20"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    kill_resume.run([*args, "--out", str(full)], tmp_path / "full.log")
    step = kill_resume.kill_after_checkpoint([*args, "--out", str(cut)],
                                             cut / "checkpoint" / "trainer_state.json", cut / "metrics.jsonl",
                                             tmp_path / "cut.log")
    assert step in (20, 40) and not (cut / "model").exists()
    logged = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) > step  # the steps after the checkpoint, which the resumed run does again
    kill_resume.run([*args, "--out", str(cut), "--resume"], tmp_path / "resume.log")
    weights = "model/diffusion_pytorch_model.safetensors"
    kill_resume.assert_same_weights(full / weights, cut / weights)
    rows = kill_resume.assert_same_log(full / "metrics.jsonl", cut / "metrics.jsonl", time_keys=("seconds",))
    assert [r["step"] for r in rows] == list(range(1, 61))
    c = cfg()
    trained = GaussianModel.from_pretrained(full / "model", use_safetensors=True)
    moved = (trained.means - init_reconstruction(c.recon, load_clip(clip, c.recon)).means).abs().max()
    assert moved > 0  # the comparison is between trained weights


def test_static_baseline_of_a_static_clip_is_exact(clip, tmp_path):
    """Sanity of the metric plumbing: a clip whose frames are all frame 0 is predicted exactly."""
    still = tmp_path / "still"
    shutil.copytree(clip, still)
    for sub in ("images", "depth", "masks"):
        for f in sorted((still / sub).glob("*.png"))[1:]:
            shutil.copy(still / sub / "000000.png", f)
    base = evaluate_static_baseline(still, cfg().recon)
    assert base["psnr"] == float("inf") and base["depth_rmse"] == 0.0


def test_bad_input_names_the_file(clip, tmp_path):
    c = cfg("recon.steps=1", "recon.coarse_steps=0").recon
    with pytest.raises(DatasetError, match="nowhere"):
        train_reconstruction(c, tmp_path / "nowhere", tmp_path / "o1", progress=False)

    no_masks = tmp_path / "no_masks"
    shutil.copytree(clip, no_masks)
    shutil.rmtree(no_masks / "masks")
    with pytest.raises(DatasetError, match="masks"):
        train_reconstruction(c, no_masks, tmp_path / "o2", progress=False)

    missing_one = tmp_path / "missing_one"
    shutil.copytree(clip, missing_one)
    (missing_one / "masks" / "000004.png").unlink()
    with pytest.raises(DatasetError, match="counts"):
        train_reconstruction(c, missing_one, tmp_path / "o3", progress=False)

    bad_depth = tmp_path / "bad_depth"
    shutil.copytree(clip, bad_depth)
    Image.fromarray(np.full((16, 20), 900, np.uint16)).save(bad_depth / "depth" / "000003.png")
    with pytest.raises(DatasetError, match=r"depth/000003\.png.*expected size"):
        train_reconstruction(c, bad_depth, tmp_path / "o4", progress=False)
    assert not (tmp_path / "o4" / "metrics.jsonl").exists()  # nothing started


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="recon.stpes"):
        load_config(overrides=["recon.stpes=3"])
    with pytest.raises(ConfigError, match="coarse_steps"):
        load_config(overrides=["recon.steps=3", "recon.coarse_steps=5"])


def test_two_processes_follow_one_with_twice_the_frames(clip, tmp_path):
    """torchrun with 2 CPU processes (gloo), one frame each per step: the same log and weights as one
    process with 2 frames per step; one log and one model, written by the main process only."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["endogsim.train", "--data", str(clip), "--seed", "0", *SMALL, "recon.steps=12",
            "recon.coarse_steps=4", "recon.checkpoint_every=12"]
    kill_resume.run(["-m", *args, "recon.frames_per_step=2", "--out", str(tmp_path / "one")], tmp_path / "one.log")
    kill_resume.run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port), "-m",
                     *args, "recon.frames_per_step=1", "--out", str(tmp_path / "two")], tmp_path / "two.log")
    logs = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("one", "two")}
    assert len(logs["one"]) == len(logs["two"]) == 12
    for a, b in zip(logs["one"], logs["two"]):
        assert a["frames"] == b["frames"] and a["total"] == pytest.approx(b["total"], rel=1e-4, abs=1e-6)
    # the weights agree to float noise (the all-reduce's rounding, which Adam's normalisation turns
    # into steps of the learning rate's size where a gradient is ~0), far closer than to one process
    # at one frame per step (the batch the split would be mistaken for)
    kill_resume.run(["-m", *args, "recon.frames_per_step=1", "--out", str(tmp_path / "half")], tmp_path / "half.log")
    weights = "model/diffusion_pytorch_model.safetensors"
    wa, wb, wc = (load_file(str(tmp_path / n / weights)) for n in ("one", "two", "half"))
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    other = max((wa[k] - wc[k]).abs().max().item() for k in wa)
    assert diff < 1e-3 and diff < other / 50, (diff, other)
