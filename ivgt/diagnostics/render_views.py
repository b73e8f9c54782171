"""Rendering from the k nearest input views (`Scene.render(..., views=k)`, the demo's
`--render-views`) against all of them, on the synthetic test scenes with every view as input.

    python -m ivgt.diagnostics.render_views --model results/ivgt/benchmark/model --scenes 16 --k 2 4 6
    python -m ivgt.diagnostics.render_views --model results/ivgt/benchmark/model --views 24 --scenes 8 --k 4 8

Per scene, all V views (8 in the test split) go through the model as `ivgt.evaluate` feeds its 4
(`canonical_views`, the backbone's size, predicted cameras); each input view's depth and normals
are rendered at `evaluate`'s 32x32 from all V views and from its k nearest, and scored as
`evaluate` scores depth (AbsRel and delta1, median-aligned per image) and normals (mean angle).
`--views N` generates scenes of N views of 128x128 with `common.synthetic` instead (seeds 1000 + i,
indoor and outdoor in turn), as the stored split has 8. Prints one JSON object: the means over
scenes per setting and the paired differences to "all".
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from common.cameras import resize_intrinsics
from common.datasets import SceneDataset
from common.metrics import depth_metrics, normal_angle_metrics
from ivgt.data import canonical_views
from ivgt.evaluate import ground_truth
from ivgt.model import IVGT


@torch.no_grad()
def scene_scores(model: IVGT, sample, ks, eval_size=(32, 32)) -> dict:
    """{setting: {abs_rel, delta1, normal_angle}} of one scene; settings "all" and "k=<k>"."""
    views = list(range(sample.num_views))
    batch = canonical_views(sample, views, model.cfg.image_size)
    gt = ground_truth(batch, eval_size)
    images = batch["images"][None]  # [1, V, 3, H, W]
    out = model(images)
    scene = model.scene_from_outputs(images, out)
    K = resize_intrinsics(out["K"][0], tuple(images.shape[-2:]), eval_size)  # [V, 3, 3]
    scores = {}
    for k in [0, *ks]:
        r = [scene.render(K[v], out["w2c"][0, v], *eval_size, views=k) for v in views]
        depth = torch.stack([x["depth"] for x in r]).clamp_min(1e-3)  # [V, h, w]
        normals = torch.stack([x["normals"] for x in r])  # [V, 3, h, w]
        d = depth_metrics(depth.numpy(), gt["depth"].numpy(), align="median")
        n = normal_angle_metrics(normals.numpy(), gt["normals"].numpy())
        scores["all" if k == 0 else f"k={k}"] = {"abs_rel": d["abs_rel"], "delta1": d["delta1"], "normal_angle": n["mean"]}
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--k", type=int, nargs="+", default=[2, 4, 6])
    p.add_argument("--views", type=int, default=0, help="generate scenes of this many views (0: the stored split)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = IVGT.load(a.model).eval().requires_grad_(False)
    if a.views:
        from common.synthetic import generate_scene

        data = [generate_scene(1000 + i, ("indoor", "outdoor")[i % 2], num_views=a.views, size=128)[0]
                for i in range(a.scenes)]
    else:
        data = SceneDataset(a.data, "test", load=("depth", "normals"))
    per = [scene_scores(model, data[i], a.k) for i in range(min(a.scenes, len(data)))]
    settings = list(per[0])
    means = {s: {m: float(np.mean([x[s][m] for x in per])) for m in per[0][s]} for s in settings}
    diff = {s: {m: float(np.mean([x[s][m] - x["all"][m] for x in per])) for m in per[0][s]} for s in settings[1:]}
    print(json.dumps({"scenes": len(per), "views": data[0].num_views, "means": means, "minus_all": diff}, indent=1))


if __name__ == "__main__":
    main()
