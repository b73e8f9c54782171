"""One small synthetic clip shared by test_scene.py and test_simulate.py (generated once per run)."""

import functools
import tempfile
from pathlib import Path

_TMP = tempfile.TemporaryDirectory(prefix="endogsim-scene-tests-")  # removed when the interpreter exits


@functools.lru_cache(maxsize=None)
def small_clip() -> Path:
    """A 2-frame, 32 x 40 px synthetic clip of the blocks look (flat faces at the places the tests
    name; f = 40 px: one pixel is ~2.3 mm on the tissue)."""
    from endogsim.synthetic_scene import make_surgical_scene

    out = Path(_TMP.name) / "clip"
    make_surgical_scene(out, seed=0, frames=2, size=(32, 40), look="blocks")
    return out


@functools.lru_cache(maxsize=None)
def small_scene():
    """endogsim.clip.depth_scene of the small clip, one Gaussian per pixel (do not modify it)."""
    from endogsim.clip import depth_scene

    return depth_scene(small_clip(), stride=1)
