"""Uncertainty of benchmark numbers: percentile bootstrap CIs and a paired bootstrap test.

Both resample items (scenes, questions, image pairs) with replacement from per-item values,
deterministically for a given seed.
"""

from __future__ import annotations

import numpy as np

from ._utils import as_numpy, check_finite, check_same_shape

_CHUNK_ELEMENTS = 2_000_000  # resample in chunks of rows to bound memory for long value lists


def _values(x, name: str) -> np.ndarray:
    x = as_numpy(x, name)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D sequence of per-item values")
    check_finite(x, name)
    return x


def _apply(statistic, samples: np.ndarray) -> np.ndarray:
    """statistic over the last axis of samples [k, n] -> [k]; vectorised when it takes `axis`."""
    try:
        out = np.asarray(statistic(samples, axis=-1), dtype=np.float64)
        if out.shape == samples.shape[:-1]:
            return out
    except TypeError:
        pass
    return np.array([statistic(row) for row in samples], dtype=np.float64)


def _bootstrap_indices(n: int, n_resamples: int, rng: np.random.Generator):
    """Yield index arrays [k, n] (k rows per chunk) of resampled items."""
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))


def bootstrap_ci(
    values, statistic=np.mean, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple:
    """Percentile bootstrap confidence interval (low, high) of statistic(values).

    Resamples the n items with replacement n_resamples times, evaluates the statistic on each
    resample and returns the (1 - confidence)/2 and (1 + confidence)/2 percentiles (numpy's
    linear interpolation). `statistic` is called with axis=-1 when it accepts it (np.mean,
    np.median), else once per resample. Same as scipy.stats.bootstrap(method="percentile") up to
    Monte-Carlo noise.
    """
    values = _values(values, "values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples: must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    stats = np.concatenate(
        [_apply(statistic, values[idx]) for idx in _bootstrap_indices(values.size, n_resamples, rng)]
    )
    alpha = 1 - confidence
    low, high = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def paired_bootstrap_test(
    a, b, statistic=np.mean, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Paired bootstrap comparison of two methods on the same items (Koehn 2004;
    Berg-Kirkpatrick et al. 2012).

    a, b: per-item values of the two methods, item i evaluated by both. difference =
    statistic(a) - statistic(b). Each resample draws one set of item indices and applies it to
    both, giving delta* = statistic(a*) - statistic(b*). ci_low / ci_high: percentile interval of
    delta* at `confidence`. p_value (two-sided, H0: no difference): the bootstrap distribution is
    centred on the observed difference to simulate H0 (Berg-Kirkpatrick's "delta* > 2 delta"
    test made two-sided), p = (1 + #{|delta* - difference| >= |difference|}) / (1 + n_resamples);
    the +1 keeps p > 0 for a finite number of resamples.
    """
    a = _values(a, "a")
    b = _values(b, "b")
    check_same_shape(a, b, "a", "b")
    if n_resamples < 1:
        raise ValueError(f"n_resamples: must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    difference = float(statistic(a) - statistic(b))
    rng = np.random.default_rng(seed)
    deltas = np.concatenate(
        [
            _apply(statistic, a[idx]) - _apply(statistic, b[idx])
            for idx in _bootstrap_indices(a.size, n_resamples, rng)
        ]
    )
    alpha = 1 - confidence
    ci_low, ci_high = np.percentile(deltas, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    extreme = np.sum(np.abs(deltas - difference) >= abs(difference))
    return {
        "difference": difference,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "p_value": float((1 + extreme) / (1 + n_resamples)),
    }
