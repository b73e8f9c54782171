"""`python -m endogsim.demo`: a clip in, a scene and an interaction out; bad input is one line."""

import json
import subprocess
import sys

import numpy as np
import pytest

from endogsim.tests.scene_fixtures import small_clip


def _demo(*args):
    return subprocess.run(
        [sys.executable, "-m", "endogsim.demo", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--clip", "/nonexistent"], "expected an EndoNeRF-layout clip folder"),
        (["--labels", "liver,brick"], "--labels: unknown material label(s) ['brick']"),
        (["--model", "/tmp"], "--model: expected a GaussianModel folder"),
        (["--threads", "-1"], "--threads: expected >= 0"),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    base = {"--clip": str(small_clip()), "--out": str(tmp_path / "out")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = _demo(*[x for kv in base.items() for x in kv])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_demo_reconstructs_decomposes_and_pokes(tmp_path):
    out = tmp_path / "out"
    r = _demo(
        "--clip", small_clip(), "--out", out, "--action", "retract", "recon.steps=4", "recon.coarse_steps=2"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    scene = json.loads((out / "scene" / "scene.json").read_text())
    assert [o["name"] for o in scene["objects"]] == ["tissue_0", "tissue_1", "tool", "support"]
    assert [o["material"]["E"] for o in scene["objects"][:2]] == [5220.0, 14210.0]  # liver, kidney (table)
    summary = json.loads((out / "sim_retract" / "summary.json").read_text())
    from endogsim.simulate import RETRACT_OFFSET

    # the grasped tissue follows the default retraction (7.6 mm)
    assert summary["max_displacement_m"] == pytest.approx(float(np.linalg.norm(RETRACT_OFFSET)), rel=0.05)
    assert (out / "sim_retract" / "simulation.gif").is_file() and (out / "recon" / "model").is_dir()
