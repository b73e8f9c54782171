"""BLEU, ROUGE-L and CIDEr-D against hand-worked cases (coco-caption's definitions)."""

import math

import numpy as np
import pytest

from common.metrics import bleu, cider, rouge_l


def test_bleu_hand_counts():
    # candidate / reference: 1-grams 5 of 6 match (clipped), 2-grams 3 of 5, 3-grams 1 of 4, 4-grams 0 of 3
    pred, ref = ["The cat sat on the mat."], [["the cat is on the mat"]]
    assert bleu(pred, ref, n=3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3), rel=1e-6)
    assert bleu(pred, ref, n=4) < 1e-3  # no 4-gram match
    assert bleu(["a b c d"], [["a b c d", "x"]]) == pytest.approx(1.0)
    # brevity: 2 tokens against the closest reference of 4 -> exp(1 - 4 / 2)
    assert bleu(["a b"], [["a b c d"]], n=1) == pytest.approx(math.exp(-1), rel=1e-6)


def test_rouge_l_hand_worked():
    out = rouge_l(["a b c d", "a b"], [["a c d e"], ["a b c d", "z"]])
    assert out[0] == pytest.approx(0.75)  # LCS 3: P = R = 3/4
    p, r = 1.0, 0.5  # LCS 2 of 2 and of 4; "z" has a lower recall
    assert out[1] == pytest.approx((1 + 1.44) * p * r / (r + 1.44 * p))


def test_cider_identical_disjoint_corpus():
    # Two items with no shared n-gram: idf = log 2 for every n-gram and each cosine is 1, but an n
    # longer than the sentence has no n-grams and scores 0: 2 tokens -> 10 * 2 / 4, 3 tokens -> 10 * 3 / 4.
    out = cider(["red box", "blue cone left"], [["red box"], ["blue cone left"]])
    assert np.allclose(out, [5.0, 7.5])
    worse = cider(["red cone", "blue cone left"], [["red box"], ["blue cone left"]])
    assert worse[0] < 5.0 and worse[1] == pytest.approx(7.5)


def test_bad_corpus():
    with pytest.raises(ValueError, match="same non-zero length"):
        bleu(["a"], [])
    with pytest.raises(ValueError, match="at least one reference"):
        rouge_l(["a"], [[]])
