"""One way for entry points to answer bad input: one line `<prog>: error: ...` and exit status 2.

    with one_line_errors("ide3d.train"):
        cfg = load_config(args.config, args.overrides)
        train(cfg)

ValueError (DatasetError and ConfigError are ValueErrors) and OSError (a missing or unreadable
file) become that line, without a traceback. Set PAPERS3D_TRACEBACK=1 to get the traceback instead,
for debugging.

The demos' shared flags are parsed here, so that each gets the same one-line error before any model
is loaded: `parse_K("--K", "500,500,320,240")` (fx, fy > 0, every number finite) and
`parse_device("--device", "cuda")` (a device torch knows and this machine has).
"""

from __future__ import annotations

import math
import os
import sys
from contextlib import contextmanager

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
