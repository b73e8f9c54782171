"""Generate a split of procedural scenes with full ground truth (common.synthetic):

    python -m common.synthetic --out data/synthetic --split train --scenes 64 --views 8 --size 128

Scene i of a split is drawn from a seed of (--seed, --split, i), so the same arguments write the
same scenes. `make data` writes the default benchmark's train and test splits this way.
"""

from __future__ import annotations

import time

from common.cli import OneLineParser
from common.synthetic.generate import GENERATOR_VERSION, generate_split


def main(argv=None) -> None:
    parser = OneLineParser("common.synthetic", description=__doc__)
    parser.add_argument("--out", required=True, help="root folder; the split is written to OUT/SPLIT/")
    parser.add_argument("--split", required=True, help="e.g. train or test; enters every scene's seed")
    parser.add_argument("--scenes", type=int, required=True, help="number of scenes")
    parser.add_argument("--views", type=int, default=8, help="views per scene")
    parser.add_argument("--size", type=int, nargs="+", default=[128], help="image size: S or H W")
    parser.add_argument("--seed", type=int, default=0, help="base seed of every scene (default 0)")
    parser.add_argument("--domains", default="indoor,outdoor", help="comma-separated, taken in turn")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.views < 1:
        parser.error("--scenes and --views must be >= 1")
    if len(args.size) not in (1, 2) or min(args.size) < 1:
        parser.error("--size takes one size S or two sizes H W, all >= 1")
    size = args.size[0] if len(args.size) == 1 else tuple(args.size)
    domains = tuple(d.strip() for d in args.domains.split(",") if d.strip())
    bad = [d for d in domains if d not in ("indoor", "outdoor")]
    if bad or not domains:
        parser.error(f"--domains: expected a comma-separated list of indoor, outdoor; got {args.domains!r}")
    start = time.perf_counter()
    split_dir = generate_split(args.out, args.split, args.scenes, args.views, size, args.seed, domains)
    seconds = time.perf_counter() - start
    print(f"wrote {args.scenes} scenes x {args.views} views ({'x'.join(map(str, args.size))} px, domains "
          f"{','.join(domains)}, seed {args.seed}, generator v{GENERATOR_VERSION}) to {split_dir} "
          f"in {seconds:.1f} s ({args.scenes / seconds:.2f} scenes/s)")


if __name__ == "__main__":
    main()
