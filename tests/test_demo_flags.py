"""The demos' shared flags (common.cli.add_demo_flags): every demo's `--help` is whole (usage
`python -m <pkg>.demo`, the module docstring, a help string on every option) and has the same
flags, and a missing default model is one line naming the command that makes it. The rows for bad
flag values (--K, --fov, --cameras, --device, --threads) are in tests/test_bad_input.py."""

import argparse
import importlib

import numpy as np
import pytest
from PIL import Image

from common.cli import OneLineParser

IMAGE_DEMOS = {  # demo -> its arguments besides the input
    "ivgt.demo": ["--images", "{images}"],
    "depthvlm.demo": ["--image", "{image}"],
    "vlm3.demo": ["--image", "{image}", "--ask", "depth at 1,1"],
    "ide3d.demo": ["--images", "{images}", "--ask", "the red box"],
    "g2vlm.demo": ["--images", "{images}", "--ask", "how many boxes?"],
}
SHARED = {"--K", "--fov", "--cameras", "--model", "--out", "--device", "--threads"}


@pytest.mark.parametrize("entry", [*IMAGE_DEMOS, "endogsim.demo"])
def test_help_is_whole_with_the_shared_flags(entry, monkeypatch, capsys):
    module = importlib.import_module(entry)
    seen = []
    print_help = OneLineParser.print_help
    monkeypatch.setattr(OneLineParser, "print_help", lambda self, file=None: (seen.append(self), print_help(self, file)))
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0 and len(seen) == 1
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m {entry} "), text.splitlines()[0]
    parser = seen[0]
    assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    assert parser.description.strip() == module.__doc__.strip()
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions if not a.help]
    assert not missing, f"{entry}: options without help: {missing}"
    flags = {s for a in parser._actions for s in a.option_strings}
    expected = SHARED | {"--images" if "--images" in IMAGE_DEMOS.get(entry, []) else "--image"}
    if entry == "endogsim.demo":  # a clip: its poses_bounds.npy gives the cameras
        expected = {"--clip", "--model", "--out", "--threads"}
    assert expected <= flags, sorted(expected - flags)


@pytest.mark.parametrize("entry", IMAGE_DEMOS)
def test_missing_default_model_names_the_command_that_makes_it(entry, tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((24, 32, 3), 60 * i, np.uint8)).save(photos / f"{i}.jpg")
    monkeypatch.chdir(tmp_path)  # the default model path is relative: nothing there
    monkeypatch.delenv("PAPERS3D_TRACEBACK", raising=False)
    argv = [a.format(images=photos, image=photos / "0.jpg") for a in IMAGE_DEMOS[entry]]
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(entry).main(argv + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    package = entry.split(".")[0]
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{entry}: error: --model results/{package}/")
    assert f"no trained model there yet; `make reproduce-{package}` makes one (or pass --model DIR)" in err[0]
    assert "Traceback" not in err[0] and not (tmp_path / "out").exists()
