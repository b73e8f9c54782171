"""`make gpu-check`: on a machine with a CUDA GPU, every `pytest -m cuda` test, then the CUDA rows of
the performance benchmarks, and one JSON of the figures.

    python scripts/gpu_check.py [--out results/gpu_check.json] [--quick] [--budget 480]

Steps, each in its own process (a crash in one is recorded and the next still runs):
1. `python -m pytest -m cuda -q --continue-on-collection-errors --junitxml=...`: pass / fail / error
   / skip counts, the node ids of the failures and errors (a module that fails to import is one
   error), the skipped ones with their reasons;
2. `python -m benchmarks.perf NAME --out <perf dir>` for NAME in BENCHMARKS (`--quick` passes
   `--quick`: smaller sizes and fewer repeats); from each report (`<perf dir>/NAME.json`) the rows
   that ran on CUDA (CUDA_ROWS says how each module marks them) and the report's notes.

The JSON (written atomically, also when something failed):
    {"device", "cuda_version", "versions": {"torch", "warp", "gsplat", "python"}, "warp_cuda", "git",
     "started", "seconds", "quick", "budget_s", "ok",
     "pytest": {"command", "returncode", "seconds", "log", "passed", "failed", "errors", "skipped",
                "failures": [node id], "skips": {node id: reason}, "error"?},
     "perf": {NAME: {"command", "returncode", "seconds", "log", "report", "cuda_rows": [row],
                     "notes": [str], "error"?}}}
Each row is the perf harness's (impl, case, median_s, q25_s, q75_s, repeats, items, unit,
peak_memory_mb, ratio, throughput, extra); `ratio` is against the case's first implementation,
which is often the CPU one (`make perf` documents it).

The steps share `--budget` seconds (default 480, so the command ends within about 8 minutes): each
gets what is left, and one that runs out is killed and recorded as timed out. Exit 0 when every
cuda test passed and every benchmark wrote its report, 1 otherwise, and 2 (one line, nothing run,
no JSON) where torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in the checkout

BENCHMARKS = ("mpm", "endogsim", "ivgt", "depthvlm")

# Which rows of each perf report ran on CUDA (read off each module's CUDA branch):
CUDA_ROWS = {
    # Warp kernels on each Warp device: "warp-cuda" forward rows, "rollout ... (cuda)" backward/forward
    "mpm": lambda r: r["impl"] == "warp-cuda" or r["case"].endswith("(cuda)"),
    # gsplat's CUDA rasteriser beside the CPU compositor ("torch-cpu", the ratio's baseline)
    "endogsim": lambda r: r["impl"] == "gsplat-cuda",
    # the model (forward, SDF queries, the trained SDF's meshing) moves to CUDA when present; the
    # analytic sphere's meshing stays on the CPU
    "ivgt": lambda r: r["case"].startswith(("forward", "SDF query", "mesh extraction, trained")),
    # both pipelines on the one device, named at the end of the case ("..., cuda")
    "depthvlm": lambda r: r["case"].endswith(", cuda"),
}

NO_CUDA = "gpu-check: no CUDA device (torch.cuda.is_available() is False); nothing was run"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _warp_cuda() -> bool | None:
    try:
        import warp as wp

        wp.config.quiet = True
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            wp.init()  # without a driver Warp prints its banner even when quiet
        return bool(wp.is_cuda_available())
    except Exception:  # noqa: BLE001 (recorded as unknown)
        return None


def run_step(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float, str | None]:
    """Run `cmd` from the checkout, its output to `log`; (returncode or None if killed at the
    timeout, seconds, error line or None)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    if timeout <= 0:
        return None, 0.0, "not run: the --budget was spent"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step's own process group (its children too)
            proc.wait()
            return None, time.monotonic() - t0, f"timed out after {timeout:.0f} s (the --budget left)"
    seconds = time.monotonic() - t0
    error = None
    if rc != 0:
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        error = f"exit {rc}: {tail[-1] if tail else 'no output'}"
    return rc, seconds, error


def parse_junit(path: Path) -> dict:
    """Counts and node ids from pytest's `--junitxml` (xunit1: testcases carry their file)."""
    out = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": [], "skips": {}}
    for case in ET.parse(path).getroot().iter("testcase"):
        node = _node_id(case)
        kinds = {child.tag: child for child in case}
        if "failure" in kinds:
            out["failed"] += 1
            out["failures"].append(node)
        elif "error" in kinds:  # a collection error, or an error in a fixture's setup or teardown
            out["errors"] += 1
            out["failures"].append(node)
        elif "skipped" in kinds:
            out["skipped"] += 1
            out["skips"][node] = kinds["skipped"].get("message", "")
        else:
            out["passed"] += 1
    return out


def _node_id(case: ET.Element) -> str:
    """pytest's node id (`path.py::Class::test[param]`) of a junit testcase."""
    name, classname, file = case.get("name", ""), case.get("classname", ""), case.get("file")
    if not classname:  # a collection error: name is the module's dotted path
        return file or name
    if not file:
        return f"{classname}::{name}"
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    classes = classname[len(module) + 1:].split(".") if classname.startswith(module + ".") else []
    return "::".join([file, *classes, name])


def cuda_rows(name: str, report: dict) -> list[dict]:
    keep = CUDA_ROWS.get(name, lambda r: "cuda" in f"{r['impl']} {r['case']}".lower())
    return [r for r in report.get("rows", []) if keep(r)]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/gpu_check.json", help="the JSON of the figures")
    parser.add_argument("--quick", action="store_true", help="the perf benchmarks' --quick (small sizes)")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for all the steps together (default 480: about 8 minutes)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget: expected a number of seconds > 0, got {args.budget}")

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    from common.results import git_commit

    out = Path(args.out)
    if not out.is_absolute():
        out = ROOT / out
    work = out.with_suffix("")  # results/gpu_check/: the perf reports and the steps' logs
    t0, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def left() -> float:
        return args.budget - (time.monotonic() - t0)

    summary = {
        "device": torch.cuda.get_device_name(0),
        "cuda_version": torch.version.cuda,
        "versions": {"torch": torch.__version__, "warp": _version("warp-lang"), "gsplat": _version("gsplat"),
                     "python": platform.python_version()},
        "warp_cuda": _warp_cuda(),
        "git": git_commit(),
        "started": started,
        "quick": args.quick,
        "budget_s": args.budget,
    }
    print(f"gpu-check on {summary['device']}: pytest -m cuda, then perf {' '.join(BENCHMARKS)}; "
          f"logs in {work}", flush=True)

    junit = work / "pytest-cuda.xml"
    junit.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           "--continue-on-collection-errors", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    rc, seconds, error = run_step(cmd, work / "pytest-cuda.log", left())
    tests = {"command": " ".join(cmd[1:]), "returncode": rc, "seconds": round(seconds, 1),
             "log": str(work / "pytest-cuda.log")}
    if junit.is_file():
        tests.update(parse_junit(junit))
    if error and rc != 1:  # exit 1 is "some tests failed", which the counts already say
        tests["error"] = error
    summary["pytest"] = tests
    print(f"gpu-check: pytest -m cuda: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
          f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped ({seconds:.0f} s)"
          + (f"; {tests['error']}" if "error" in tests else ""), flush=True)

    summary["perf"] = {}
    for name in BENCHMARKS:
        report_path = work / "perf" / f"{name}.json"
        report_path.unlink(missing_ok=True)  # never read an earlier run's report
        cmd = [sys.executable, "-m", "benchmarks.perf", name, "--out", str(work / "perf")]
        cmd += ["--quick"] if args.quick else []
        rc, seconds, error = run_step(cmd, work / f"perf-{name}.log", left())
        entry = {"command": " ".join(cmd[1:]), "returncode": rc, "seconds": round(seconds, 1),
                 "log": str(work / f"perf-{name}.log")}
        if rc == 0 and report_path.is_file():
            report = json.loads(report_path.read_text())
            entry.update(report=str(report_path), cuda_rows=cuda_rows(name, report),
                         notes=report.get("notes", []))
            if not entry["cuda_rows"]:
                entry["error"] = "the report has no CUDA rows"
        else:
            entry["error"] = error or f"no report at {report_path}"
        summary["perf"][name] = entry
        said = [f"{len(entry['cuda_rows'])} CUDA rows"] if "cuda_rows" in entry else []
        said += [entry["error"]] if "error" in entry else []
        print(f"gpu-check: perf {name}: {'; '.join(said)} ({seconds:.0f} s)", flush=True)

    ok = (tests["returncode"] == 0 and not tests.get("failed") and not tests.get("errors")
          and all("error" not in e for e in summary["perf"].values()))
    summary["ok"] = ok
    summary["seconds"] = round(time.monotonic() - t0, 1)
    write_json(out, summary)
    print(f"gpu-check: {'ok' if ok else 'FAILED'} in {summary['seconds']:.0f} s; wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
