"""Scoring with common.metrics: perfect answers score perfectly, unparseable ones count as wrong."""

import json

import pytest

from vlm3.evaluate import baseline_answers, held_out_questions, main, score


@pytest.fixture(scope="module")
def questions(tiny_cfg):
    return held_out_questions(tiny_cfg)


def test_ground_truth_answers_score_perfectly(questions):
    truth = {t: [e.answer for e in exs] for t, exs in questions.items()}
    failures = []
    m = score(questions, truth, failures)
    assert failures == [] and m["parse_failure_rate"] == 0
    assert m["depth_delta1"] == 1.0 and m["depth_abs_rel"] < 0.01  # answers are rounded to 1 cm
    assert m["corr_epe_mean"] == 0.0 and m["object_accuracy"] == 1.0
    assert m["pose_rot_err_deg"] < 0.2 and m["pose_trans_err_deg"] < 1.0 and m["pose_auc30"] > 95


def test_unparseable_answers_are_wrong_and_logged(questions):
    junk = {t: ["I cannot tell."] * len(exs) for t, exs in questions.items()}
    failures = []
    m = score(questions, junk, failures)
    n = sum(len(exs) for exs in questions.values())
    assert len(failures) == n and m["parse_failure_rate"] == 1.0
    assert m["depth_delta1"] == 0.0 and m["depth_abs_rel"] == pytest.approx(1.0, abs=1e-3)
    assert m["corr_epe_mean"] >= 500 and m["object_accuracy"] == 0.0
    assert m["pose_rot_err_deg"] == 180.0 and m["pose_trans_err_deg"] == 90.0 and m["pose_auc30"] == 0.0


def test_baselines_go_through_the_same_parser(questions):
    stats = {
        "depth_median": 3.0,
        "distance_median": 1.0,
        "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0},
    }
    answers = baseline_answers(questions, stats)
    failures = []
    m = score(questions, answers, failures)
    assert failures == []
    assert m["corr_epe_mean"] > 0 and m["pose_trans_err_deg"] == 90.0  # identity: no translation direction


def test_prior_baseline_answers_the_training_statistics(questions):
    """The two-view prior: query + median offset, median angle / yaw-pitch-roll, medoid direction,
    best-AbsRel distance."""
    import numpy as np

    from vlm3 import prompts as P

    stats = {
        "depth_median": 3.0,
        "distance_median": 1.0,
        "corr_offset_median": [40.0, -2000.0],
        "angle_median": 10.0,
        "ypr_median": [5.0, 0.0, 0.0],
        "direction_medoid": [0.0, 0.0, 1.0],
        "distance_abs_rel_best": 0.5,
        "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0},
    }
    answers = baseline_answers(questions, stats, prior=True)
    for e, t in zip(questions["correspondence"], answers["correspondence"]):
        assert P.parse_xy(t) == pytest.approx([min(e.target["query"][0] + 40, 999), 0.0], abs=0.5)  # clipped
    failures = []
    m = score(questions, answers, failures)
    assert failures == []
    angles = np.array([e.target["angle"] for e in questions["pose"] if e.kind == "angle"])
    assert m["pose_angle_err_deg"] == pytest.approx(
        np.abs(angles - 10.0).mean(), abs=0.06
    )  # answers: 0.1 deg
    t_gt = np.array([e.target["t_unit"] for e in questions["pose"] if e.kind == "direction"])
    forward = np.degrees(
        np.arccos(np.abs(np.clip(t_gt[:, 2], -1, 1)))
    ).mean()  # sign-invariant angle to (0, 0, 1)
    assert m["pose_trans_err_deg"] == pytest.approx(forward, abs=0.5)
    dist = np.array([e.target["distance"] for e in questions["pose"] if e.kind == "distance"])
    assert m["pose_distance_abs_rel"] == pytest.approx(np.mean(np.abs(0.5 - dist) / dist), abs=0.01)
    identity = score(questions, baseline_answers(questions, stats))
    assert identity["pose_trans_err_deg"] == 90.0 and m["pose_trans_err_deg"] != 90.0


def test_turned_diagnostic_asks_rotations_of_the_same_pairs(tiny_cfg, cfg_overrides, questions, capsys):
    """--turned: the held-out pairs' rotations with the second camera turned in place; the CLI
    scores the identity baseline on them without a checkpoint."""
    turned = held_out_questions(tiny_cfg, turned=True)
    assert set(turned) == {"correspondence", "pose"}
    assert {e.kind for e in turned["pose"]} == {"angle", "ypr"}
    real = [e for e in questions["pose"] if e.kind == "ypr"]
    turned_ypr = [e for e in turned["pose"] if e.kind == "ypr"]
    assert len(turned_ypr) == len(real) > 0
    for a, b in zip(turned_ypr, real):
        assert a.target["ypr"] == pytest.approx(b.target["ypr"], abs=1e-6)
    assert all(e.target["distance"] < 1e-5 and e.target["pair"][2][0] == "turn" for e in turned["pose"])
    main(["--baseline", "--turned", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {
        "corr_epe_mean",
        "corr_epe_median",
        "pose_rot_err_deg",
        "pose_angle_err_deg",
        "parse_failure_rate",
    }
    assert metrics["corr_epe_mean"] > 0 and metrics["parse_failure_rate"] == 0
    with pytest.raises(SystemExit):
        main(["--turned", *cfg_overrides])  # neither a checkpoint nor --baseline


def test_shifted_diagnostic_asks_views_against_moved_copies(tiny_cfg, cfg_overrides, capsys):
    shifted = held_out_questions(tiny_cfg, shifted=5)
    assert (
        set(shifted) == {"correspondence"} and len(shifted["correspondence"]) == tiny_cfg.eval.correspondence
    )
    assert any(e.target["match"] != e.target["query"] for e in shifted["correspondence"])
    main(["--baseline", "--shifted", "5", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert (
        set(metrics) == {"corr_epe_mean", "corr_epe_median", "parse_failure_rate"}
        and metrics["corr_epe_mean"] > 0
    )


def test_by_path_splits_the_two_view_questions(tiny_cfg, cfg_overrides, questions, capsys):
    """--by-path: the correspondence and pose questions partitioned by camera path; true answers get
    every yaw sign, identity's yaw 0 none."""
    from vlm3.evaluate import by_path, path_kind
    from vlm3.train import scene_cache

    cache = scene_cache(tiny_cfg, "test")
    truth = {t: [e.answer for e in exs] for t, exs in questions.items()}
    split = by_path(questions, truth, cache)
    assert set(split) == {path_kind(cache, s) for s in range(len(cache))} and set(split) <= {
        "orbit",
        "forward",
    }
    assert sum(m["correspondences"] for m in split.values()) == len(questions["correspondence"])
    assert sum(m["pose_pairs"] for m in split.values()) == len(questions["pose"]) // 4
    turning = [m for m in split.values() if "pose_yaw_sign_acc" in m]
    assert turning, "some held-out pair turns by 1 deg or more"
    for m in split.values():
        assert m["corr_epe_mean"] < 1e-9 and m["pose_rot_err_deg"] < 0.2
    assert all(m["pose_yaw_sign_acc"] == 1.0 for m in turning)
    stats = {
        "depth_median": 3.0,
        "distance_median": 1.0,
        "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0},
    }
    identity = by_path(questions, baseline_answers(questions, stats), cache)
    assert all(
        identity[k]["pose_yaw_sign_acc"] == 0.0 and identity[k]["pose_yaw_pearson"] is None
        for k in identity
        if "pose_yaw_sign_acc" in identity[k]
    )
    main(["--baseline", "--by-path", *cfg_overrides])
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics["by_path"]) == set(split)
