"""Scoring with common.metrics: perfect answers score perfectly, unparseable ones count as wrong."""


import pytest

from vlm3.evaluate import baseline_answers, held_out_questions, score


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


def test_more_held_out_pose_pairs_extend_the_same_pairs(tiny_cfg):
    """eval.pose_pairs = N draws the first pairs of any larger N the same (the long profile scores
    the main table's pairs and more)."""
    from dataclasses import replace

    few = held_out_questions(replace(tiny_cfg, eval=replace(tiny_cfg.eval, pose_pairs=3)))["pose"]
    more = held_out_questions(replace(tiny_cfg, eval=replace(tiny_cfg.eval, pose_pairs=9)))["pose"]
    assert len(more) == 3 * len(few)
    assert [(e.target["pair"], e.prompt, e.answer) for e in few] == [
        (e.target["pair"], e.prompt, e.answer) for e in more[: len(few)]
    ]
