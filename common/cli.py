"""One way for entry points to answer bad input: one line `<prog>: error: ...` and exit status 2.

    with one_line_errors("ide3d.train"):
        cfg = load_config(args.config, args.overrides)
        train(cfg)

ValueError (DatasetError and ConfigError are ValueErrors) and OSError (a missing or unreadable
file) become that line, without a traceback. Set PAPERS3D_TRACEBACK=1 to get the traceback instead,
for debugging. argparse's own errors (an unknown flag, `--jobs abc`, a missing argument) get the same
line from `OneLineParser("ide3d.train", description=...)`, without argparse's usage line.

The demos' shared flags are defined and parsed here, so that each demo spells and explains them
alike and gets the same one-line error before any model is loaded: `add_demo_flags(ap, ...)` adds
`--images DIR`/`--image FILE`, `--K FX,FY,CX,CY`, `--fov DEG`, `--cameras PATH`, `--model DIR`,
`--out DIR`, `--device` and `--threads`; `check_demo_flags(args)` checks them (`parse_K`: fx, fy > 0,
every number finite; `parse_fov`: (0, 180) degrees; `parse_device`: a device torch knows and this
machine has) and `check_demo_model(args)` answers a missing default model with the command that
makes it. Output and data
paths are checked the same way before a run starts: `check_out_dir("--out", path)` (not a file, its
nearest existing folder writable), `check_out_prefix` (an output path without suffix) and
`check_synthetic_root("data.root", root, splits)` (absent, or splits with a readable index.json).

Threads: every train, evaluate and reproduce command takes `--threads N` (`add_threads_flag(ap)`)
and applies it with `set_threads(args.threads)`: torch's default (all cores) unless N > 0. No model
config holds a thread count; the one-thread setting lives where it is needed (the tests' conftest,
`python -m benchmarks.perf --threads 1` on a busy machine).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

TRACEBACK_ENV = "PAPERS3D_TRACEBACK"


@contextmanager
def one_line_errors(prog: str, errors: tuple = (ValueError, OSError)):
    try:
        yield
    except errors as exc:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        message = str(exc) or type(exc).__name__
        print(f"{prog}: error: {message.splitlines()[0] if message else message}", file=sys.stderr)
        sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, except that its errors (an unknown flag, a value of the wrong type, a
    missing argument, `ap.error(...)`) are one line on stderr, `<entry_point>: error: <message>`,
    with exit status 2 and no usage line, as `one_line_errors` answers the rest. `entry_point` is the
    name that `one_line_errors` gets (`vlm3.train`). `--help` shows `usage: python -m <entry_point>`
    and the description as written (pass the module docstring whole), unless `prog` or
    `formatter_class` say otherwise."""

    def __init__(self, entry_point: str, **kwargs):
        kwargs.setdefault("prog", f"python -m {entry_point}")
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.entry_point = entry_point

    def error(self, message: str):
        one_line = message.replace("\n", " ")
        self.exit(2, f"{self.entry_point}: error: {one_line}\n")


def add_threads_flag(ap: argparse.ArgumentParser) -> None:
    """`--threads N` (default 0: torch's default, every core), as every entry point spells it."""
    ap.add_argument("--threads", type=int, default=0, metavar="N",
                    help="torch CPU threads (default 0: torch's default, all cores; 1 on a busy shared "
                         "machine, where spinning threads wait on each other)")


def set_threads(n: int | None, flag: str = "--threads") -> None:
    """torch's CPU threads: `n` > 0 sets them, 0 or None keeps torch's default (all cores, or
    OMP_NUM_THREADS); ValueError naming `flag` for a negative count. The one thread setting of
    every entry point; call it before any work."""
    if n is None or n == 0:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{flag}: expected an int >= 0 (0: torch's default), got {n!r}")
    import torch

    torch.set_num_threads(n)


def parse_K(flag: str, text: str):
    """Intrinsics K [3, 3] float32 from "fx,fy,cx,cy" (pixels); ValueError naming `flag` unless
    there are four finite numbers with fx, fy > 0."""
    import torch

    try:
        fx, fy, cx, cy = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected four numbers fx,fy,cx,cy in pixels") from None
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        raise ValueError(f"{flag} {text!r}: expected finite fx,fy,cx,cy with focal lengths fx, fy > 0")
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def parse_device(flag: str, text: str):
    """A torch.device from `text`; ValueError naming `flag` if torch does not know it or this
    machine does not have it (`cuda` without CUDA, `cuda:3` on a one-GPU machine)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {text!r}: expected a torch device such as cpu, cuda or cuda:0") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"{flag} {text!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} {text!r}: MPS is not available on this machine")
    return device


def check_out_dir(flag: str, path) -> Path:
    """`path` as an output folder to be created or reused; ValueError naming `flag` if it is a
    file, or if the nearest folder above it that exists is a file or not writable. Call it before
    any work, so that a run cannot fail only when it writes its results."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file; expected a folder (or a path where one can be made)")
    _check_above(flag, path, path)
    return path


def _check_above(flag: str, shown: Path, path: Path) -> None:
    above = path
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ValueError(f"{flag} {shown}: {above} is a file; expected a folder (or a path where one can be made)")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {shown}: {above} is not writable")


def check_out_prefix(flag: str, prefix, suffixes=(".json", ".md", ".html")) -> Path:
    """An output path without suffix (`<prefix>.json`, ...): its folder as in `check_out_dir`, and no
    folder where one of the files goes."""
    prefix = Path(prefix)
    if not prefix.name:
        raise ValueError(f"{flag} {str(prefix)!r}: expected an output path without suffix, such as results/leaderboard")
    _check_above(flag, prefix, prefix.parent)
    for suffix in suffixes:
        if prefix.with_suffix(suffix).is_dir():
            raise ValueError(f"{flag} {prefix}: {prefix.with_suffix(suffix)} is a folder; expected a file path")
    return prefix


def check_synthetic_root(field: str, root, splits, generate: bool = True) -> Path:
    """A root of `make data`'s splits whose present splits have a readable index.json listing scenes
    that are there; ValueError naming `field` (or the bad file) otherwise. With `generate` (the
    caller writes the missing splits) a split may be absent if the root can be written; without it,
    every split must be there. Reads no scene."""
    from common.datasets.scene_format import read_index

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{field} {root}: is a file; expected a folder of synthetic splits (make data)")
    missing = []
    for split in splits:
        folder = root / split
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{field} {root}: {folder} is a file; expected a split folder")
        if (folder / "index.json").exists():
            read_index(folder)
        else:
            missing.append(split)
    if missing and not generate:
        raise ValueError(f"{field} {root}: no {missing[0]}/index.json; expected the synthetic splits (make data)")
    if missing:
        check_out_dir(field, root)  # the caller generates them here
    return root


# -- the demos' shared flags -------------------------------------------------------------------


def add_demo_flags(ap: argparse.ArgumentParser, *, input_flag: str, input_help: str, model: str, make: str,
                   out: str) -> None:
    """The flags every demo shares, spelt and explained alike: its input (`--images DIR` or `--image
    FILE`), `--K FX,FY,CX,CY` or `--fov DEG`, `--cameras PATH`, `--model DIR` (default `model`, the
    folder that the command `make` writes), `--out DIR`, `--device` and `--threads`. `check_demo_flags`
    checks them before any work; `check_demo_model` says which command makes the default model."""
    ap.add_argument(input_flag, required=True, help=input_help)
    ap.add_argument("--K", default=None, metavar="FX,FY,CX,CY",
                    help="intrinsics in pixels of the full-size image as displayed (EXIF rotation applied), "
                         "for every image; replaces the K of any camera file")
    ap.add_argument("--fov", type=float, default=None, metavar="DEG",
                    help="horizontal field of view in degrees, in (0, 180), for images without K "
                         "(default: the camera file's K, else 60 degrees assumed and said so)")
    ap.add_argument("--cameras", default=None, metavar="PATH",
                    help="a COLMAP model folder, a cameras JSON or an LLFF poses_bounds.npy (default: one "
                         "found beside or above the images: sparse/0, cameras.json, poses_bounds.npy)")
    ap.add_argument("--model", default=model, metavar="DIR",
                    help=f"trained model folder (default: {model}, which `{make}` writes)")
    ap.add_argument("--out", default=out, metavar="DIR",
                    help=f"output folder; the files are named after the inputs (default: {out})")
    ap.add_argument("--device", default=None,
                    help="torch device such as cpu, cuda or cuda:1 (default: cuda when present, else cpu)")
    add_threads_flag(ap)
    ap.set_defaults(demo_model=model, demo_make=make)


def parse_fov(flag: str, value) -> float | None:
    """A horizontal field of view in degrees, in (0, 180); ValueError naming `flag` otherwise."""
    if value is None:
        return None
    if not (math.isfinite(value) and 0 < value < 180):
        raise ValueError(f"{flag} {value:g}: expected a horizontal field of view in (0, 180) degrees")
    return float(value)


def check_demo_flags(args) -> dict:
    """The shared flags of `add_demo_flags`, checked (one ValueError naming the flag) and applied
    (threads): dict(K=[3, 3] or None, fov=degrees or None, cameras=Path or None, device)."""
    import torch

    if args.K is not None and args.fov is not None:
        raise ValueError("--K and --fov: give one of them (--K has the focal lengths --fov would assume)")
    K = parse_K("--K", args.K) if args.K is not None else None
    fov = parse_fov("--fov", args.fov)
    cameras = Path(args.cameras) if args.cameras is not None else None
    if cameras is not None and not cameras.exists():
        raise FileNotFoundError(f"--cameras {cameras}: not found; expected a COLMAP model folder, a cameras "
                                f"JSON or an LLFF poses_bounds.npy")
    device = parse_device("--device", args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_out_dir("--out", args.out)
    set_threads(args.threads)
    return {"K": K, "fov": fov, "cameras": cameras, "device": device}


def check_demo_model(args) -> Path:
    """--model as a path; where it is the default and absent, a ValueError that names the command
    that makes it (no traceback, no random weights)."""
    path = Path(args.model)
    if not path.exists() and args.model == getattr(args, "demo_model", None):
        raise ValueError(f"--model {path}: no trained model there yet; `{args.demo_make}` makes one "
                         f"(or pass --model DIR)")
    return path
