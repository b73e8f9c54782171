"""`python -m benchmarks.perf NAME [NAME ...] | all [--quick] [--threads N] [--out results/perf]`."""

import importlib
import pkgutil
import sys

import benchmarks.perf as perf
from common.cli import OneLineParser, check_out_dir, one_line_errors


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(perf.__path__) if not m.name.startswith("_"))


def main(argv=None) -> int:
    parser = OneLineParser("benchmarks.perf", prog="python -m benchmarks.perf", description=__doc__)
    parser.add_argument("names", nargs="+", help=f"benchmarks to run, or 'all': {', '.join(available())}")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (a smoke run)")
    parser.add_argument("--out", default="results/perf", help="where the JSON files go")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a busy machine 1 keeps the CPU "
                             "numbers from waiting on each other's threads; the count is recorded in the JSON")
    args = parser.parse_args(argv)
    with one_line_errors("benchmarks.perf"):  # before any benchmark runs
        if args.threads < 0:
            raise ValueError(f"--threads: expected 0 (torch's default) or a positive count, got {args.threads}")
        names = available() if args.names == ["all"] else args.names
        unknown = [n for n in names if n not in available()]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; expected some of {available()} or 'all'")
        check_out_dir("--out", args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in names:
        report = importlib.import_module(f"benchmarks.perf.{name}").run(quick=args.quick)
        print(f"\n## {report.name}: {report.description}\n\n{report.table()}")
        for note in report.notes:
            print(f"- {note}")
        print(f"\nwritten {report.write(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
