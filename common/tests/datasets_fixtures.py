"""Tiny files in the exact public layouts, written into a test's tmp_path (shared by test_datasets_*)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(path, h: int = 6, w: int = 8, value: int | None = None, seed: int = 0) -> np.ndarray:
    """Write an 8-bit RGB image (random, or constant `value`) and return its pixels [h, w, 3]."""
    arr = np.full((h, w, 3), value, np.uint8) if value is not None else np.random.default_rng(seed).integers(
        0, 256, (h, w, 3), dtype=np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return arr


def u16(path, arr) -> None:
    """Write a 16-bit single-channel PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr).astype(np.uint16)).save(path)


def gray(path, arr) -> None:
    """Write an 8-bit single-channel PNG."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr).astype(np.uint8)).save(path)


def matrix_txt(path, m) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(" ".join(repr(float(v)) for v in row) for row in np.asarray(m)) + "\n")


def corrupt(path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def c2w_example(k: int = 0) -> np.ndarray:
    """A camera-to-world pose: rotation about z by 30*(k+1) degrees, then a translation."""
    a = math.radians(30.0 * (k + 1))
    T = np.eye(4)
    T[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = [1.0 + k, -2.0, 0.5]
    return T
