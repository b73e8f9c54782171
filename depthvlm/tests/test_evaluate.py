"""depthvlm.evaluate: QA scoring and the paired test behind the paper's claim."""

import pytest

from depthvlm.evaluate import paired_qa_tests, qa_scores


def _questions(n):
    closer = [{"type": "closer", "answer": "A"} for _ in range(n)]
    how_far = [{"type": "how_far", "value": 2.0} for _ in range(n)]
    return closer + how_far


def test_paired_qa_tests_split_the_difference_by_question_type():
    """One model right on every "closer" question, the other always wrong there; both answer "how far"
    alike: the difference is all in qa_closer, none in qa_how_far."""
    qs = _questions(40)
    ours = [(q, "A" if q["type"] == "closer" else "2.0") for q in qs]
    other = [(q, "B" if q["type"] == "closer" else "2.0") for q in qs]
    tests = paired_qa_tests(ours, other, seed=0)
    assert set(tests) == {"qa_accuracy", "qa_closer", "qa_how_far"}
    assert tests["qa_closer"]["difference"] == pytest.approx(1.0) and tests["qa_closer"]["p_value"] < 0.01
    assert tests["qa_how_far"]["difference"] == pytest.approx(0.0)
    assert tests["qa_accuracy"]["difference"] == pytest.approx(0.5)
    assert qa_scores(ours)["qa_closer"] - qa_scores(other)["qa_closer"] == pytest.approx(1.0)


def test_paired_qa_tests_need_the_same_questions():
    qs = _questions(3)
    ours = [(q, "A") for q in qs]
    with pytest.raises(ValueError, match="expected the same questions"):
        paired_qa_tests(ours, [(dict(q), "A") for q in qs])
    with pytest.raises(ValueError, match="expected the same questions"):
        paired_qa_tests(ours, ours[:-1])
