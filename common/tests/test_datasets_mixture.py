"""MixtureDataset: proportions follow the weights, draws are a pure function of (seed, epoch, index)."""

import pickle

import pytest

from common.datasets.mixture import MixtureDataset

DATASETS = {"a": list(range(10)), "b": [f"b{i}" for i in range(5)], "c": []}
WEIGHTS = {"a": 3.0, "b": 1.0, "c": 0.0}


def test_proportions_follow_weights():
    mix = MixtureDataset(DATASETS, WEIGHTS, length=20000, seed=0)
    counts = mix.counts()
    assert counts["c"] == 0 and sum(counts.values()) == 20000
    assert counts["a"] / 20000 == pytest.approx(0.75, abs=0.015)  # 5 sigma is ~0.015
    items = {mix[i][1] for i in range(2000) if mix[i][0] == "a"}
    assert items == set(range(10))  # every item of a source is reachable
    name, item = mix[3]
    assert item in DATASETS[name]


def test_deterministic_per_seed_index_and_epoch():
    mix = MixtureDataset(DATASETS, WEIGHTS, length=500, seed=7)
    first = [mix[i] for i in range(500)]
    assert [MixtureDataset(DATASETS, WEIGHTS, length=500, seed=7)[i] for i in range(500)] == first
    assert [pickle.loads(pickle.dumps(mix))[i] for i in range(500)] == first  # as in a worker
    assert [mix[i] for i in reversed(range(500))][::-1] == first  # order of access does not matter
    assert [MixtureDataset(DATASETS, WEIGHTS, length=500, seed=8)[i] for i in range(500)] != first
    mix.set_epoch(1)
    assert [mix[i] for i in range(500)] != first
    mix.set_epoch(0)
    assert [mix[i] for i in range(500)] == first


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"a": float("nan"), "b": 1.0, "c": 0.0}, r"weights\['a'\]"),
        ({"a": 1.0, "b": -1.0, "c": 0.0}, r"weights\['b'\]"),
        ({"a": 1.0, "b": float("inf"), "c": 0.0}, r"weights\['b'\]"),
        ({"a": 0.0, "b": 0.0, "c": 0.0}, "all zero"),
        ({"a": 1.0, "b": 1.0}, r"weights\['c'\]: missing"),
        ({"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}, r"weights\['d'\]"),
        ({"a": 1.0, "b": 1.0, "c": 2.0}, r"datasets\['c'\] is empty"),
        ({"a": "1", "b": 1.0, "c": 0.0}, r"weights\['a'\]"),
    ],
)
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        MixtureDataset(DATASETS, weights, length=10)


def test_index_out_of_range():
    with pytest.raises(IndexError):
        MixtureDataset(DATASETS, WEIGHTS, length=10)[10]
