"""Input helpers shared by the metric modules: accept torch tensors, numpy arrays or lists."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(x, name: str, dtype=np.float64) -> np.ndarray:
    """Convert `x` (torch tensor, numpy array, list or scalar) to a numpy array of `dtype`.

    Tensors are detached and moved to the CPU; the caller's tensor is never modified.
    """
    if x is None:
        raise ValueError(f"{name}: expected an array or tensor, got None")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a {np.dtype(dtype).name} array ({e})") from None


def as_mask(mask, name: str, shape: tuple) -> np.ndarray:
    """A boolean mask of exactly `shape` (no silent broadcasting of a wrong-sized mask)."""
    m = as_numpy(mask, name, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {m.shape}")
    return m


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def check_last_dim(x: np.ndarray, name: str, size: int) -> None:
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected shape [..., {size}], got {x.shape}")


def check_finite(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: contains NaN or inf")
