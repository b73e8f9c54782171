"""For the packages' resume tests: kill a training process with SIGKILL after it has written a
checkpoint (and logged steps past it), then compare the resumed run with an uninterrupted one.

    S = kill_after_checkpoint(cmd, out / "checkpoint" / "trainer_state.json", out / "metrics.jsonl")
    run(cmd + ["--resume"])
    assert_same_weights(full / "model" / "x.safetensors", out / "model" / "x.safetensors")
    assert_same_log(full / "metrics.jsonl", out / "metrics.jsonl", time_keys=("seconds",))

The processes run on one torch thread (OMP_NUM_THREADS=1), as the tests themselves do (conftest),
whatever thread count the entry point would take by default.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]  # the folder holding common/ (a cherry-picked copy too)


def one_thread_env() -> dict:
    """The environment for a child process, with torch's default thread count set to one."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args: list[str], log: Path, timeout: float = 120) -> None:
    """`python <args>` from ROOT to the end; its output goes to `log` (shown if it fails)."""
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, env=one_thread_env())
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{log.read_text()[-3000:]}"


def _checkpoint_step(state: Path) -> int | None:
    try:
        return int(json.loads(state.read_text())["step"])
    except (OSError, ValueError, KeyError):  # not there yet, or being renamed into place
        return None


def _logged(metrics: Path) -> list[dict]:
    try:
        text = metrics.read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def kill_after_checkpoint(args: list[str], state: Path, metrics: Path, log: Path, past=None,
                          timeout: float = 120) -> int:
    """Start `python <args>`; once the checkpoint's `state` file (JSON with "step") holds a step S
    and `metrics` has a line past it (`past(row, S)`; by default row["step"] > S), SIGKILL the
    process. Returns the step of the checkpoint left on disk. Fails if the run ends first."""
    past = past or (lambda row, step: row["step"] > step)
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env=one_thread_env())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{args}: ended (exit {proc.returncode}) before a checkpoint and a "
                                     f"later step were seen; lengthen the run\n{log.read_text()[-3000:]}")
            step = _checkpoint_step(state)
            if step is not None and any(past(row, step) for row in _logged(metrics)):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        else:
            raise AssertionError(f"{args}: no checkpoint within {timeout} s\n{log.read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{args}: exit {proc.returncode}, expected the kill"
    step = _checkpoint_step(state)
    assert step is not None, f"{state}: no readable checkpoint after the kill"
    return step


def assert_same_weights(a: Path, b: Path) -> None:
    """The two safetensors files hold the same tensors, bit for bit."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys(), (sorted(ta), sorted(tb))
    differ = [k for k in ta if ta[k].dtype != tb[k].dtype or not torch.equal(ta[k], tb[k])]
    assert not differ, f"{b} differs from {a} in {differ}"


def assert_same_log(a: Path, b: Path, time_keys=("seconds",)) -> list[dict]:
    """The two JSON-lines logs have the same number of lines and the same lines, field by field
    except the wall-clock fields `time_keys`; returns the rows of `a` (without them)."""
    def rows(path):
        return [{k: v for k, v in json.loads(line).items() if k not in time_keys}
                for line in path.read_text().splitlines()]

    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb), f"{b}: {len(rb)} lines, {a}: {len(ra)}"
    for n, (x, y) in enumerate(zip(ra, rb), 1):
        assert x == y, f"line {n}: {y} (resumed) != {x} (uninterrupted)"
    return ra
