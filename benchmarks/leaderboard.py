"""Put every `results/<paper>/results.json` side by side: `python -m benchmarks.leaderboard`.

Methods are compared on a metric only where they were measured on the same data (name, split,
generator version, number of scenes, seed); within such a group each metric gets a ranked table of
the methods that report it (papers name metrics by their own protocol, so e.g. VLM3's pixel-query
`depth_delta1` and DepthVLM's dense `indoor_delta1` stay apart). Writes
`<out>.md`, `<out>.json` and `<out>.html` (tables and one bar chart per metric).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
from pathlib import Path

from common.results import read_results


def data_key(data: dict) -> str:
    return "{name}/{split} v{generator_version} scenes={scenes} seed={seed}".format(
        **{"generator_version": "-", **data}
    )


def collect(results_dir) -> dict[str, dict]:
    """{data key: {"metrics": {metric: higher_is_better}, "rows": {"paper:method": {metric: value}}}}."""
    groups: dict[str, dict] = {}
    for path in sorted(Path(results_dir).glob("*/results.json")):
        res = read_results(path)
        group = groups.setdefault(data_key(res["data"]), {"metrics": {}, "rows": {}, "sources": []})
        group["sources"].append(str(path))
        for metric, spec in res["metrics"].items():
            group["metrics"].setdefault(metric, spec["higher_is_better"])
        for method, values in res["methods"].items():
            group["rows"][f"{res['paper']}:{method}"] = values
    return groups


def ranked(group: dict, metric: str) -> list[tuple[str, float]]:
    """(method, value) of every method that reports `metric`, best first."""
    rows = [(m, v[metric]) for m, v in group["rows"].items() if v.get(metric) is not None]
    return sorted(rows, key=lambda r: r[1], reverse=group["metrics"][metric])


def to_markdown(groups: dict) -> str:
    if not groups:
        return "# Leaderboard\n\nNo results yet: run `make reproduce-<paper>` first.\n"
    out = ["# Leaderboard\n"]
    for key, group in groups.items():
        out.append(f"## {key}\n\nfrom {', '.join(group['sources'])}\n")
        for metric in sorted(group["metrics"]):
            out.append(f"### {metric} ({'higher' if group['metrics'][metric] else 'lower'} is better)\n")
            out.append("| rank | method | value |\n|---|---|---|")
            out.extend(f"| {i} | {m} | {v:.4g} |" for i, (m, v) in enumerate(ranked(group, metric), 1))
            out.append("")
    return "\n".join(out)


def bar_chart_png(title: str, values: dict[str, float], higher_is_better: bool) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set_title(f"{title} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.invert_yaxis()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def to_html(groups: dict) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>Leaderboard</title>", "<h1>Leaderboard</h1>"]
    if not groups:
        parts.append("<p>No results yet: run <code>make reproduce-&lt;paper&gt;</code> first.</p>")
    for key, group in groups.items():
        parts.append(f"<h2>{html.escape(key)}</h2>")
        metrics = sorted(group["metrics"])
        parts.append("<table border=1 cellpadding=4><tr><th>method</th>")
        parts.extend(f"<th>{html.escape(m)}</th>" for m in metrics)
        parts.append("</tr>")
        for method, values in group["rows"].items():
            cells = "".join(f"<td>{'-' if values.get(m) is None else f'{values[m]:.4g}'}</td>" for m in metrics)
            parts.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
        parts.append("</table>")
        for m in metrics:
            vals = dict(ranked(group, m))
            if vals:
                png = base64.b64encode(bar_chart_png(m, vals, group["metrics"][m])).decode()
                parts.append(f"<img alt='{html.escape(m)}' src='data:image/png;base64,{png}'>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.leaderboard", description=__doc__)
    parser.add_argument("--results", default="results", help="folder holding <paper>/results.json")
    parser.add_argument("--out", default="results/leaderboard", help="output path without suffix")
    args = parser.parse_args(argv)
    groups = collect(args.results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(groups)
    out.with_suffix(".md").write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(groups, indent=1) + "\n")
    out.with_suffix(".html").write_text(to_html(groups))
    print(markdown)
    print(f"written {out}.md, {out}.json, {out}.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
