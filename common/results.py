"""The one `results.json` schema that every reproduce and benchmark run writes (DESIGN.md), and
`truncate_jsonl`, which cuts a training log (`metrics.jsonl`) back to a checkpoint on resume.

    {"paper": "ivgt", "ours": "ivgt",
     "data": {"name", "split", "generator_version", "scenes", "seed"},
     "metrics": {metric: {"higher_is_better": bool}},
     "methods": {method: {metric: value}},      # ours, the untrained model, baselines, peers
     "ablations": {variant: {metric: value}},   # variants of the method itself
     "ci95": {method: {metric: [low, high]}},
     "paper_reported": {metric: {"value": float, "dataset": str}},
     "environment": {"device", "seconds", "git"}}

Numbers are measured by the run that writes the file, never copied in; `paper_reported` is the
only place for numbers from a paper, always with the dataset they were measured on.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from common.errors import DatasetError

REQUIRED = ("paper", "ours", "data", "metrics", "methods")
DATA_FIELDS = ("name", "split", "scenes", "seed")


def git_commit(short: bool = True) -> str:
    """The current commit, or "" outside a git checkout."""
    cmd = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).parent)
    except OSError:
        return ""
    return out.stdout.strip()


def validate_results(results: dict, where: str = "results") -> dict:
    """Check `results` against the schema; raise ValueError naming the first bad field."""

    def fail(field: str, expected: str):
        raise ValueError(f"{where}: field {field!r}: expected {expected}")

    if not isinstance(results, dict):
        fail("<root>", "a JSON object")
    for key in REQUIRED:
        if key not in results:
            fail(key, "to be present")
    for key in ("paper", "ours"):
        if not isinstance(results[key], str):
            fail(key, f"a name (string), got {results[key]!r}")
    for key in ("data", "methods", "ablations", "ci95", "paper_reported"):
        if not isinstance(results.get(key, {}), dict):
            fail(key, f"an object, got {type(results[key]).__name__}")
    for key in DATA_FIELDS:
        if key not in results["data"]:
            fail(f"data.{key}", "to be present")
    metrics = results["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        fail("metrics", "a non-empty object of {metric: {higher_is_better: bool}}")
    for name, spec in metrics.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("higher_is_better"), bool):
            fail(f"metrics.{name}.higher_is_better", "true or false")
    if results["ours"] not in results["methods"]:
        fail("methods", f"an entry for ours ({results['ours']!r})")
    for section in ("methods", "ablations"):
        for method, values in results.get(section, {}).items():
            if not isinstance(values, dict):
                fail(f"{section}.{method}", "an object of {metric: number}")
            for metric, value in values.items():
                if metric not in metrics:
                    fail(f"{section}.{method}.{metric}", f"a metric declared in 'metrics' ({sorted(metrics)})")
                if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                    fail(f"{section}.{method}.{metric}", f"a finite number or null, got {value!r}")
    for method, intervals in results.get("ci95", {}).items():
        if not isinstance(intervals, dict):
            fail(f"ci95.{method}", "an object of {metric: [low, high]}")
        for metric, interval in intervals.items():
            if not (
                isinstance(interval, (list, tuple))
                and len(interval) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
                and interval[0] <= interval[1]
            ):
                fail(f"ci95.{method}.{metric}", "[low, high] with low <= high")
    for metric, reported in results.get("paper_reported", {}).items():
        if not isinstance(reported, dict) or "value" not in reported or "dataset" not in reported:
            fail(f"paper_reported.{metric}", '{"value": number, "dataset": name}')
    return results


def write_results(path, results: dict) -> Path:
    """Validate and write atomically (temporary file, then rename)."""
    path = Path(path)
    validate_results(results, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def truncate_jsonl(path, step, *, key: str = "step", stage=None, stage_key: str = "stage") -> int:
    """Cut the JSON-lines training log `path` back to a checkpoint before a resumed run appends to it,
    so that the steps after the checkpoint (which the resumed run does again) are not logged twice.

    Keeps the lines whose `key` is <= `step`. With `stage` (a log whose lines carry `stage_key`, its
    stages trained one after another): keeps every line of the stages logged before `stage`'s first
    line, the lines of `stage` whose `key` is <= `step`, and drops the rest (later stages). Pass the
    step of the last line to keep: a log that numbers steps from 0 resuming at a checkpoint taken
    after S steps keeps `key` <= S - 1 (and -1 keeps none of that stage).

    The file is rewritten atomically (a temporary file, then a rename); a missing file stays missing.
    A last line cut short by a kill (no newline, not JSON) is dropped; any other line that is not a
    JSON object holding `key` (and `stage_key`) is a DatasetError naming the file and line.
    Returns the number of lines kept."""
    path = Path(path)
    if not path.is_file():
        return 0
    raw = path.read_text().splitlines(keepends=True)
    keep, in_stage = [], False
    for n, line in enumerate(raw, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == len(raw) and not line.endswith("\n"):
                break  # the last line, torn by a kill mid-write
            raise DatasetError(path, f"line {n}: not valid JSON") from None
        if not isinstance(row, dict) or key not in row or (stage is not None and stage_key not in row):
            need = f"{key!r}" + (f" and {stage_key!r}" if stage is not None else "")
            raise DatasetError(path, f"line {n}: expected a JSON object with {need}")
        if stage is None or row[stage_key] == stage:
            in_stage = True
            if row[key] <= step:
                keep.append(line.rstrip("\n") + "\n")
        elif not in_stage:  # an earlier stage
            keep.append(line.rstrip("\n") + "\n")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: ranks may cut at once
    with open(tmp, "w") as f:
        f.write("".join(keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(keep)


def read_results(path) -> dict:
    path = Path(path)
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None
    try:
        return validate_results(results, str(path))
    except ValueError as exc:
        raise DatasetError(path, str(exc).split(": ", 1)[1]) from None


def markdown_table(results: dict, sections: tuple[str, ...] = ("methods", "ablations")) -> str:
    """Methods (and ablations) as rows, metrics as columns, with an arrow for the better side;
    the paper's reported numbers as a last row labelled with their datasets."""
    metrics = list(results["metrics"])
    arrow = {m: "↑" if results["metrics"][m]["higher_is_better"] else "↓" for m in metrics}
    lines = ["| method | " + " | ".join(f"{m} {arrow[m]}" for m in metrics) + " |"]
    lines.append("|---" * (len(metrics) + 1) + "|")
    for section in sections:
        for method, values in results.get(section, {}).items():
            label = f"**{method}**" if method == results["ours"] else method
            if section == "ablations":
                label += " (ablation)"
            lines.append(f"| {label} | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |")
    reported = results.get("paper_reported", {})
    if reported:
        cells = [
            f"{_fmt(reported[m]['value'])} ({reported[m]['dataset']})" if m in reported else "-" for m in metrics
        ]
        lines.append("| paper (reported) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
