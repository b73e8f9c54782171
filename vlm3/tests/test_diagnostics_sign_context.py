"""The sign-source diagnostic: its teacher-forced token scores agree with the model's own loss."""

import numpy as np
import pytest

from vlm3.data import QuestionBuilder, TaskSettings
from vlm3.diagnostics.sign_context import last_answer_nll, prefers_first, sign_sources
from vlm3.diagnostics.two_view import path_kind
from vlm3.scenes import SceneCache


@pytest.fixture(scope="module")
def pose_pair(data_root):
    cache = SceneCache(data_root, "test", zoom=(1.0, 1.0), seed=0)
    builder = QuestionBuilder(cache, TaskSettings(focal_pose=45))
    rng = np.random.default_rng(0)
    first = builder.pose(rng, kind="ypr")
    pair = tuple(first.target["pair"])
    return cache, [builder.pose(rng, kind=k, pair=pair) for k in ("ypr", "direction", "angle", "distance")]


def test_last_answer_nll_is_the_models_loss_split_by_turn(tiny_vlm, pose_pair):
    _, (ypr, direction, *_) = pose_pair
    one = last_answer_nll(tiny_vlm, ypr.images, [(ypr.prompt, ypr.answer)])
    batch = tiny_vlm.encode([ypr.images], [ypr.prompt], answers=[ypr.answer])
    assert len(one) == int((batch["labels"] != -100).sum())
    assert one.mean() == pytest.approx(float(tiny_vlm.loss(batch).detach()), rel=1e-4)
    # two turns: the first answer cannot see the second, so the loss over both answers is the
    # first asked alone plus the second's tokens after it
    two = last_answer_nll(tiny_vlm, ypr.images, [(direction.prompt, direction.answer), (ypr.prompt, ypr.answer)])
    first = last_answer_nll(tiny_vlm, ypr.images, [(direction.prompt, direction.answer)])
    both = tiny_vlm.encode([ypr.images], [direction.prompt], answers=[direction.answer],
                           turns=[[(ypr.prompt, ypr.answer)]])
    n = int((both["labels"] != -100).sum())
    assert len(two) == len(one) and n == len(first) + len(two)
    assert (first.sum() + two.sum()) / n == pytest.approx(float(tiny_vlm.loss(both).detach()), rel=1e-4)


def test_prefers_first_compares_the_first_differing_token():
    assert prefers_first(np.array([0.1, 0.5, 9.0]), np.array([0.1, 0.7, 0.0]))
    assert not prefers_first(np.array([0.1, 0.9]), np.array([0.1, 0.7]))


def test_sign_sources_scores_every_turning_pair_of_the_path(tiny_vlm, pose_pair):
    cache, questions = pose_pair
    ypr = questions[0]
    path = path_kind(cache, ypr.target["pair"][0])
    res = sign_sources(tiny_vlm, questions, cache, path)
    assert res["path"] == path and res["pairs"] == int(abs(ypr.target["ypr"][0]) >= 1.0)
    shares = [res[k] for k in ("yaw_alone", "yaw_after_true_direction", "yaw_follows_flipped_direction",
                               "direction_x_alone")]
    assert all((s is None) == (res["pairs"] == 0) for s in shares)
    assert all(s in (0.0, 1.0) for s in shares if s is not None)  # one pair: each share is 0 or 1
