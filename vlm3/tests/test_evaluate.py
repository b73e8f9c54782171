"""Scoring with common.metrics: perfect answers score perfectly, unparseable ones count as wrong."""

import pytest

from vlm3.evaluate import baseline_answers, score, held_out_questions


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
    stats = {"depth_median": 3.0, "distance_median": 1.0,
             "object": {"closer": True, "left": False, "taller": True, "distance": 2.0, "height": 1.0}}
    answers = baseline_answers(questions, stats)
    failures = []
    m = score(questions, answers, failures)
    assert failures == []
    assert m["corr_epe_mean"] > 0 and m["pose_trans_err_deg"] == 90.0  # identity: no translation direction
