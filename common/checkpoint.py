"""Weights and optimizer state as safetensors (no pickles), for the packages' checkpoints.

Adam/AdamW keep per-parameter tensors ("exp_avg", "exp_avg_sq") and a step; each is stored as
"<param index>.<name>". Hyper-parameters (param_groups) are not stored: the optimizer rebuilt from
the config already has them.

Reading: `load_safetensors(path)` and `check_weights_folder(folder)` turn a missing, truncated or
pickled file into one `CheckpointError` line naming the file ("not a readable safetensors file"),
where safetensors itself raises `SafetensorError: Error while deserializing header: header too
large`, which names no file. A folder that holds only pickled weights (`pytorch_model.bin`,
`diffusion_pytorch_model.bin`, `*.pt`) is refused: they are never loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from common.errors import CheckpointError

PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def load_safetensors(path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file; a CheckpointError naming it if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found (expected a .safetensors file)")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({_first_line(exc)})") from None


def check_safetensors(path) -> None:
    """Read the header of a .safetensors file (cheap: no tensor is loaded); CheckpointError if it
    is missing, truncated or not safetensors at all (a pickle renamed .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found (expected a .safetensors file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({_first_line(exc)})") from None


def check_weights_folder(folder) -> list[Path]:
    """The .safetensors files of a model folder (for `from_pretrained(..., use_safetensors=True)`),
    each checked with `check_safetensors`. A missing folder, or one without safetensors weights (only
    pickled ones, which are not loaded), is a CheckpointError naming the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(folder, "model folder not found")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_SUFFIXES)
        found = (f"; found pickled weights {pickled}, which are not loaded (convert them to safetensors)"
                 if pickled else "")
        raise CheckpointError(folder, f"no *.safetensors weights in the model folder{found}")
    for f in files:
        check_safetensors(f)
    return files


def save_optimizer_state(optimizer: torch.optim.Optimizer, path) -> None:
    """Write the optimizer's per-parameter state to `path` (a .safetensors file)."""
    tensors = {f"{i}.{name}": torch.as_tensor(value).detach().cpu().contiguous()
               for i, state in optimizer.state_dict()["state"].items() for name, value in state.items()}
    save_file(tensors, str(Path(path)))


def load_optimizer_state(optimizer: torch.optim.Optimizer, path) -> None:
    """Restore the state written by `save_optimizer_state` into an optimizer over the same parameters."""
    state: dict[int, dict] = {}
    for key, value in load_safetensors(path).items():
        i, sep, name = key.partition(".")
        if not sep or not i.isdigit():
            raise CheckpointError(path, f"tensor {key!r}: expected '<param index>.<state name>' (optimizer)")
        state.setdefault(int(i), {})[name] = value
    sd = optimizer.state_dict()
    n_params = sum(len(g["params"]) for g in sd["param_groups"])
    if state and max(state) >= n_params:
        raise CheckpointError(path, f"state of parameter {max(state)}, the optimizer has {n_params}")
    sd["state"] = state
    optimizer.load_state_dict(sd)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
