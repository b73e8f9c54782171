"""The demo end to end on a tiny checkpoint, and its bad-input errors."""

import json

import numpy as np
import pytest

from common.datasets import SceneDataset
from common.datasets.io import write_rgb
from common.errors import DatasetError
from vlm3.config import load_config
from vlm3.demo import main, run
from vlm3.train import train


@pytest.fixture(scope="module")
def checkpoint(cfg_overrides, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_run")
    cfg = load_config(None, cfg_overrides + [f"train.out_dir={out}", "train.steps=2"])
    train(cfg, progress=False)
    return out / "checkpoint"


@pytest.fixture(scope="module")
def images(data_root, tmp_path_factory):
    sample = SceneDataset(data_root, "test")[0]
    folder = tmp_path_factory.mktemp("demo_images")
    paths = []
    for v in (0, 1):
        write_rgb(folder / f"view{v}.png", sample.images[v])
        paths.append(folder / f"view{v}.png")
    K = sample.K[0]
    return paths, f"{K[0, 0]:.4f},{K[1, 1]:.4f},{K[0, 2]:.4f},{K[1, 2]:.4f}"


class Args:
    def __init__(self, **kw):
        self.image2 = self.K = self.K2 = self.fov = self.cameras = self.device = None
        self.per_pixel, self.threads, self.out = False, 0, "results/vlm3/demo"
        self.__dict__.update(kw)


def test_depth_several_pixels_in_one_prompt(checkpoint, images):
    (img, _), K = images
    out = run(
        Args(image=str(img), ask="depth at 10,20 30,40 63,63", model=str(checkpoint), K=K)
    )
    assert out["task"] == "depth" and len(out["metres"]) == 3 and len(out["raw"]) == 1
    per = run(
        Args(
            image=str(img),
            ask="depth at 10,20 30,40",
            model=str(checkpoint),
            K=K,
            per_pixel=True,
        )
    )
    assert len(per["raw"]) == 2 and len(per["metres"]) == 2


def test_pairs_and_objects(checkpoint, images):
    (a, b), K = images
    out = run(Args(image=str(a), image2=str(b), ask="pose", model=str(checkpoint), K=K))
    assert set(out) == {"task", "angle", "ypr", "direction", "distance"}
    m = run(Args(image=str(a), image2=str(b), ask="match 20,30", model=str(checkpoint), K=K))
    assert m["task"] == "correspondence" and isinstance(m["raw"], str)
    o = run(Args(image=str(a), ask="closer 1,2,20,30 vs 30,30,60,60", model=str(checkpoint), fov=60.0))
    assert o["kind"] == "closer" and isinstance(o["raw"], str)


def test_cli_prints_parsed_and_raw(checkpoint, images, capsys, tmp_path):
    (img, _), K = images
    main(["--image", str(img), "--ask", "depth at 5,5", "--model", str(checkpoint), "--K", K, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert '"metres"' in printed and '"raw"' in printed
    assert printed.splitlines()[0].endswith("K from --K, poses unknown")  # the loader's one line
    assert json.loads((tmp_path / "view0_answer.json").read_text())["task"] == "depth"  # named after the image


def test_cli_reports_bad_input_in_one_line(checkpoint, images, capsys, tmp_path):
    (img, _), K = images
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "--image",
                str(img),
                "--ask",
                "depth at 64,20",
                "--model",
                str(checkpoint),
                "--K",
                K,
                "--out",
                str(tmp_path),
            ]
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err  # may also hold the weight-loading progress bar
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("vlm3.demo: error: ") and "outside the 64x64 image" in last and "Traceback" not in err
    )


def test_pixel_outside_the_image(checkpoint, images):
    (img, _), K = images
    with pytest.raises(ValueError, match=r"pixel \(64, 20\) is outside the 64x64 image"):
        run(Args(image=str(img), ask="depth at 64,20", model=str(checkpoint), K=K))


def test_without_intrinsics_a_60_degree_fov_is_assumed_and_said(checkpoint, images, capsys):
    (img, _), _ = images
    out = run(Args(image=str(img), ask="depth at 3,3", model=str(checkpoint), K=None))
    assert out["task"] == "depth"
    assert "no cameras found: assuming a 60 degree horizontal field of view" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--K '1,2': expected four numbers"):
        run(Args(image=str(img), ask="depth at 3,3", model=str(checkpoint), K="1,2"))


def test_pixels_of_a_large_photo_map_to_the_loaded_image(tmp_path):
    from PIL import Image

    from vlm3.demo import read_photo, to_loaded, to_source

    Image.new("RGB", (3000, 2000)).save(tmp_path / "big.jpg")
    photo = read_photo(tmp_path / "big.jpg", None, 60.0, None, "--image")
    assert tuple(photo["image"].shape) == (3, 1024, 1536) and photo["source_size"] == (2000, 3000)
    uv = to_loaded(photo, [[0, 0], [2999, 1999], [1500, 1000]])
    assert np.allclose(uv, [[0, 0], [1535, 1023], [768.0, 512.0]], atol=0.3)
    assert np.allclose(to_source(photo, uv[2]), (1500, 1000), atol=1e-6)
    with pytest.raises(ValueError, match=r"pixel \(3000, 5\) is outside the 3000x2000 image"):
        to_loaded(photo, [[3000, 5]])


def test_image_that_does_not_decode(checkpoint, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match="broken.png"):
        run(Args(image=str(bad), ask="depth at 3,3", model=str(checkpoint), K="50,50,32,32"))


def test_bad_question_and_checkpoint(checkpoint, images, tmp_path):
    (img, _), K = images
    with pytest.raises(ValueError, match="expected 'depth at X,Y'"):
        run(Args(image=str(img), ask="how deep?", model=str(checkpoint), K=K))
    with pytest.raises(ValueError, match="needs --image2"):
        run(Args(image=str(img), ask="pose", model=str(checkpoint), K=K))
    with pytest.raises(ValueError, match="vlm3_settings.json: not found"):
        run(Args(image=str(img), ask="depth at 1,1", model=str(tmp_path), K=K))


def test_reproduce_reuses_only_a_finished_run_of_the_same_training_config(checkpoint, cfg_overrides):
    from vlm3.reproduce import finished_checkpoint

    base = cfg_overrides + [f"train.out_dir={checkpoint.parent}", "train.steps=2"]
    assert finished_checkpoint(load_config(None, base)) == checkpoint
    assert finished_checkpoint(load_config(None, base + ["eval.max_new_tokens=99"])) == checkpoint
    held_out = ["data.test_root=elsewhere", "data.generate_scenes={train: 64, test: 160}"]  # the held-out split only
    assert finished_checkpoint(load_config(None, base + held_out)) == checkpoint
    executed_otherwise = ["train.workers=2", "train.checkpoint_every=1"]
    assert finished_checkpoint(load_config(None, base + executed_otherwise)) == checkpoint
    assert finished_checkpoint(load_config(None, base + ["train.lr=0.5"])) is None  # trained differently
    assert finished_checkpoint(load_config(None, base[:-1] + ["train.steps=3"])) is None  # not finished


def test_reproduce_reuses_a_run_whose_config_holds_moved_settings_that_changed_nothing(checkpoint, cfg_overrides, tmp_path):
    """Runs written before data.turn_pairs, data.corr_shift and data.corr_same_view left the config hold
    them: reused where they changed nothing (at 0; copy lessons in a run without correspondence)."""
    import json
    import shutil

    from vlm3.reproduce import finished_checkpoint

    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    shutil.copy(checkpoint / "trainer_state.json", out / "checkpoint" / "trainer_state.json")
    saved = json.loads((checkpoint.parent / "config.json").read_text())
    cfg = load_config(None, cfg_overrides + [f"train.out_dir={out}", "train.steps=2"])
    for turn_pairs, reused in ((0.0, True), (0.5, False)):
        saved["data"].update(turn_pairs=turn_pairs, corr_shift=0)
        saved["train"]["out_dir"] = str(out)
        (out / "config.json").write_text(json.dumps(saved))
        assert (finished_checkpoint(cfg) == out / "checkpoint") == reused
    # copy lessons (data.corr_same_view) are correspondence questions: a run that asked none is reused
    saved["data"].update(turn_pairs=0.0, corr_same_view=0.35)
    (out / "config.json").write_text(json.dumps(saved))
    assert finished_checkpoint(cfg) is None  # the tiny mixture asks correspondence
    saved["data"]["mixture"] = {"pose": 1.0}
    (out / "config.json").write_text(json.dumps(saved))
    pose_only = load_config(None, cfg_overrides + [f"train.out_dir={out}", "train.steps=2", "data.mixture={pose: 1.0}"])
    assert finished_checkpoint(pose_only) == out / "checkpoint"


@pytest.mark.slow
def test_reproduce_variants_in_parallel_processes_answer_as_in_one(checkpoint, cfg_overrides):
    from vlm3.reproduce import run_variants

    cfg = load_config(None, cfg_overrides + [f"train.out_dir={checkpoint.parent}", "train.steps=2"])
    variants = {
        "a": cfg,
        "b": load_config(
            None, cfg_overrides + [f"train.out_dir={checkpoint.parent}", "train.steps=2", "eval.seed=7"]
        ),
    }
    serial = run_variants(variants, reuse=True, jobs=1)
    parallel = run_variants(variants, reuse=True, jobs=2)
    for name in variants:
        assert parallel[name]["reused_checkpoint"] and serial[name]["reused_checkpoint"]
        assert parallel[name]["answers"] == serial[name]["answers"]
        assert parallel[name]["metrics"] == serial[name]["metrics"]
    assert serial["a"]["answers"] != serial["b"]["answers"]  # other questions: the results are per variant
