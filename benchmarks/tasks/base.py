"""What every shared task is: fixed held-out inputs, a small protocol a method answers, scoring with
`common.metrics` only, and trivial baselines.

A task turns the held-out scenes into items. An item is a (query, truth) pair: the query is what a
method sees (a dataclass of the task's module), the truth stays with the task. A method answers a
query with the task's answer dataclass; the task scores each answer into per-item values
{metric: float}; a metric an item does not have (an outdoor scene's indoor metric) is left out.
Every method of a run answers the same items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.datasets import SceneDataset
from common.datasets.sample import Sample

# The fixed held-out inputs: the synthetic test split of `make data` (generator version 1, seed 0).
DATA_ROOT = Path("data/synthetic")
SPLIT = "test"
TRAIN_SPLIT = "train"


@dataclass
class Item:
    query: Any  # the task's query dataclass: what a method sees
    truth: Any  # what the task scores against


@dataclass
class Metric:
    name: str
    higher_is_better: bool
    protocol: str  # whose protocol the number follows, shown beside it


@dataclass
class Participant:
    """A method the task is meant to compare (the issue's list), with its adapter's name."""

    method: str
    note: str = ""


@dataclass
class TaskData:
    """The samples of the held-out split a task reads, and where they came from (for results.json)."""

    root: Path
    split: str
    samples: list[Sample]
    data: dict = field(default_factory=dict)


class Task:
    """Subclasses set `name`, `title`, `protocol`, `metrics`, `participants` and implement `items`,
    `score` and `baselines`."""

    name: str = ""
    title: str = ""
    protocol: str = ""  # what a method is given and what it returns, in a few lines
    data_note: str = ""  # where the task's items come from when not the held-out split
    metrics: list[Metric] = []
    participants: list[Participant] = []

    def items(self, data: TaskData) -> list[Item]:
        raise NotImplementedError

    def score(self, item: Item, answer) -> dict[str, float]:
        raise NotImplementedError

    def corpus(self, items: list[Item], answers: list) -> dict[str, float]:
        """Metrics of a whole set of answers that are not means of per-item values (corpus BLEU,
        CIDEr's document frequencies); names must be `metrics` entries."""
        return {}

    def figures(self, items: list[Item], answers: dict[str, list]) -> list[tuple[str, bytes]]:
        """(title, PNG bytes) of the task's figures from every row's answers {name: answers}."""
        return []

    def baselines(self, data: TaskData, train: TaskData | None) -> dict[str, Any]:
        """{name: callable(query) -> answer}: the task's trivial baselines (`train` is the train split
        where a baseline needs its statistics, else None)."""
        return {}

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)


def load_split(root=DATA_ROOT, split: str = SPLIT, scenes: int = 0, load=("depth", "normals")) -> TaskData:
    """The scenes of `root/split` (the first `scenes` when > 0), with the data description of results.json."""
    root = Path(root)
    if not (root / split / "index.json").is_file():
        raise FileNotFoundError(f"{root / split}/index.json: not found (run `make data`)")
    dataset = SceneDataset(root, split, load=load)
    n = len(dataset) if scenes <= 0 else min(scenes, len(dataset))
    samples = [dataset[i] for i in range(n)]
    generator = dataset.index.get("generator", {})
    data = {
        "name": "synthetic" if generator.get("name") == "common.synthetic" else root.name,
        "split": split,
        "generator_version": str(generator.get("version", "-")),
        "scenes": n,
        "seed": generator.get("seed", "-"),
        "views": samples[0].num_views if samples else 0,
        "size": list(samples[0].image_size) if samples else [],
    }
    return TaskData(root, split, samples, data)


def scene_rng(*key) -> np.random.Generator:
    """A generator fixed by a task name and a scene index, so every method sees the same items."""
    import zlib

    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in key])
