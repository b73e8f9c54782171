"""One PNG to look at synthetic scenes: per scene, rows of RGB, depth, normals and instances.

    python scripts/contact_sheet.py --data data/synthetic --split test --out results/contact_sheet.png
    python scripts/contact_sheet.py --out results/contact_sheet.png           # renders fresh scenes

Depth is colour-mapped (turbo, near = blue) per scene over its valid range, invalid/sky black;
normals are shown as (n + 1) / 2 in the camera frame; instances with one colour per id, 0 grey.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from common.datasets.sample import Sample  # noqa: E402


def _rows(sample: Sample, views: int) -> list[np.ndarray]:
    """Four rows [h, w * views, 3] uint8: RGB, depth, normals, instances."""
    V = min(views, sample.num_views)
    rgb = sample.images[:V].permute(0, 2, 3, 1).numpy()  # [V, H, W, 3]
    depth = sample.depth[:V].numpy()  # [V, H, W]
    valid = sample.valid[:V].numpy() if sample.valid is not None else depth > 0
    lo, hi = (np.percentile(depth[valid], 1), np.percentile(depth[valid], 99)) if valid.any() else (0, 1)
    d = colormaps["turbo"](np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1))[..., :3] * valid[..., None]
    normals = sample.normals[:V].permute(0, 2, 3, 1).numpy()  # [V, H, W, 3]
    n = (normals + 1) / 2 * (np.linalg.norm(normals, axis=-1, keepdims=True) > 0.5)
    ids = sample.instances[:V].numpy()  # [V, H, W]
    palette = np.random.default_rng(1).uniform(0.2, 1.0, size=(int(ids.max()) + 1, 3))
    palette[0] = 0.25
    inst = palette[ids]
    return [(np.concatenate(list(x), axis=1) * 255).round().astype(np.uint8) for x in (rgb, d, n, inst)]


def contact_sheet(samples: list[Sample], views: int = 6) -> Image.Image:
    label_h = 14
    blocks = []
    for s in samples:
        rows = _rows(s, views)
        label = Image.new("RGB", (rows[0].shape[1], label_h), (255, 255, 255))
        ann = s.annotations
        text = (f"{s.scene_id}  {ann.get('domain', '')}  path={ann.get('camera_path', {}).get('kind', '')}  "
                f"objects={len(ann.get('objects', []))}  depth {float(s.depth[s.depth > 0].min()):.2f}-"
                f"{float(s.depth.max()):.2f} m")
        ImageDraw.Draw(label).text((2, 1), text, fill=(0, 0, 0))
        blocks.append(np.asarray(label))
        blocks += rows
    width = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return Image.fromarray(np.concatenate(blocks, axis=0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="root of a generated dataset; renders fresh scenes when omitted")
    parser.add_argument("--split", default="test")
    parser.add_argument("--scenes", type=int, default=4, help="how many scenes")
    parser.add_argument("--views", type=int, default=6, help="views per scene (columns)")
    parser.add_argument("--size", type=int, default=128, help="image size when rendering fresh scenes")
    parser.add_argument("--seed", type=int, default=0, help="first seed when rendering fresh scenes")
    parser.add_argument("--out", default="results/contact_sheet.png")
    args = parser.parse_args(argv)
    if args.data:
        from common.datasets.scene_format import read_index, read_scene

        split_dir = Path(args.data) / args.split
        ids = read_index(split_dir)["scenes"][: args.scenes]
        samples = [read_scene(split_dir / i) for i in ids]
    else:
        from common.synthetic import generate_scene

        samples = [generate_scene(args.seed + i, ("indoor", "outdoor")[i % 2], args.views, args.size)[0]
                   for i in range(args.scenes)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(samples, args.views).save(out)
    print(f"wrote {out} ({len(samples)} scenes)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
