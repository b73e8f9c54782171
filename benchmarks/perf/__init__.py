"""A small harness that times two or more implementations side by side in one process.

Each benchmark is a module `benchmarks/perf/<name>.py` with `run(quick: bool) -> PerfReport`.
`python -m benchmarks.perf NAME` (or `all`) runs it, prints a table and writes
`results/perf/<name>.json`. Every number comes from the run that writes it: warm-up calls, then
`repeats` timed calls; we report the median and the interquartile range, throughput in the
benchmark's own unit (scenes/s, particle-substeps/s, ...), peak memory, and the speed ratio
against the first implementation of each case (`ratio` = baseline median / this median, so 3.0
means three times faster than the baseline).

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` over the call; on CPU, the peak resident
set size sampled every millisecond during one extra call, minus the RSS before it (it includes
every allocator, torch and numpy alike, but not memory that was already held before the call).
Before that call, memory the process has freed but glibc still holds is handed back
(`malloc_trim`); otherwise a call could reuse what earlier cases freed and read as ~0 MiB.
"""

from __future__ import annotations

import ctypes
import gc
import json
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from common.results import git_commit


@dataclass
class Measurement:
    impl: str
    case: str
    median_s: float
    q25_s: float
    q75_s: float
    repeats: int
    items: float = 1.0
    unit: str = "calls"
    peak_memory_mb: float | None = None
    ratio: float | None = None  # baseline median / this median within the same case
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.items / self.median_s if self.median_s > 0 else float("inf")


def _sync(device: str | None) -> None:
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them for reuse, hiding later allocations)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def peak_memory_mb(fn: Callable[[], Any], device: str | None = None) -> float:
    """Peak memory of one call of `fn` in MiB (see the module docstring for what is counted)."""
    if device is not None and device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    proc = psutil.Process()
    _release_freed_memory()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return (peak[0] - before) / 2**20


def measure(
    fn: Callable[[], Any],
    *,
    impl: str,
    case: str,
    items: float = 1.0,
    unit: str = "calls",
    warmup: int = 1,
    repeats: int = 5,
    device: str | None = None,
    memory: bool = True,
) -> Measurement:
    """Time `fn()`: `warmup` untimed calls, then `repeats` timed ones (synchronised on CUDA)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return Measurement(
        impl=impl,
        case=case,
        median_s=statistics.median(times),
        q25_s=q[0],
        q75_s=q[2],
        repeats=repeats,
        items=items,
        unit=unit,
        peak_memory_mb=peak_memory_mb(fn, device) if memory else None,
    )


class PerfReport:
    """The measurements of one benchmark, with ratios against each case's first implementation."""

    def __init__(self, name: str, description: str = ""):
        self.name = name
        self.description = description
        self.rows: list[Measurement] = []
        self.notes: list[str] = []

    def compare(self, case: str, impls: dict[str, Callable[[], Any]], **kwargs) -> list[Measurement]:
        """Measure each implementation of one case; the first one is the baseline of the ratios."""
        rows = [measure(fn, impl=name, case=case, **kwargs) for name, fn in impls.items()]
        for row in rows:
            row.ratio = rows[0].median_s / row.median_s if row.median_s > 0 else float("inf")
        self.rows.extend(rows)
        return rows

    def add(self, row: Measurement) -> None:
        self.rows.append(row)

    def table(self) -> str:
        head = "| case | implementation | median | IQR | throughput | peak memory | ratio |"
        lines = [head, "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            mem = "-" if r.peak_memory_mb is None else f"{r.peak_memory_mb:.1f} MiB"
            ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
            lines.append(
                f"| {r.case} | {r.impl} | {_fmt_s(r.median_s)} | {_fmt_s(r.q25_s)}-{_fmt_s(r.q75_s)} "
                f"| {r.throughput:.4g} {r.unit}/s | {mem} | {ratio} |"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "benchmark": self.name,
            "description": self.description,
            "ratio": "baseline median / implementation median within a case (higher is faster)",
            "rows": [dict(asdict(r), throughput=r.throughput) for r in self.rows],
            "notes": self.notes,
            "environment": environment(),
        }

    def write(self, out_dir="results/perf") -> Path:
        path = Path(out_dir) / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def environment() -> dict:
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "git": git_commit(),
    }


def _fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def count_flops(fn) -> tuple[int, Any]:
    """(FLOPs counted by `torch.utils.flop_counter` while fn() runs, its return value): the paper-scale
    counts on the `meta` device. Keep autograd on for modules whose hooks need grad_fns."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out
