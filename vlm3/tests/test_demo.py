"""The demo end to end on a tiny checkpoint, and its bad-input errors."""

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
        self.image2 = self.intrinsics = self.intrinsics2 = self.fov = None
        self.per_pixel = False
        self.__dict__.update(kw)


def test_depth_several_pixels_in_one_prompt(checkpoint, images):
    (img, _), K = images
    out = run(
        Args(image=str(img), ask="depth at 10,20 30,40 63,63", checkpoint=str(checkpoint), intrinsics=K)
    )
    assert out["task"] == "depth" and len(out["metres"]) == 3 and len(out["raw"]) == 1
    per = run(
        Args(
            image=str(img),
            ask="depth at 10,20 30,40",
            checkpoint=str(checkpoint),
            intrinsics=K,
            per_pixel=True,
        )
    )
    assert len(per["raw"]) == 2 and len(per["metres"]) == 2


def test_pairs_and_objects(checkpoint, images):
    (a, b), K = images
    out = run(Args(image=str(a), image2=str(b), ask="pose", checkpoint=str(checkpoint), intrinsics=K))
    assert set(out) == {"task", "angle", "ypr", "direction", "distance"}
    m = run(Args(image=str(a), image2=str(b), ask="match 20,30", checkpoint=str(checkpoint), intrinsics=K))
    assert m["task"] == "correspondence" and isinstance(m["raw"], str)
    o = run(Args(image=str(a), ask="closer 1,2,20,30 vs 30,30,60,60", checkpoint=str(checkpoint), fov=60.0))
    assert o["kind"] == "closer" and isinstance(o["raw"], str)


def test_cli_prints_parsed_and_raw(checkpoint, images, capsys):
    (img, _), K = images
    main(["--image", str(img), "--ask", "depth at 5,5", "--checkpoint", str(checkpoint), "--intrinsics", K])
    printed = capsys.readouterr().out
    assert '"metres"' in printed and '"raw"' in printed


def test_cli_reports_bad_input_in_one_line(checkpoint, images, capsys):
    (img, _), K = images
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "--image",
                str(img),
                "--ask",
                "depth at 64,20",
                "--checkpoint",
                str(checkpoint),
                "--intrinsics",
                K,
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
        run(Args(image=str(img), ask="depth at 64,20", checkpoint=str(checkpoint), intrinsics=K))


def test_missing_intrinsics(checkpoint, images):
    (img, _), _ = images
    with pytest.raises(ValueError, match="intrinsics: missing; pass --intrinsics"):
        run(Args(image=str(img), ask="depth at 3,3", checkpoint=str(checkpoint), intrinsics=None))
    with pytest.raises(ValueError, match="--intrinsics '1,2': expected four numbers"):
        run(Args(image=str(img), ask="depth at 3,3", checkpoint=str(checkpoint), intrinsics="1,2"))


def test_image_that_does_not_decode(checkpoint, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match="broken.png"):
        run(Args(image=str(bad), ask="depth at 3,3", checkpoint=str(checkpoint), intrinsics="50,50,32,32"))


def test_bad_question_and_checkpoint(checkpoint, images, tmp_path):
    (img, _), K = images
    with pytest.raises(ValueError, match="expected 'depth at X,Y'"):
        run(Args(image=str(img), ask="how deep?", checkpoint=str(checkpoint), intrinsics=K))
    with pytest.raises(ValueError, match="needs --image2"):
        run(Args(image=str(img), ask="pose", checkpoint=str(checkpoint), intrinsics=K))
    with pytest.raises(ValueError, match="vlm3_settings.json: not found"):
        run(Args(image=str(img), ask="depth at 1,1", checkpoint=str(tmp_path), intrinsics=K))


def test_reproduce_reuses_only_a_finished_run_of_the_same_training_config(checkpoint, cfg_overrides):
    from vlm3.reproduce import finished_checkpoint

    base = cfg_overrides + [f"train.out_dir={checkpoint.parent}", "train.steps=2"]
    assert finished_checkpoint(load_config(None, base)) == checkpoint
    assert finished_checkpoint(load_config(None, base + ["eval.max_new_tokens=99"])) == checkpoint
    executed_otherwise = ["train.threads=2", "train.workers=2", "train.checkpoint_every=1"]
    assert finished_checkpoint(load_config(None, base + executed_otherwise)) == checkpoint
    assert finished_checkpoint(load_config(None, base + ["train.lr=0.5"])) is None  # trained differently
    assert finished_checkpoint(load_config(None, base[:-1] + ["train.steps=3"])) is None  # not finished


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
