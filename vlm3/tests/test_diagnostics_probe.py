"""The spatial probes: their questions are labelled right, and a run reports a held-out curve."""

import numpy as np
import pytest
import torch

from vlm3.config import load_config
from common.synthetic import generate_split
from vlm3.diagnostics.probe import PROMPTS, PoseSignQuestions, flow_signs, probe_question, run_probe


def _square_x(image, colour):
    mask = (image[0] == colour[0]) & (image[1] == colour[1]) & (image[2] == colour[2])  # [H, W]
    return float(torch.nonzero(mask)[:, 1].float().mean())  # mean column


def test_probe_questions_are_labelled_right():
    rng = np.random.default_rng(0)
    views = [torch.rand(3, 3, 128, 128) * 0.8 + 0.1 for _ in range(2)]  # no pure red or blue pixel
    for _ in range(20):
        (a,), prompt, answer = probe_question("locate", rng, views)
        assert prompt == PROMPTS["locate"] and a.shape == (3, 96, 96)
        assert answer == ("left" if _square_x(a, (1, 0, 0)) + 0.5 < 48 else "right")  # pixel centres
        (a,), _, answer = probe_question("relate", rng, views)
        assert answer == ("left" if _square_x(a, (0, 0, 1)) < _square_x(a, (1, 0, 0)) else "right")
        (a, b), _, answer = probe_question("relate2", rng, views)
        assert answer == ("left" if _square_x(b, (1, 0, 0)) < _square_x(a, (1, 0, 0)) else "right")
        (a, b), _, answer = probe_question("moved", rng, views)
        # The camera moved by s px: the second crop's column c shows the first crop's column c + s.
        found = [
            s
            for s in range(-32, 33)
            if abs(s) >= 16
            and torch.equal(a[:, :, max(s, 0) : 96 + min(s, 0)], b[:, :, max(-s, 0) : 96 - max(s, 0)])
        ]
        assert len(found) == 1 and answer == ("right" if found[0] > 0 else "left")
    with pytest.raises(ValueError, match="probe task"):
        probe_question("above", rng, views)


def test_probe_run_reports_a_held_out_curve(cfg_overrides):
    cfg = load_config(None, cfg_overrides + ["train.batch_size=2"])  # the fixture's views are 64 px
    result = run_probe("moved", cfg, steps=2, every=1, held_out=4, crop=48, progress=False)
    assert [c["step"] for c in result["curve"]] == [0, 1, 2]
    assert all(c["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0) for c in result["curve"])  # of 4 questions
    assert result["final_accuracy"] == result["curve"][-1]["accuracy"] and result["curve"][-1]["loss"] > 0


def test_pose_sign_questions_are_labelled_by_the_second_camera_s_heading(tmp_path, cfg_overrides):
    generate_split(tmp_path, "orbits", scenes=6, views=4, size=48, seed=0, progress=False)
    cfg = load_config(None, cfg_overrides + [f"data.root={tmp_path}"])
    qs = PoseSignQuestions(cfg, "orbits", seed=0, yaw=(1.0, 90.0))
    assert qs.orbits  # this seed's six scenes hold orbits
    rng = np.random.default_rng(0)
    for task in ("turned", "orbit"):
        for _ in range(6):
            images, prompt, answer, (s, i, j) = qs.draw(task, rng)
            assert len(images) == 2 and prompt == PROMPTS[task]
            assert qs.cache.samples[s].annotations["camera_path"]["kind"] == "orbit"
            assert isinstance(j, tuple) == (task == "turned")  # ("turn", i, j_pair) or a view index
            # The second camera's optical axis in the first camera's frame (x right): right if x > 0.
            Ri = qs.cache.frame(s, i).w2c[:3, :3].double()
            Rj = qs.cache.frame(s, j).w2c[:3, :3].double()
            axis = Ri @ Rj.T @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
            assert answer == ("right" if axis[0] > 0 else "left")
    with pytest.raises(ValueError, match="no orbit pair"):
        PoseSignQuestions(cfg, "orbits", seed=0, yaw=(170.0, 180.0)).draw("orbit", rng)
    cfg = load_config(
        None,
        cfg_overrides
        + [
            f"data.root={tmp_path}",
            "data.train_split=orbits",
            "data.test_split=orbits",
            "train.batch_size=2",
        ],
    )
    result = run_probe("turned", cfg, steps=1, every=1, held_out=4, progress=False, yaw=(1.0, 90.0))
    assert [c["step"] for c in result["curve"]] == [0, 1] and result["yaw"] == [1.0, 90.0]
    assert result["majority"] in (0.5, 0.75, 1.0)  # the commoner answer's share of 4 questions


def test_flow_signs_a_pure_turn_moves_everything_against_it(tmp_path, cfg_overrides):
    generate_split(tmp_path, "orbits", scenes=6, views=4, size=48, seed=0, progress=False)
    cfg = load_config(None, cfg_overrides + [f"data.root={tmp_path}"])
    turned = flow_signs(cfg, "orbits", turned=True, pixels=120)
    assert turned["pairs"] > 0
    assert all(turned[r] == 1.0 for r in ("all", "top third", "bottom third", "nearer half", "farther half"))
    # Along the orbit the camera turns to keep the centre in view: the far top of the view moves against
    # the turn, the near floor at the bottom with it, and the whole view either way.
    real = flow_signs(cfg, "orbits", pixels=120)
    assert real["pairs"] > 0 and real["top third"] >= 0.9 and real["bottom third"] <= 0.1
    # ... and, looking down at it, rolls the way it turns; the turned pair has the same rotation.
    assert real["roll with the yaw"] >= 0.9 and real["median |roll|"] > 1.0
    assert turned["roll with the yaw"] >= 0.9
