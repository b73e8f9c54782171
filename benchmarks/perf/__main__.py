"""`python -m benchmarks.perf NAME [NAME ...] | all [--quick] [--threads N] [--out results/perf]`.

Times implementations side by side (see benchmarks/perf/__init__.py) and writes
results/perf/<NAME>.json. The timings run on one torch thread unless --threads says otherwise, so
that CPU numbers do not depend on what else the machine runs; the count is recorded in the JSON.
"""

import importlib
import pkgutil
import sys

import benchmarks.perf as perf
from common.cli import OneLineParser, check_out_dir, one_line_errors, set_threads


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(perf.__path__) if not m.name.startswith("_"))


def main(argv=None) -> int:
    parser = OneLineParser("benchmarks.perf", description=__doc__)
    parser.add_argument("names", nargs="+", help=f"benchmarks to run, or 'all': {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--out", default="results/perf", help="where the JSON files go")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch CPU threads for the timings (default 1: numbers that do not wait on other "
                             "work's threads; 0: torch's default, all cores); recorded in the JSON")
    args = parser.parse_args(argv)
    with one_line_errors("benchmarks.perf"):  # before any benchmark runs
        set_threads(args.threads)
        names = available() if args.names == ["all"] else args.names
        unknown = [n for n in names if n not in available()]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {available()} or 'all'")
        check_out_dir("--out", args.out)
    for name in names:
        report = importlib.import_module(f"benchmarks.perf.{name}").run(quick=args.quick)
        print(f"\n## {report.name}: {report.description}\n\n{report.table()}")
        for note in report.notes:
            print(f"- {note}")
        print(f"\nwritten {report.write(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
