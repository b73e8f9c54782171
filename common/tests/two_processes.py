"""For the packages' multi-process tests: a training module under torchrun with 2 CPU processes
(gloo), rank r given `<out_key>=<base>/rank<r>` as its output folder, so that anything a rank but
the main one writes shows up as a folder of its own.

    out = two_processes.run("ivgt.train", args, "train.output_dir", tmp_path / "two", tmp_path / "two.log")
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from common.tests import kill_resume

# Each rank runs `python -m <module> <args> <out_key>=<base>/rank<RANK>` (RANK set by torchrun).
SHIM = """import os, runpy, sys
module, key, base = sys.argv[1:4]
sys.argv = [module, *sys.argv[4:], f"{key}={base}/rank{os.environ['RANK']}"]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(module: str, args: list[str], out_key: str, base: Path, log: Path, timeout: float = 300) -> Path:
    """Run `module` in 2 processes to the end; assert that only rank 0 wrote (`base` holds only
    rank0/) and return rank 0's output folder."""
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
              "--no-python"]
    kill_resume.run([*launch, sys.executable, "-c", SHIM, module, out_key, str(base), *args], log, timeout)
    written = sorted(p.name for p in Path(base).iterdir())
    assert written == ["rank0"], f"{base}: {written}; only the main process (rank 0) may write"
    return Path(base) / "rank0"
