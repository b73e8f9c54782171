"""Spatial questions with answers and referring expressions with verified targets.

Every object is named by "the <colour> <category>", unique in its scene by construction. Each
question and expression carries the machine-readable facts it was computed from (`pixel`,
`attribute`, `filter`, `program`), so that its answer can be recomputed (the tests do).

Conventions stated in the texts:
- "closer to the camera" compares the distances from the camera centre to the objects' centres
  (the centres of their oriented bounding boxes);
- "left of" compares the image columns of the projected box centres in the named view;
- depth is z-depth (along the optical axis) at the pixel's centre, the pixel given as integer
  (column, row) from the top-left;
- an object is "in view" when at least `min_pixels` of its pixels are visible there.
"""

from __future__ import annotations

import itertools

import numpy as np

from common.synthetic.scene import CATEGORIES, PALETTE, PLURALS, Primitive

CLOSER_RATIO = 1.15  # the farther object is at least 15% and 0.25 m farther
CLOSER_GAP = 0.25
SIDE_MARGIN = 0.08  # left/right needs the projected centres 8% of the image width apart
EXTREME_RATIO = 1.3  # superlatives need the runner-up 30% smaller (volume) / 10% (height)
NEAREST_RATIO = 1.2  # "closest to": the runner-up is 20% farther


def describe(o: Primitive) -> str:
    return f"the {o.color_name} {o.category}"


class ViewGeometry:
    """Per view and object: camera centres, projected box centres, visible pixel counts."""

    def __init__(self, objects, K: np.ndarray, w2c: np.ndarray, instances: np.ndarray):
        V, H, W = instances.shape
        self.H, self.W = H, W
        self.min_pixels = max(4, round(0.001 * H * W))
        self.ids = [o.id for o in objects]
        R, t = w2c[:, :3, :3], w2c[:, :3, 3]  # [V, 3, 3], [V, 3]
        self.eyes = -np.einsum("vji,vj->vi", R, t)  # [V, 3] camera centres, -R^T t
        centers = np.array([o.center for o in objects]).reshape(-1, 3)  # [O, 3]
        cam = np.einsum("vij,oj->voi", R, centers) + t[:, None]  # [V, O, 3]
        self.z = cam[..., 2]  # [V, O]
        uvw = np.einsum("vij,voj->voi", K, cam)  # [V, O, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.uv = uvw[..., :2] / uvw[..., 2:]  # [V, O, 2]
        flat = instances.reshape(V, -1)
        self.pixels = np.zeros((V, len(self.ids)), dtype=np.int64)  # [V, O] visible pixels
        for j, i in enumerate(self.ids):
            self.pixels[:, j] = (flat == i).sum(1)

    def index(self, object_id: int) -> int:
        return self.ids.index(object_id)

    def visible(self, v: int, object_id: int) -> bool:
        return bool(self.pixels[v, self.index(object_id)] >= self.min_pixels)

    def center_in_image(self, v: int, object_id: int) -> bool:
        j = self.index(object_id)
        u, w = self.uv[v, j]
        return bool(self.z[v, j] > 0 and 0 <= u < self.W and 0 <= w < self.H)

    def u(self, v: int, object_id: int) -> float:
        return float(self.uv[v, self.index(object_id), 0])

    def distance(self, v: int, o: Primitive) -> float:
        return float(np.linalg.norm(self.eyes[v] - o.center))


def _size_question(o: Primitive) -> tuple[str, str, float]:
    if o.category == "box":
        text = f"What is the length of the longer horizontal side of {describe(o)}, in metres?"
        return "length", text, float(max(o.size[0], o.size[1]))
    return "diameter", f"What is the diameter of {describe(o)}, in metres?", float(o.size[0])


def make_questions(rng: np.random.Generator, objects, geo: ViewGeometry, depth: np.ndarray,
                   instances: np.ndarray, per_type: int = 2):
    """Up to `per_type` questions of each type; depth, instances [V, H, W] are the rendered maps."""
    V = depth.shape[0]
    qs = []

    def add(qtype, question, answer, value, view, object_ids, **facts):
        qs.append({"id": len(qs), "type": qtype, "question": question, "answer": answer,
                   "answer_value": value, "view": view, "object_ids": object_ids, **facts})

    pairs = list(itertools.combinations(objects, 2))
    views = [int(v) for v in rng.permutation(V)]

    def pick_pairs(test):
        """Up to `per_type` (view, a, b) passing `test`, one per view for variety, random order."""
        found = []
        for v in views:
            for j in rng.permutation(len(pairs)):
                a, b = pairs[j] if rng.random() < 0.5 else pairs[j][::-1]
                if test(v, a, b):
                    found.append((v, a, b))
                    break
            if len(found) == per_type:
                break
        return found

    def clearly_closer(v, a, b):  # both in view, distances clearly different
        da, db = geo.distance(v, a), geo.distance(v, b)
        return (geo.visible(v, a.id) and geo.visible(v, b.id) and max(da, db) >= CLOSER_RATIO * min(da, db)
                and abs(da - db) >= CLOSER_GAP)

    for v, a, b in pick_pairs(clearly_closer):
        near = a if geo.distance(v, a) < geo.distance(v, b) else b
        add("closer", f"In view {v}, which is closer to the camera, {describe(a)} or {describe(b)}? "
            "(Compare the distances from the camera centre to the objects' centres.)",
            describe(near), near.id, v, [a.id, b.id])

    def clearly_apart(v, a, b):  # both in view, centres in the image and clearly apart
        ok = all(geo.visible(v, o.id) and geo.center_in_image(v, o.id) for o in (a, b))
        return ok and abs(geo.u(v, a.id) - geo.u(v, b.id)) >= SIDE_MARGIN * geo.W

    for v, a, b in pick_pairs(clearly_apart):
        left = geo.u(v, a.id) < geo.u(v, b.id)
        add("left_of", f"In view {v}, is {describe(a)} to the left of {describe(b)}? "
            "(Compare the image positions of the objects' centres.)", "yes" if left else "no", bool(left), v,
            [a.id, b.id])

    # distance between centres.
    for j in rng.permutation(len(pairs))[:per_type]:
        a, b = pairs[j]
        dist = float(np.linalg.norm(a.center - b.center))
        add("distance", f"How far apart are the centres of {describe(a)} and {describe(b)}, in metres?",
            f"{dist:.2f}", dist, None, [a.id, b.id])

    # depth at a pixel with valid depth.
    for _ in range(per_type):
        k = int(rng.integers(V))
        rows, cols = np.nonzero(depth[k] > 0)
        if len(rows) == 0:
            continue
        i = int(rng.integers(len(rows)))
        row, col = int(rows[i]), int(cols[i])
        value = float(depth[k, row, col])
        add("depth_at_pixel", f"In view {k}, what is the depth in metres at pixel (column {col}, row {row})? "
            "(Depth is measured along the camera's optical axis.)", f"{value:.2f}", value, k,
            [int(instances[k, row, col])] if instances[k, row, col] > 0 else [], pixel=[col, row])

    # sizes: height, and diameter or longer side.
    for j in rng.permutation(len(objects))[:per_type]:
        o = objects[j]
        if rng.random() < 0.5:
            add("size", f"How tall is {describe(o)}, in metres?", f"{o.height:.2f}", o.height, None, [o.id],
                attribute="height")
        else:
            attribute, text, value = _size_question(o)
            add("size", text, f"{value:.2f}", value, None, [o.id], attribute=attribute)

    # counts, by colour and by category (zero counts are allowed: they are true answers too).
    color_name = list(PALETTE)[int(rng.integers(len(PALETTE)))]
    ids = [o.id for o in objects if o.color_name == color_name]
    add("count", f"How many {color_name} objects are there in the scene?", str(len(ids)), len(ids), None, ids,
        filter={"color_name": color_name})
    category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    ids = [o.id for o in objects if o.category == category]
    add("count", f"How many {PLURALS[category]} are there in the scene?", str(len(ids)), len(ids), None, ids,
        filter={"category": category})
    return qs


def resolve(program: dict, objects, geo: ViewGeometry) -> list[int]:
    """The ids of the objects that a referring program selects (sorted).

    Programs: {"op": "attribute", "color_name", "category"} (None = any);
    {"op": "extreme", "category", "measure": "volume"|"height", "order": "max"|"min"};
    {"op": "nearest", "category", "anchor", "order": "min"|"max"} (distance between centres);
    {"op": "side", "category", "anchor", "side": "left"|"right", "view"} (objects in view whose
    projected centre lies in the image, on that side of the anchor's).
    """
    op, category = program["op"], program.get("category")
    pool = [o for o in objects if category is None or o.category == category]
    if op == "attribute":
        color = program.get("color_name")
        return sorted(o.id for o in pool if color is None or o.color_name == color)
    if op == "extreme":
        key = (lambda o: o.volume) if program["measure"] == "volume" else (lambda o: o.height)
        pick = max if program["order"] == "max" else min
        return [pick(pool, key=key).id] if pool else []
    anchor = next(o for o in objects if o.id == program["anchor"])
    pool = [o for o in pool if o.id != anchor.id]
    if op == "nearest":
        key = lambda o: float(np.linalg.norm(o.center - anchor.center))  # noqa: E731
        pick = min if program["order"] == "min" else max
        return [pick(pool, key=key).id] if pool else []
    if op == "side":
        v = program["view"]
        u_a = geo.u(v, anchor.id)
        pool = [o for o in pool if geo.visible(v, o.id) and geo.center_in_image(v, o.id)]
        if program["side"] == "left":
            return sorted(o.id for o in pool if geo.u(v, o.id) < u_a)
        return sorted(o.id for o in pool if geo.u(v, o.id) > u_a)
    raise ValueError(f"unknown referring program op {op!r}")


def make_referring(rng: np.random.Generator, objects, geo: ViewGeometry, per_kind: int = 3):
    """Referring expressions of several kinds, each kept only if `resolve` gives exactly its
    targets (one, or several for the `multi` ones) with a clear margin."""
    by_kind: dict[str, list] = {}

    def candidate(kind, text, program, targets, view=None, multi=False):
        if resolve(program, objects, geo) == sorted(targets):
            by_kind.setdefault(kind, []).append((text, program, sorted(targets), view, multi))

    colors = sorted({o.color_name for o in objects})
    cats = [c for c in CATEGORIES if any(o.category == c for o in objects)]
    for o in objects:
        candidate("color_category", describe(o), {"op": "attribute", "color_name": o.color_name,
                                                  "category": o.category}, [o.id])
    for c in cats:
        members = [o.id for o in objects if o.category == c]
        prog = {"op": "attribute", "color_name": None, "category": c}
        if len(members) == 1:
            candidate("category", f"the {c}", prog, members)
        else:
            candidate("multi_category", f"all {PLURALS[c]}", prog, members, multi=True)
    for col in colors:
        members = [o.id for o in objects if o.color_name == col]
        prog = {"op": "attribute", "color_name": col, "category": None}
        if len(members) == 1:
            candidate("color", f"the {col} object", prog, members)
        else:
            candidate("multi_color", f"all {col} objects", prog, members, multi=True)

    # Superlatives with a clear runner-up.
    for c in cats + [None]:
        pool = [o for o in objects if c is None or o.category == c]
        if len(pool) < 2:
            continue
        noun = c or "object"
        for measure, ratio, words in (("volume", EXTREME_RATIO, ("largest", "smallest")),
                                      ("height", 1.1, ("tallest", "shortest"))):
            if measure == "height" and c == "sphere":
                continue  # the same as largest / smallest
            key = (lambda o: o.volume) if measure == "volume" else (lambda o: o.height)
            ranked = sorted(pool, key=key)
            if key(ranked[-1]) >= ratio * key(ranked[-2]):
                candidate("superlative", f"the {words[0]} {noun}", {"op": "extreme", "category": c,
                          "measure": measure, "order": "max"}, [ranked[-1].id])
            if key(ranked[1]) >= ratio * key(ranked[0]):
                candidate("superlative", f"the {words[1]} {noun}", {"op": "extreme", "category": c,
                          "measure": measure, "order": "min"}, [ranked[0].id])

    # Closest / farthest of a category to an anchor object, with a clear runner-up.
    for anchor in objects:
        for c in cats:
            pool = [o for o in objects if o.category == c and o.id != anchor.id]
            if len(pool) < 2:
                continue
            ranked = sorted(pool, key=lambda o: float(np.linalg.norm(o.center - anchor.center)))
            dist = [float(np.linalg.norm(o.center - anchor.center)) for o in ranked]
            prog = {"op": "nearest", "category": c, "anchor": anchor.id}
            if dist[1] >= NEAREST_RATIO * dist[0]:
                candidate("nearest", f"the {c} closest to {describe(anchor)}", {**prog, "order": "min"},
                          [ranked[0].id])
            if dist[-1] >= NEAREST_RATIO * dist[-2]:
                candidate("nearest", f"the {c} farthest from {describe(anchor)}", {**prog, "order": "max"},
                          [ranked[-1].id])

    # Left / right of an anchor in one view, no candidate near the anchor's column.
    for v in range(len(geo.eyes)):
        for anchor in objects:
            if not (geo.visible(v, anchor.id) and geo.center_in_image(v, anchor.id)):
                continue
            u_a = geo.u(v, anchor.id)
            for c in cats + [None]:
                pool = [o for o in objects if (c is None or o.category == c) and o.id != anchor.id
                        and geo.visible(v, o.id) and geo.center_in_image(v, o.id)]
                if any(abs(geo.u(v, o.id) - u_a) < SIDE_MARGIN * geo.W for o in pool):
                    continue
                for side in ("left", "right"):
                    targets = [o.id for o in pool if (geo.u(v, o.id) < u_a) == (side == "left")]
                    prog = {"op": "side", "category": c, "anchor": anchor.id, "side": side, "view": v}
                    if c is not None and len(targets) == 1:
                        candidate("side", f"the {c} to the {side} of {describe(anchor)} in view {v}", prog,
                                  targets, v)
                    elif c is None and len(targets) >= 2:
                        text = f"all objects to the {side} of {describe(anchor)} in view {v}"
                        candidate("multi_side", text, prog, targets, v, multi=True)

    out = []
    for kind in sorted(by_kind):
        items = by_kind[kind]
        for j in rng.permutation(len(items))[:per_kind]:
            text, program, targets, view, multi = items[j]
            out.append({"id": len(out), "kind": kind, "text": text, "target_ids": targets, "view": view,
                        "multi": multi, "program": program})
    return out
