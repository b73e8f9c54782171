"""The unified indoor-outdoor metric depth benchmark in VLM format (DepthVLM Sec. 4, DepthVLM-Bench).

Each item: an image resampled to the canonical focal length (DepthLM / DepthVLM: fx = fy = 1000
px, `common.cameras.unify_focal`), its intrinsics, z-depth labels resampled with it (nearest, so
depth values stay exact), a domain (indoor / outdoor), the depth prompt, and spatial questions
that need metric depth, answered in text. Sources: `common`'s synthetic scenes (or any folder in
the project's scene format) and the `common.datasets` readers for NYU, KITTI and ScanNet layouts.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.cameras import crop, transform_points, unify_focal
from common.datasets import Sample

# The prompt of DepthVLM's depth samples (official `utils/datasets.py`, quoted in the notes).
DEPTH_PROMPT = ("Given this image, estimate the metric depth (in meters, rounded to two decimal places) "
                "for every pixel of the image.")


@dataclass
class VLMItem:
    image: torch.Tensor  # [3, H, W] float32 in [0, 1], at the canonical focal length
    K: torch.Tensor  # [3, 3] pixels, fx = fy = focal
    depth: torch.Tensor  # [H, W] z-depth in metres, 0 = invalid
    domain: str
    scene_id: str
    view: int
    questions: list = field(default_factory=list)  # [{"type", "question", "answer", "value", "names"}]


def to_vlm_items(sample: Sample, focal: float, factor: int, max_size: int = 0, require_intrinsics: bool = True,
                 domain: str | None = None, questions_per_view: int = 3, seed: int = 0, views=None) -> list[VLMItem]:
    """The benchmark items of one `Sample` (one per view).

    Per view: unify the focal length to `focal` (bilinear for RGB, nearest for depth), then centre
    crop to at most `max_size` per side and to a multiple of `factor` (patch * merge) so that the
    model sees the image without a further resize and K stays exact.
    """
    where = sample.scene_id or "sample"
    source = sample.annotations.get("intrinsics_source", "")
    if require_intrinsics and source.startswith("assumed"):
        raise ValueError(f"{where}: the image has no intrinsics ({source}); metric depth at a canonical focal "
                         f"length needs K (give intrinsics.txt, or set data.require_intrinsics=false)")
    if sample.depth is None:
        raise ValueError(f"{where}: no depth maps; the benchmark needs ground-truth depth")
    if tuple(sample.depth.shape[-2:]) != tuple(sample.images.shape[-2:]):
        raise ValueError(f"{where}: depth map of size {list(sample.depth.shape[-2:])} for images of size "
                         f"{list(sample.images.shape[-2:])}; expected the same size")
    domain = domain or sample.annotations.get("domain")
    if not domain:
        raise ValueError(f"{where}: no domain (annotations['domain'] or data.domain: indoor / outdoor)")
    items = []
    for v in range(sample.num_views) if views is None else views:
        K = sample.K[v]
        depth = sample.depth[v] * (sample.valid[v] if sample.valid is not None else 1)  # [H, W]
        image, K_new = unify_focal(sample.images[v], K, focal)  # [3, H', W']
        depth_u, _ = unify_focal(depth[None], K, focal, mode="nearest")  # [1, H', W']
        H, W = image.shape[-2:]
        th = min(H, max_size or H) // factor * factor
        tw = min(W, max_size or W) // factor * factor
        if th < factor or tw < factor:
            raise ValueError(f"{where} view {v}: {H}x{W} at focal {focal} is smaller than one token ({factor} px)")
        top, left = (H - th) // 2, (W - tw) // 2
        image, K_c = crop(image, K_new, top, left, th, tw)  # [3, th, tw]
        depth_c, _ = crop(depth_u, K_new, top, left, th, tw)  # [1, th, tw]
        item = VLMItem(image.clamp(0, 1), K_c, depth_c[0], domain, sample.scene_id, v)
        if "objects" in sample.annotations and sample.instances is not None:
            # Object ids resampled and cropped with the image: questions name only objects that the
            # model's image shows (a crop can cut an object of the original view out).
            inst_u, _ = unify_focal(sample.instances[v][None].float(), K, focal, mode="nearest")  # [1, H', W']
            inst_c, _ = crop(inst_u, K_new, top, left, th, tw)  # [1, th, tw]
            rng = np.random.default_rng([seed, v, zlib.crc32(sample.scene_id.encode())])
            item.questions = spatial_questions(sample, v, inst_c[0].round().long(), rng, questions_per_view)
        items.append(item)
    return items


# The spatial questions' templates; `tokenizer_corpus` renders them for the tiny tokenizer too. An
# object is named and located: "the red box at (x, y)", (x, y) the centre of its visible pixels in
# [0, 1000] of the image's width and height (Qwen3-VL's relative coordinates; DepthLM and VLM3 refer
# to pixels by text coordinates). "Which is closer" has two options, answered with the option's
# letter (CV-Bench's depth order).
HOW_FAR = "How far is {a} from the camera, in metres?"
CLOSER = "Which is closer to the camera? (A) {a} (B) {b} Answer with the option's letter."
APART = "How far apart are {a} and {b}, in metres?"

# An object is asked about when it covers this share of the model's image (20 px of 128 x 128).
MIN_AREA = 20 / 128**2


def refer(obj, instances: torch.Tensor) -> str:
    """'the <colour> <category> at (x, y)': (x, y) the mean of the object's pixel centres in
    `instances` [H, W] (object ids of the model's image), scaled to [0, 1000]."""
    H, W = instances.shape
    ys, xs = (instances == obj["id"]).nonzero(as_tuple=True)
    x, y = (round(1000 * (float(c.double().mean()) + 0.5) / n) for c, n in ((xs, W), (ys, H)))
    return f"the {obj['color_name']} {obj['category']} at ({x}, {y})"


def tokenizer_corpus() -> list[str]:
    """Every prompt and answer form of this benchmark over every synthetic object name: the text the
    tiny tokenizer's merges are learned from (deterministic, no data needed)."""
    from common.synthetic.scene import CATEGORIES, PALETTE

    names = [f"the {c} {k} at ({i * 37 % 1000}, {i * 91 % 1000})"
             for i, (c, k) in enumerate(itertools.product(PALETTE, CATEGORIES))]
    lines = [DEPTH_PROMPT, "A", "B"]
    for i, a in enumerate(names):
        b = names[(i * 7 + 3) % len(names)]
        lines += [HOW_FAR.format(a=a), CLOSER.format(a=a, b=b), APART.format(a=a, b=b), a]
    return lines


def spatial_questions(sample: Sample, view: int, instances: torch.Tensor, rng, n: int,
                      min_area: float = MIN_AREA) -> list[dict]:
    """Single-image questions that need metric depth: how far is X (z-depth of its centre), which
    of X and Y is closer (smaller centre z-depth; "A" or "B"), how far apart are X and Y (3D centre
    distance); each question's `names` are its objects' references in order. `instances` [H, W]: the
    object ids of the image the model sees; an object is asked about when it covers at least
    `min_area` of that image."""
    objects = {o["id"]: o for o in sample.annotations["objects"]}
    ids, counts = torch.unique(instances, return_counts=True)
    least = min_area * instances.numel()
    visible = [int(i) for i, c in zip(ids, counts) if int(i) in objects and int(c) >= least]
    if not visible:
        return []
    centres = torch.tensor([objects[i]["center"] for i in visible], dtype=torch.float64)  # [N, 3] world
    zs = transform_points(sample.w2c[view].double(), centres)[:, 2]  # [N] camera z, metres
    z = {i: float(v) for i, v in zip(visible, zs)}
    ref = {i: refer(objects[i], instances) for i in visible}
    out = []
    kinds = ["how_far", "closer", "apart"] if len(visible) >= 2 else ["how_far"]
    for k in range(n):
        kind = kinds[k % len(kinds)]
        if kind == "how_far":
            a = int(rng.choice(visible))
            out.append({"type": "how_far", "question": HOW_FAR.format(a=ref[a]), "answer": f"{z[a]:.1f}",
                        "value": z[a], "names": [ref[a]]})
            continue
        a, b = (int(x) for x in rng.choice(visible, size=2, replace=False))
        if kind == "closer":
            if abs(z[a] - z[b]) < 0.05 * min(z[a], z[b]):  # too close to call
                continue
            letter = "A" if z[a] < z[b] else "B"
            out.append({"type": "closer", "question": CLOSER.format(a=ref[a], b=ref[b]), "answer": letter,
                        "value": letter, "names": [ref[a], ref[b]]})
        else:
            d = math.dist(objects[a]["center"], objects[b]["center"])
            out.append({"type": "apart", "question": APART.format(a=ref[a], b=ref[b]), "answer": f"{d:.1f}",
                        "value": d, "names": [ref[a], ref[b]]})
    return out


def swapped(question: dict) -> dict:
    """A two-object question with its objects in the other order: the same distance, or the same
    closer object under the other option's letter."""
    a, b = question["names"]
    template = {"closer": CLOSER, "apart": APART}[question["type"]]
    out = {**question, "question": template.format(a=b, b=a), "names": [b, a]}
    if question["type"] == "closer":
        out["answer"] = out["value"] = {"A": "B", "B": "A"}[question["answer"]]
    return out


def read_source(cfg, split: str):
    """Yield `Sample`s of the configured source: "synthetic" / "scene_format" (`SceneDataset`),
    "nyu_folder" (`NYUv2Folder`), "kitti_val" (`KittiDepthDataset.val_selection`), "scannet"
    (`ScanNetDataset`). Public datasets have no split folders here: `root` is the split."""
    ds = source_dataset(cfg, split)
    for i in range(len(ds)):
        yield ds[i]


def source_dataset(cfg, split: str):
    """The configured source's dataset of `split` (its index read and checked, no sample loaded)."""
    from common import datasets as D

    root = Path(cfg.root)
    if cfg.source in ("synthetic", "scene_format"):
        return D.SceneDataset(root, split, load=("depth", "instances"))
    if cfg.source == "nyu_folder":
        return D.NYUv2Folder(root)
    if cfg.source == "kitti_val":
        return D.KittiDepthDataset.val_selection(root)
    if cfg.source == "scannet":
        return D.ScanNetDataset(root)
    raise ValueError(f"data.source: {cfg.source!r}; expected synthetic, scene_format, nyu_folder, kitti_val, scannet")


def check_source(cfg) -> None:
    """Before any work: a synthetic root that may be absent (`ensure_synthetic` writes it) but is
    otherwise readable; any other source's train and test datasets as `source_dataset` opens them."""
    from common.cli import check_synthetic_root

    if cfg.source == "synthetic":
        check_synthetic_root("data.root", cfg.root, (cfg.train_split, cfg.test_split))
        return
    if not Path(cfg.root).is_dir():
        raise ValueError(f"data.root {cfg.root}: folder not found; expected the {cfg.source} dataset")
    for split in (cfg.train_split, cfg.test_split):
        source_dataset(cfg, split)


def ensure_synthetic(cfg, train_scenes: int = 64, test_scenes: int = 32, views: int = 8, size: int = 128,
                     seed: int = 0) -> None:
    """Generate `make data`'s synthetic splits when they are absent."""
    if cfg.source != "synthetic":
        return
    from common.synthetic import generate_split

    for split, n in ((cfg.train_split, train_scenes), (cfg.test_split, test_scenes)):
        if not (Path(cfg.root) / split / "index.json").is_file():
            generate_split(cfg.root, split, scenes=n, views=views, size=size, seed=seed)


def build_items(cfg, split: str, factor: int, max_views: int = 0, seed: int = 0) -> list[VLMItem]:
    """Every view of a split as benchmark items (first `max_views` views per scene if > 0). The
    training split gets `train_questions_per_view` questions per view when it is set; any other
    split `questions_per_view`, so the test questions do not depend on the training recipe."""
    n = cfg.train_questions_per_view if split == cfg.train_split and cfg.train_questions_per_view else \
        cfg.questions_per_view
    items = []
    for sample in read_source(cfg, split):
        views = range(min(sample.num_views, max_views)) if max_views else None
        items += to_vlm_items(sample, cfg.focal, factor, cfg.max_size, cfg.require_intrinsics,
                              domain=getattr(cfg, "domain", "") or None,
                              questions_per_view=n, seed=seed, views=views)
    return items
