"""Weights and optimizer state as safetensors (no pickles), for the packages' checkpoints.

Adam/AdamW keep per-parameter tensors ("exp_avg", "exp_avg_sq") and a step; each is stored as
"<param index>.<name>". Hyper-parameters (param_groups) are not stored: the optimizer rebuilt from
the config already has them.

Reading: `load_safetensors(path)` and `check_weights_folder(folder)` turn a missing, truncated or
pickled file into one `CheckpointError` line naming the file ("not a readable safetensors file"),
where safetensors itself raises `SafetensorError: Error while deserializing header: header too
large`, which names no file. A folder that holds only pickled weights (`pytorch_model.bin`,
`diffusion_pytorch_model.bin`, `*.pt`) is refused: they are never loaded.

A training checkpoint folder is written with `atomic_checkpoint` and found again on `--resume` with
`checkpoint_to_resume`: a kill at any moment of a save leaves a complete checkpoint, either
`<folder>` or (killed between the two renames) `<folder>.old`, and resuming finds it. The layout
inside the folder is each package's own.

    with atomic_checkpoint(out / "checkpoint") as tmp:          # saving
        model.save_pretrained(tmp)
        save_optimizer_state(optimizer, tmp / "optimizer.safetensors")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))

    ckpt = checkpoint_to_resume(out / "checkpoint", ("optimizer.safetensors", "trainer_state.json"),
                                missing_ok=True)               # resuming: None = start at step 0
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


@contextmanager
def atomic_checkpoint(folder) -> Iterator[Path]:
    """Write the checkpoint folder `folder` so that a kill at any moment leaves a complete checkpoint
    for `checkpoint_to_resume`. Yields `<folder>.tmp`, new and empty, to write into; once the block
    ends without an error, `<folder>` is renamed to `<folder>.old`, `<folder>.tmp` to `<folder>`, and
    `<folder>.old` removed. `<folder>.old` is removed only while a complete `<folder>` exists: after a
    resume from `<folder>.old` (no `<folder>`), it stays until the new `<folder>` is in place. An
    error in the block leaves `<folder>.tmp` as a kill would; the next save replaces it."""
    folder = Path(folder)
    tmp, old = _sibling(folder, ".tmp"), _sibling(folder, ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)  # left by a save killed while removing it
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_to_resume(folder, required: Sequence[str], missing_ok: bool = False) -> Path | None:
    """The checkpoint folder to resume from: `folder` if it is complete, else `<folder>.old` if that
    is (a save killed between its two renames leaves only `<folder>.old`, one checkpoint older; one
    line on stderr says it is used). Complete: each file of `required` (paths relative to the folder)
    is there, and those ending in .safetensors have a readable header.

    Otherwise a CheckpointError naming `folder`: no checkpoint at all ("no checkpoint to resume
    from", saying when only `<folder>.tmp`, a save that never finished, is there), or incomplete ones.
    With `missing_ok`, no checkpoint at all (neither `<folder>` nor `<folder>.old`; a `<folder>.tmp`
    alone is a first save that never finished) returns None instead: the run starts at step 0."""
    folder = Path(folder)
    old, tmp = _sibling(folder, ".old"), _sibling(folder, ".tmp")
    problems = []
    for candidate in (folder, old):
        if not candidate.exists():
            continue
        problem = _incomplete(candidate, required)
        if problem is None:
            if candidate == old:
                why = "missing" if not folder.exists() else "incomplete"
                print(f"{folder}: {why} (a save was interrupted); resuming from {old}", file=sys.stderr)
            return candidate
        problems.append(f"{candidate.name} {problem}")
    if problems:
        raise CheckpointError(folder, f"no complete checkpoint to resume from ({'; '.join(problems)})")
    if missing_ok:
        return None
    only_tmp = f"only {tmp.name}, a save that never finished; " if tmp.exists() else ""
    raise CheckpointError(folder, f"no checkpoint to resume from ({only_tmp}expected a folder with "
                                  f"{', '.join(required)})")


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def _incomplete(folder: Path, required: Sequence[str]) -> str | None:
    """Why `folder` is not a complete checkpoint, or None."""
    if not folder.is_dir():
        return "is not a folder"
    for name in required:
        path = folder / name
        if not path.is_file():
            return f"has no {name}"
        if path.suffix == ".safetensors":
            try:
                check_safetensors(path)
            except CheckpointError as exc:
                return f"has an unreadable {name} ({exc.problem})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
