"""A weighted mixture of datasets with a fixed, seeded draw per index (DepthLM-style data mixtures).

Item i of `MixtureDataset(datasets, weights, length, seed)` is `(name, datasets[name][j])`: the
source `name` is drawn with probability weights[name] / sum(weights) and j uniformly from that
dataset (with replacement across items). Both draws are a pure function of (seed, epoch, i),
computed with a counter-based hash (splitmix64) rather than a stateful generator, so item i is
the same in every DataLoader worker, in every process and on every run, and `counts()` can
compute a whole epoch's draws at once. `set_epoch(e)` changes the draws for epoch e; without it
every epoch repeats epoch 0.

The pair `(name, item)` is returned, rather than writing the name into the item, so that items of
any type (a `Sample`, a dict, a tensor) work and nothing in a source dataset's output is changed.
"""

from __future__ import annotations

import math
import numbers
from typing import Mapping

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays: a bijective, well-mixed hash."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _uniform(seed: int, epoch: int, stream: int, index: np.ndarray) -> np.ndarray:
    """float64 [len(index)] in [0, 1), a pure function of (seed, epoch, stream, index)."""
    key = np.array([seed & _MASK64], dtype=np.uint64)
    for part in (epoch, stream):
        key = _splitmix64(key ^ np.uint64(part & _MASK64))
    h = _splitmix64(key ^ index.astype(np.uint64))  # [n]
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


class MixtureDataset(torch.utils.data.Dataset):
    """`length` items drawn from `datasets` in proportion to `weights` (see the module docstring).

    `weights` must have exactly the keys of `datasets`, each finite and non-negative, not all zero;
    a dataset with positive weight must not be empty. ValueError names the bad key otherwise.
    """

    def __init__(
        self,
        datasets: Mapping[str, torch.utils.data.Dataset],
        weights: Mapping[str, float],
        length: int,
        seed: int = 0,
    ):
        for key in set(weights) - set(datasets):
            raise ValueError(f"weights[{key!r}]: no dataset of that name (datasets: {sorted(datasets)})")
        for key in datasets:
            if key not in weights:
                raise ValueError(f"weights[{key!r}]: missing; give every dataset a weight (0 leaves it out)")
            w = weights[key]
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"weights[{key!r}] = {w!r}: expected a finite, non-negative number")
        if not any(weights[k] > 0 for k in datasets):
            raise ValueError(f"weights: all zero for {sorted(datasets)}; at least one must be positive")
        for key in datasets:
            if weights[key] > 0 and len(datasets[key]) == 0:
                raise ValueError(f"datasets[{key!r}] is empty but has weight {weights[key]}")
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.datasets = dict(datasets)
        self.names = list(datasets)
        self.weights = {k: float(weights[k]) for k in self.names}
        total = sum(self.weights.values())
        self._cum = np.cumsum([self.weights[k] / total for k in self.names])  # [S]
        self._cum[-1] = 1.0  # no rounding gap at the top
        self.length, self.seed, self.epoch = int(length), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the items of epoch `epoch` from now on (call it in every worker's copy or before
        the DataLoader starts its workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source position in `names` [n], item index within that source [n]) for `index` [n]."""
        u_source = _uniform(self.seed, self.epoch, 0, index)
        u_item = _uniform(self.seed, self.epoch, 1, index)
        # The first s with cum[s] > u: a zero-weight source (cum equal to its predecessor) is never drawn.
        source = np.searchsorted(self._cum, u_source, side="right")
        sizes = np.array([len(self.datasets[k]) for k in self.names])[source]
        return source, np.minimum((u_item * sizes).astype(np.int64), np.maximum(sizes - 1, 0))

    def source(self, i: int) -> tuple[str, int]:
        """(dataset name, index in that dataset) of item i in the current epoch."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a mixture of length {self.length}")
        s, j = self._draw(np.array([i]))
        return self.names[int(s[0])], int(j[0])

    def __getitem__(self, i: int):
        name, j = self.source(i)
        return name, self.datasets[name][j]

    def counts(self) -> dict[str, int]:
        """How many of the `length` items of the current epoch come from each dataset."""
        source, _ = self._draw(np.arange(self.length))
        n = np.bincount(source, minlength=len(self.names))
        return {k: int(n[s]) for s, k in enumerate(self.names)}
