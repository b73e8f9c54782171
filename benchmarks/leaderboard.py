"""The leaderboard: the shared tasks' tables (`benchmarks.run` calls `write`), and every paper's own
`results/<paper>/results.json` side by side (`python -m benchmarks.leaderboard`).

Shared tasks (`write`): per task a table of methods, baselines and methods that could not run (with
the reason), each metric as mean [95% CI] and the paired bootstrap p-value against the best, the
protocol each metric follows; one bar chart with intervals per task. The HTML is one file with its
images inline (opens offline).

Each paper's own results (`collect`):

Methods are compared on a metric only where they were measured on the same data (name, split,
generator version, number of scenes, seed); within such a group each metric gets a ranked table of
the methods that report it (papers name metrics by their own protocol, so e.g. VLM3's pixel-query
`depth_delta1` and DepthVLM's dense `indoor_delta1` stay apart). Writes
`<out>.md`, `<out>.json` and `<out>.html` (tables and one bar chart per metric).
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path

import numpy as np

from common.cli import OneLineParser, check_out_prefix, one_line_errors
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
            cells = "".join(
                f"<td>{'-' if values.get(m) is None else f'{values[m]:.4g}'}</td>" for m in metrics
            )
            parts.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
        parts.append("</table>")
        for m in metrics:
            vals = dict(ranked(group, m))
            if vals:
                png = base64.b64encode(bar_chart_png(m, vals, group["metrics"][m])).decode()
                parts.append(f"<img alt='{html.escape(m)}' src='data:image/png;base64,{png}'>")
    return "\n".join(parts) + "\n"


# -- the shared tasks (benchmarks.run) ---------------------------------------------------------------


def _cell(row: dict | None, digits: int = 3) -> str:
    if row is None:
        return "-"
    lo, hi = row["ci95"]
    p = row.get("p_vs_best")
    mark = "" if p is None else (f" p={p:.2g}")
    return f"{row['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{mark}"


def task_rows(task: dict) -> list[tuple[str, str, str, list[str]]]:
    """(method, kind, status, cells) per row of a task's table: methods first, then baselines."""
    metrics = list(task["metric_specs"])
    order = sorted(task["methods"], key=lambda m: (task["methods"][m]["kind"] != "method", m))
    rows = []
    for name in order:
        info = task["methods"][name]
        if info["status"] == "ok":
            cells = [_cell(task["metrics"].get(m, {}).get(name)) for m in metrics]
        else:
            cells = [""] * len(metrics)
        status = info["status"] if info["status"] != "ok" else (info.get("note") or "")
        rows.append((name, info["kind"], status, cells))
    return rows


def board_markdown(board: dict) -> str:
    d = board["data"]
    out = [
        "# Leaderboard: the shared tasks\n",
        f"Held-out data: {d['name']} {d['split']} split (generator v{d['generator_version']}, seed "
        f"{d['seed']}), {d['scenes']} scenes. Each cell: mean [95% bootstrap CI] and the paired "
        "bootstrap p-value against the best row of that column (none on the best).\n",
        summary_markdown(board),
    ]
    for name, task in board["tasks"].items():
        metrics = list(task["metric_specs"])
        out.append(
            f"## {task['title']} (`{name}`, {task['items']} items)\n\n{task['protocol']}; data: "
            f"{task.get('data', 'the held-out split')}\n"
        )
        out.extend(f"![{f['title']}]({f['file']})\n" for f in task.get("figures", []) if "file" in f)
        out.append("| method | kind | note | " + " | ".join(metrics) + " |")
        out.append("|---|---|---|" + "---|" * len(metrics))
        for method, kind, status, cells in task_rows(task):
            out.append(f"| {method} | {kind} | {status} | " + " | ".join(cells) + " |")
        out.append(
            "\nProtocols: "
            + "; ".join(
                f"{m} ({'higher' if s['higher_is_better'] else 'lower'} is better): {s['protocol']}"
                for m, s in task["metric_specs"].items()
            )
            + "\n"
        )
    out.append(cost_markdown(board))
    return "\n".join(out)


def cost_markdown(board: dict) -> str:
    cost = board.get("cost", {})
    if not cost:
        return ""
    tasks = list(board["tasks"])
    lines = [
        "## Cost, side by side\n",
        "Parameters of the tiny model each row ran and CPU seconds per item to answer each task in this "
        "run (same machine, same run; scoring not included; a method that answers several tasks from one "
        "prediction of the same views pays for it in the first, e.g. depth before pose); paper-scale "
        "counts where `make perf` measured them.\n",
        "| method | parameters | " + " | ".join(f"{t} s/item" for t in tasks) + " | paper scale |",
        "|---|---|" + "---|" * len(tasks) + "---|",
    ]
    for name, c in cost.items():
        params = "-" if c["parameters"] is None else f"{c['parameters'] / 1e6:.2f} M"
        secs = [f"{c['seconds_per_item'][t]:.3f}" if t in c["seconds_per_item"] else "" for t in tasks]
        lines.append(
            f"| {name} | {params} | " + " | ".join(secs) + f" | {'; '.join(c['paper_scale']) or 'not yet'} |"
        )
    return "\n".join(lines) + "\n"


def summary_markdown(board: dict) -> str:
    """One headline number per task and method (the root README shows this table)."""
    from benchmarks.tasks import HEADLINE

    tasks = [t for t in board["tasks"] if HEADLINE.get(t) in board["tasks"][t]["metric_specs"]]
    names = sorted(
        {m for t in tasks for m, i in board["tasks"][t]["methods"].items() if i["kind"] == "method"}
    )
    head = [f"{t}: {HEADLINE[t]}" for t in tasks]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(tasks)]
    for name in names:
        cells = []
        for t in tasks:
            info = board["tasks"][t]["methods"].get(name)
            row = board["tasks"][t]["metrics"].get(HEADLINE[t], {}).get(name)
            if info is None:
                cells.append("")
            elif info["status"] != "ok":
                cells.append(
                    "not yet" if info["status"].startswith("not yet") else info["status"].split(":")[0]
                )
            else:
                cells.append("-" if row is None else f"{row['value']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for t in tasks:
        spec = board["tasks"][t]["metric_specs"][HEADLINE[t]]
        rows = board["tasks"][t]["metrics"].get(HEADLINE[t], {})
        base = [
            (r["value"], n) for n, r in rows.items() if board["tasks"][t]["methods"][n]["kind"] == "baseline"
        ]
        if base:
            v, n = (max if spec["higher_is_better"] else min)(base)
            cells.append(f"{v:.3f} ({n})")
        else:
            cells.append("")
    lines.append("| *best trivial baseline* | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def task_chart_png(task: dict) -> bytes | None:
    """Bars with 95% intervals, one panel per metric, every row that has the metric."""
    from benchmarks.figures import png_bytes, pyplot

    plt = pyplot()

    metrics = [m for m in task["metric_specs"] if task["metrics"].get(m)]
    if not metrics:
        return None
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.2 * len(metrics), 0.3 * len(task["methods"]) + 1.6), squeeze=False
    )
    for ax, m in zip(axes[0], metrics):
        rows = task["metrics"][m]
        names = sorted(rows, key=lambda n: (task["methods"][n]["kind"] != "method", n))
        vals = np.array([rows[n]["value"] for n in names])
        lo = vals - np.array([rows[n]["ci95"][0] for n in names])
        hi = np.array([rows[n]["ci95"][1] for n in names]) - vals
        colors = ["tab:blue" if task["methods"][n]["kind"] == "method" else "tab:gray" for n in names]
        ax.barh(range(len(names)), vals, xerr=[lo, hi], color=colors)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(
            f"{m} ({'higher' if task['metric_specs'][m]['higher_is_better'] else 'lower'} better)", fontsize=8
        )
    return png_bytes(fig)


def board_html(board: dict) -> str:
    d = board["data"]
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Leaderboard</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #bbb;padding:3px 6px;font-size:13px}th{background:#eee}"
        ".baseline{color:#555}.off{color:#a00}</style></head><body>",
        "<h1>Leaderboard: the shared tasks</h1>",
        f"<p>Held-out data: {esc(str(d['name']))} {esc(str(d['split']))} split, {d['scenes']} scenes. "
        "Cells: mean [95% bootstrap CI], paired bootstrap p against the column's best.</p>",
    ]
    for name, task in board["tasks"].items():
        metrics = list(task["metric_specs"])
        parts.append(
            f"<h2 id='{esc(name)}'>{esc(task['title'])}</h2><p>{esc(task['protocol'])} "
            f"({task['items']} items)</p><table><tr><th>method</th><th>kind</th><th>note</th>"
        )
        parts.extend(f"<th title='{esc(task['metric_specs'][m]['protocol'])}'>{esc(m)}</th>" for m in metrics)
        parts.append("</tr>")
        for method, kind, status, cells in task_rows(task):
            cls = "off" if task["methods"][method]["status"] != "ok" else kind
            parts.append(
                f"<tr class='{cls}'><td>{esc(method)}</td><td>{kind}</td><td>{esc(status)}</td>"
                + "".join(f"<td>{esc(c)}</td>" for c in cells)
                + "</tr>"
            )
        parts.append("</table>")
        png = task_chart_png(task)
        if png is not None:
            parts.append(
                f"<img alt='{esc(name)} metrics' "
                f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            )
        for fig in task.get("figures", []):
            parts.append(
                f"<figure><img alt='{esc(fig['title'])}' src='data:image/png;base64,{fig['png']}'>"
                f"<figcaption>{esc(fig['title'])}</figcaption></figure>"
            )
    cost = board.get("cost", {})
    if cost:
        tasks = list(board["tasks"])
        parts.append(
            "<h2 id='cost'>Cost, side by side</h2><table><tr><th>method</th><th>parameters</th>"
            + "".join(f"<th>{esc(t)} s/item</th>" for t in tasks)
            + "<th>paper scale</th></tr>"
        )
        for name, c in cost.items():
            params = "-" if c["parameters"] is None else f"{c['parameters'] / 1e6:.2f} M"
            secs = "".join(f"<td>{c['seconds_per_item'].get(t, '')}</td>" for t in tasks)
            parts.append(
                f"<tr><td>{esc(name)}</td><td>{params}</td>{secs}"
                f"<td>{esc('; '.join(c['paper_scale']) or 'not yet')}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write(board: dict, out: Path) -> list[Path]:
    """`<out>.json`, `<out>.md`, `<out>.html` and the figures as `<out>_figures/<task>_<k>.png`
    (the JSON and the Markdown name the files; the HTML carries them inline)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".html")]
    paths[2].write_text(board_html(board))
    folder = out.parent / f"{out.name}_figures"
    plain = json.loads(json.dumps(board))
    for name, task in plain["tasks"].items():
        for k, fig in enumerate(task.get("figures", [])):
            folder.mkdir(exist_ok=True)
            path = folder / f"{name}_{k}.png"
            path.write_bytes(base64.b64decode(fig.pop("png")))
            fig["file"] = str(path.relative_to(out.parent))
    paths[0].write_text(json.dumps(plain, indent=1) + "\n")
    paths[1].write_text(board_markdown(plain))
    return paths


def main(argv=None) -> int:
    parser = OneLineParser(
        "benchmarks.leaderboard", prog="python -m benchmarks.leaderboard", description=__doc__
    )
    parser.add_argument("--results", default="results", help="folder holding <paper>/results.json")
    parser.add_argument("--out", default="results/papers", help="output path without suffix")
    args = parser.parse_args(argv)
    with one_line_errors("benchmarks.leaderboard"):  # every results.json is read before anything is written
        if not Path(args.results).is_dir():
            raise ValueError(f"--results {args.results}: folder not found; expected a folder holding <paper>/results.json")
        out = check_out_prefix("--out", args.out)
        groups = collect(args.results)
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
