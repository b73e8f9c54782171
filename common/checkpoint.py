"""Optimizer state as safetensors (no pickles), for the packages' atomic training checkpoints.

Adam/AdamW keep per-parameter tensors ("exp_avg", "exp_avg_sq") and a step; each is stored as
"<param index>.<name>". Hyper-parameters (param_groups) are not stored: the optimizer rebuilt from
the config already has them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save_optimizer_state(optimizer: torch.optim.Optimizer, path) -> None:
    """Write the optimizer's per-parameter state to `path` (a .safetensors file)."""
    tensors = {f"{i}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for i, state in optimizer.state_dict()["state"].items() for name, value in state.items()}
    save_file(tensors, str(Path(path)))


def load_optimizer_state(optimizer: torch.optim.Optimizer, path) -> None:
    """Restore the state written by `save_optimizer_state` into an optimizer over the same parameters."""
    state: dict[int, dict] = {}
    for key, value in load_file(str(Path(path))).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = value
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
