import numpy as np
import pytest
from scipy import stats

from common.metrics import bootstrap_ci, paired_bootstrap_test


def test_bootstrap_ci_constant_and_deterministic():
    assert bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(values, seed=1) == bootstrap_ci(values, seed=1)
    assert bootstrap_ci(values, seed=1) != bootstrap_ci(values, seed=2)


def test_bootstrap_ci_two_values_hand():
    # values (0, 1): each resample mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles of many resamples are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000) == (0.0, 1.0)


def test_bootstrap_ci_matches_scipy():
    values = np.random.default_rng(2).exponential(size=200)
    low, high = bootstrap_ci(values, n_resamples=4000)
    ref = stats.bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", random_state=0
    ).confidence_interval
    width = ref.high - ref.low
    assert low == pytest.approx(ref.low, abs=0.05 * width)
    assert high == pytest.approx(ref.high, abs=0.05 * width)
    assert low < values.mean() < high


def test_bootstrap_statistic_without_axis_argument():
    values = np.random.default_rng(3).normal(size=30)
    vectorised = bootstrap_ci(values, statistic=np.median, n_resamples=500)
    looped = bootstrap_ci(values, statistic=lambda x: float(np.median(x)), n_resamples=500)
    assert looped == pytest.approx(vectorised)  # same seed, same resamples


def test_paired_test_identical_and_constant_shift():
    a = np.random.default_rng(4).uniform(size=40)
    same = paired_bootstrap_test(a, a, n_resamples=1000)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    shifted = paired_bootstrap_test(a + 1.0, a, n_resamples=999)
    assert shifted["difference"] == pytest.approx(1.0)
    assert shifted["ci_low"] == pytest.approx(1.0) and shifted["ci_high"] == pytest.approx(1.0)
    assert shifted["p_value"] == pytest.approx(1 / 1000)  # no resample as extreme as H0 needs


def test_paired_test_p_value_close_to_paired_t_test():
    rng = np.random.default_rng(5)
    b = rng.normal(size=400)
    a = b + rng.normal(0.1, 1.0, size=400)  # mean difference 0.1, sd 1 -> t about 2
    res = paired_bootstrap_test(a, b, n_resamples=5000)
    t_p = stats.ttest_rel(a, b).pvalue
    assert 0.005 < t_p < 0.2
    assert res["p_value"] == pytest.approx(t_p, abs=0.03)
    assert res["ci_low"] < res["difference"] < res["ci_high"]
    assert res["difference"] == pytest.approx(np.mean(a) - np.mean(b))


def test_bad_inputs():
    with pytest.raises(ValueError, match="values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, np.nan])
