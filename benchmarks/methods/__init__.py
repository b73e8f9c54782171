"""One adapter per method: it loads the method's trained tiny model and answers the tasks' protocols.

An adapter is a `Method` subclass in `benchmarks/methods/<name>.py` registered in `ADAPTERS`. It
never changes its package: it calls the package's public API (loading, prediction) and converts
between the task's query / answer dataclasses and the package's own inputs. `load` finds the run
that `make reproduce-<paper>` leaves under `results/<paper>/`, or, with `train_missing`, trains one
with the package's own entry point; otherwise it raises `Unavailable` with the reason, and the
leaderboard shows the reason in the method's row.
"""

from __future__ import annotations

import importlib
from pathlib import Path


class Unavailable(RuntimeError):
    """The method cannot run here (no trained run and training not allowed, a missing peer)."""


class Method:
    name: str = ""
    paper: str = ""  # the package, "peer" or "baseline"
    tasks: tuple[str, ...] = ()

    def __init__(self, checkpoint: str | Path | None = None, train_missing: bool = False):
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.train_missing = train_missing

    def load(self) -> None:
        """Load the trained model (raise `Unavailable` with a one-line reason)."""

    def answer(self, task: str, queries: list) -> list:
        """Answers to `queries` of `task`, in order."""
        raise NotImplementedError

    def parameters(self) -> int | None:
        """Parameters of the loaded model (None for a method without one, e.g. COLMAP)."""
        model = getattr(self, "model", None)
        return None if model is None else sum(p.numel() for p in model.parameters())


# name -> "module:Class"; a module is imported only when its method runs.
ADAPTERS = {
    "g2vlm": "benchmarks.methods.g2vlm:G2VLMMethod",
    "ide3d": "benchmarks.methods.ide3d:IDE3DMethod",
    "ivgt": "benchmarks.methods.ivgt:IVGTMethod",
    "ivgt-explicit": "benchmarks.methods.ivgt:IVGTExplicitMethod",
    "depthvlm": "benchmarks.methods.depthvlm:DepthVLMMethod",
    "vlm3": "benchmarks.methods.vlm3:VLM3Method",
    "endogsim": "benchmarks.methods.endogsim:EndoGSimMethod",
    "endogsim-prior": "benchmarks.methods.endogsim:EndoGSimPriorMethod",
    "colmap": "benchmarks.methods.colmap:COLMAPMethod",
    "tsdf-fusion": "benchmarks.methods.tsdf:TSDFFusionMethod",
}


def build(name: str, **kwargs) -> Method:
    if name not in ADAPTERS:
        raise ValueError(f"method {name!r}: no adapter; available: {sorted(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def find_run(candidates: list[str | Path], marker: str) -> Path | None:
    """The first folder of `candidates` that holds `marker` (a file a finished save writes)."""
    for c in candidates:
        if (Path(c) / marker).exists():
            return Path(c)
    return None
