"""One way for entry points to answer bad input: one line `<prog>: error: ...` and exit status 2.

    with one_line_errors("ide3d.train"):
        cfg = load_config(args.config, args.overrides)
        train(cfg)

ValueError (DatasetError and ConfigError are ValueErrors) and OSError (a missing or unreadable
file) become that line, without a traceback. Set PAPERS3D_TRACEBACK=1 to get the traceback instead,
for debugging.
"""

from __future__ import annotations

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
