"""VLM3 training and evaluation questions from `common`'s synthetic scenes (or any scene folder).

Every question is built from exact ground truth (depth, K, w2c, object boxes) of a `Sample`:

- depth: a valid pixel, its ray distance (or z-depth, `depth_target`), the text coordinate on the
  focal-unified image in [0, 2000);
- correspondence: a pixel of view i, unprojected with its depth and projected into view j (kept
  only when it lands inside view j and is not occluded there), both in [0, 1000);
- pose: views i and j, the relative rotation (angle; yaw/pitch/roll) and the translation of the
  second camera in the first camera's frame (direction; distance), `pose_targets`;
- objects: two visible objects of a view, their 2D boxes as text, and relations / metric answers
  from the 3D boxes in the scene annotations.

The images and the labelled pixels' coordinates come from `vlm3.scenes` (zoom, focal-length
unification). Cameras are OpenCV (x right, y down, z forward), w2c 4x4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from common.cameras import (
    camera_centers,
    project,
    relative_pose,
    rotation_angle,
    transform_points,
    unproject,
)
from vlm3 import prompts as P
from vlm3.scenes import Frame, SceneCache, pixel_to_input, random_valid_pixels

TASKS = ("depth", "correspondence", "pose", "object")


@dataclass
class Example:
    """One question: images [3, H, W] float in [0, 1] (focal-unified), prompt, answer, ground truth.

    `turns` holds further (prompt, answer) questions on the same images, asked and answered in order
    after the first in one multi-turn conversation (training samples with `DataConfig.turns` > 1;
    held-out questions have none)."""

    task: str
    kind: str
    images: list
    prompt: str
    answer: str
    target: dict = field(default_factory=dict)
    turns: list = field(default_factory=list)


def draw_arrow(image: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """DepthLM's marker: a 1-pixel pure-red "-->" drawn into the image, tip just left of pixel (x, y).

    A 5-pixel horizontal shaft in columns x-5..x-1 of row y and two 2-pixel diagonal head strokes.
    image [3, H, W]; returns a copy. Pixels too close to the border raise ValueError.
    """
    H, W = image.shape[-2:]
    if not (6 <= x < W and 2 <= y < H - 2):
        raise ValueError(
            f"pixel ({x}, {y}): the arrow needs 6 pixels left and 2 above/below inside the {W}x{H} image"
        )
    out = image.clone()
    pts = [(y, x - k) for k in range(1, 6)] + [(y - 1, x - 2), (y - 2, x - 3), (y + 1, x - 2), (y + 2, x - 3)]
    red = torch.tensor([1.0, 0.0, 0.0], dtype=image.dtype)
    for r, c in pts:
        out[:, r, c] = red
    return out


@dataclass
class TaskSettings:
    """What the question builders need from the config (see `vlm3.config.DataConfig`)."""

    focal_depth: float = 1000.0
    focal_pose: float = 750.0
    unify_focal: bool = True
    depth_target: str = "distance"
    depth_max_points: int = 1
    think: bool = False
    marker: bool = False
    pair_gap: tuple = (1, 2)
    min_object_pixels: int = 150
    corr_max_points: int = 1  # training correspondence questions ask about 1..N pixels
    turns: dict = field(default_factory=dict)  # training only: questions per conversation (default 1)


class QuestionBuilder:
    """Builds `Example`s of each task from a `SceneCache`, deterministically from an integer key."""

    def __init__(self, cache: SceneCache, settings: TaskSettings):
        self.cache, self.s = cache, settings
        if settings.depth_target not in ("distance", "z"):
            raise ValueError(f"depth_target: expected 'distance' or 'z', got {settings.depth_target!r}")

    def _view(self, s, v, focal):
        return self.cache.view(s, v, focal, self.s.unify_focal)

    # -- depth -------------------------------------------------------------------------------
    def depth(self, rng, n_points: int | None = None, where=None) -> Example | None:
        """Depth at 1..depth_max_points pixels of a random view, or of view `where` = (s, v)."""
        if where is None:
            s = int(rng.integers(len(self.cache)))
            v = int(rng.integers(self.cache.samples[s].images.shape[0]))
        else:
            s, v = where
        sample = self.cache.samples[s]
        view = self._view(s, v, self.s.focal_depth)
        n = n_points or int(rng.integers(1, self.s.depth_max_points + 1))
        if self.s.marker:
            n = 1
        uv0 = random_valid_pixels(rng, view, sample.valid[v], n)
        uv = pixel_to_input(view, uv0) if len(uv0) else None
        if uv is None:
            return None
        rows, cols = (uv0[:, 1] - 0.5).astype(int), (uv0[:, 0] - 0.5).astype(int)
        z = sample.depth[v][rows, cols].double()  # [n] z-depth (exact at pixel centres)
        if self.s.depth_target == "distance":  # the ray length from the camera centre
            z = unproject(torch.from_numpy(uv0), z, view.K0).norm(dim=-1)  # [n]
        value = z.numpy()
        H, W = view.image.shape[-2:]
        image = view.image
        if self.s.marker:
            x, y = int(uv[0, 0]), int(uv[0, 1])
            if not (6 <= x < W and 2 <= y < H - 2):
                return None  # DepthLM skips points next to the border
            image = draw_arrow(image, x, y)
            prompt = P.marker_depth_prompt()
        else:
            nxy = P.normalize_xy(uv, W, H, P.DEPTH_SCALE)
            prompt = P.depth_prompt(nxy, self.s.depth_target)
        return Example(
            "depth",
            "depth",
            [image],
            prompt,
            P.depth_answer(value, self.s.think),
            {"depth": value.tolist(), "uv": uv.tolist(), "where": (s, v)},
        )

    # -- correspondence ----------------------------------------------------------------------
    def draw_pair(self, rng, sample) -> tuple[int, int]:
        """A view pair (i, j) of `sample`: j = i + gap, or i - gap at the end of the path."""
        V = sample.images.shape[0]
        i = int(rng.integers(V))
        gap = int(rng.integers(self.s.pair_gap[0], self.s.pair_gap[1] + 1))
        j = i + gap if i + gap < V else i - gap
        return i, j

    def match(self, fi: Frame, fj: Frame, uv0: np.ndarray) -> np.ndarray | None:
        """Stored-view pixel uv0 [2] of frame i -> its stored-view position [2] in frame j, or None
        when it falls behind camera j, outside view j or on an occluding surface there."""
        z = fi.depth[int(uv0[1]), int(uv0[0])].double()[None]  # [1]
        x_cam_i = unproject(torch.as_tensor(uv0, dtype=torch.float64)[None], z, fi.K0)  # [1, 3]
        x_cam_j = transform_points(relative_pose(fi.w2c, fj.w2c), x_cam_i)[0]  # [3]
        if x_cam_j[2] <= 1e-6:
            return None
        uvj0 = project(x_cam_j[None], fj.K0)[0].numpy()  # [2]
        H0, W0 = fj.depth.shape[-2:]
        cj, rj = int(math.floor(uvj0[0])), int(math.floor(uvj0[1]))
        if not (0 <= cj < W0 and 0 <= rj < H0):
            return None
        dj = float(fj.depth[rj, cj])
        if not (dj > 0 and abs(dj - float(x_cam_j[2])) < 0.03 * dj):  # occluded in view j
            return None
        return uvj0

    def correspondence(self, rng, n_points: int | None = None, where=None) -> Example | None:
        """One pixel (held-out questions) or 1..corr_max_points pixels of view i (training: VLM3's
        samples hold 10 pixels each) and their matches in view j; a random pair, or `where` =
        (s, i, j) as a previous question's target["where"] gives it."""
        if where is None:
            s = int(rng.integers(len(self.cache)))
            i, j = self.draw_pair(rng, self.cache.samples[s])
        else:
            s, i, j = where
        sample = self.cache.samples[s]
        if n_points is None:
            n_points = int(rng.integers(1, self.s.corr_max_points + 1)) if self.s.corr_max_points > 1 else 1
        vi, vj = self._view(s, i, self.s.focal_depth), self._view(s, j, self.s.focal_depth)
        # One point: one draw, kept or rejected (the held-out stream). Several: the first n_points of
        # 3 n_points draws that have a visible match.
        fi, fj = self.cache.frame(s, i), self.cache.frame(s, j)
        cand = random_valid_pixels(rng, vi, sample.valid[i], 1 if n_points == 1 else 3 * n_points)  # [M, 2]
        queries, matches = [], []
        for uv0 in cand:
            uvj0 = self.match(fi, fj, uv0)
            if uvj0 is not None:
                ui, uj = pixel_to_input(vi, uv0[None]), pixel_to_input(vj, uvj0[None])
                if ui is not None and uj is not None:
                    queries.append(ui[0])
                    matches.append(uj[0])
            if len(queries) == n_points:
                break
        if not queries:
            return None
        Hi, Wi = vi.image.shape[-2:]
        Hj, Wj = vj.image.shape[-2:]
        qi = P.normalize_xy(np.array(queries), Wi, Hi, P.BOX_SCALE)  # [n, 2]
        qj = P.normalize_xy(np.array(matches), Wj, Hj, P.BOX_SCALE)  # [n, 2]
        target = {
            "query": qi[0].tolist(),
            "match": qj[0].tolist(),
            "queries": qi.tolist(),
            "matches": qj.tolist(),
            "where": (s, i, j),
        }
        return Example(
            "correspondence",
            "correspondence",
            [vi.image, vj.image],
            P.correspondence_prompt(qi),
            P.correspondence_answer(qj),
            target,
        )

    # -- pose --------------------------------------------------------------------------------
    def pose(self, rng, kind: str | None = None, pair=None) -> Example | None:
        if pair is None:
            s = int(rng.integers(len(self.cache)))
            i, j = self.draw_pair(rng, self.cache.samples[s])
        else:
            s, i, j = pair
        kind = kind or P.POSE_QUESTIONS[int(rng.integers(len(P.POSE_QUESTIONS)))]
        gt = pose_targets(self.cache.frame(s, i).w2c, self.cache.frame(s, j).w2c)
        vi, vj = self._view(s, i, self.s.focal_pose), self._view(s, j, self.s.focal_pose)
        answer = P.pose_answer(
            kind, angle=gt["angle"], ypr=gt["ypr"], t_unit=gt["t_unit"], distance=gt["distance"]
        )
        target = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in gt.items()}
        target["pair"] = [s, i, j]
        return Example("pose", kind, [vi.image, vj.image], P.pose_prompt(kind), answer, target)

    # -- objects -----------------------------------------------------------------------------
    def object(self, rng, kind: str | None = None, where=None) -> Example | None:
        """A question about two objects of a random view, or of view `where` = (s, v)."""
        if where is None:
            s = int(rng.integers(len(self.cache)))
            v = int(rng.integers(self.cache.samples[s].images.shape[0]))
        else:
            s, v = where
        sample = self.cache.samples[s]
        ann = sample.annotations
        vis = [o for o in ann["visibility"]["views"][v]["objects"] if o["pixels"] >= self.s.min_object_pixels]
        if len(vis) < 2:
            return None
        a, b = (vis[k] for k in rng.choice(len(vis), size=2, replace=False))
        objects = {o["id"]: o for o in ann["objects"]}
        oa, ob = objects[a["id"]], objects[b["id"]]
        view = self._view(s, v, self.s.focal_depth)
        boxes = []
        for o in (a, b):
            x0, y0, x1, y1 = o["box2d"]
            corners = pixel_to_input(
                view, np.array([[x0, y0], [max(x1 - 1e-6, x0), max(y1 - 1e-6, y0)]], float)
            )
            if corners is None:
                return None
            H, W = view.image.shape[-2:]
            boxes.append(P.normalize_box(corners.reshape(-1), W, H))
        w2c = sample.w2c[v].double().numpy()
        ca, cb = (w2c[:3, :3] @ np.asarray(o["center"]) + w2c[:3, 3] for o in (oa, ob))  # camera frame
        kind = kind or P.OBJECT_QUESTIONS[int(rng.integers(len(P.OBJECT_QUESTIONS)))]
        if kind == "closer":
            da, db = np.linalg.norm(ca), np.linalg.norm(cb)
            if abs(da - db) < 0.1 * min(da, db):
                return None  # ambiguous
            value = bool(da < db)
        elif kind == "left":
            xa, xb = ca[0] / ca[2], cb[0] / cb[2]
            if abs(xa - xb) < 0.05:
                return None
            value = bool(xa < xb)
        elif kind == "taller":
            ha, hb = oa["height"], ob["height"]
            if abs(ha - hb) < 0.1 * min(ha, hb):
                return None
            value = bool(ha > hb)
        elif kind == "distance":
            value = float(np.linalg.norm(np.asarray(oa["center"]) - np.asarray(ob["center"])))
        else:
            value = float(oa["height"])
        prompt = P.object_prompt(kind, boxes[0], boxes[1] if kind != "height" else None)
        return Example(
            "object",
            kind,
            [view.image],
            prompt,
            P.object_answer(kind, value),
            {"value": value, "where": (s, v)},
        )

    def pose_kinds(self, pair) -> tuple:
        """The pose question types a pair (s, i, j) can be asked: all four."""
        return P.POSE_QUESTIONS

    def build(self, task: str, rng, **kw) -> Example | None:
        return getattr(self, task)(rng, **kw)

    def conversation(self, task: str, rng, n_turns: int) -> Example | None:
        """A first question as `build` draws it, then up to n_turns - 1 further questions on the same
        images in its `turns` (VLM3's samples hold 10 pixels each; a multi-turn conversation keeps each
        answer next to its question). Pose follow-ups ask the pair's other question types. The first
        question uses the same random draws as a single-turn item."""
        first = self.build(task, rng)
        if first is None or n_turns <= 1:
            return first
        where = first.target["pair"] if task == "pose" else first.target["where"]
        kinds = []
        if task == "pose":  # the pair's other question types, in random order
            kinds = [k for k in self.pose_kinds(where) if k != first.kind]
            kinds = [kinds[k] for k in rng.permutation(len(kinds))]
        for k in range(n_turns - 1):
            if task == "pose":
                if k >= len(kinds):
                    break
                ex = self.pose(rng, kind=kinds[k], pair=tuple(where))
            else:
                ex = None
                for _ in range(10):  # a rejected draw (an occluded pixel, an ambiguous pair) draws again
                    ex = self.build(task, rng, where=where)
                    if ex is not None:
                        break
            if ex is None:
                break
            first.turns.append((ex.prompt, ex.answer))
        return first


def pose_targets(w2c_1: torch.Tensor, w2c_2: torch.Tensor) -> dict:
    """What the pose questions ask about camera 2 relative to camera 1, in camera 1's OpenCV frame:
    {"R", "ypr", "angle", "t_unit", "distance"}.

    R = R1 R2^T is camera 2's orientation in camera 1's frame; yaw/pitch/roll are its intrinsic
    Y-X-Z Euler angles (R = Ry(yaw) Rx(pitch) Rz(roll)), "angle" its geodesic angle, all in degrees.
    With y down, Ry(+a) turns the optical axis to +x (right) and Rx(+a) turns it to -y (up); Rz(+a)
    rotates the x axis towards +y (down), i.e. banks right. t_unit and distance are the direction and
    length of camera 2's centre in camera 1's frame, R1 (C2 - C1). (`common.cameras.relative_pose` is
    the transform between the two cameras' frames, w2c_2 inv(w2c_1), the inverse of this pose.)
    """
    R1, R2 = w2c_1[:3, :3].double(), w2c_2[:3, :3].double()  # [3, 3]
    R = R1 @ R2.T  # [3, 3]
    t = (R1 @ (camera_centers(w2c_2.double()) - camera_centers(w2c_1.double()))).numpy()  # [3]
    ypr = Rotation.from_matrix(R.numpy()).as_euler("YXZ", degrees=True)
    dist = float(np.linalg.norm(t))
    angle = math.degrees(float(rotation_angle(R)))
    return {"R": R.numpy(), "ypr": ypr, "angle": angle, "t_unit": t / max(dist, 1e-12), "distance": dist}


def ypr_to_matrix(ypr) -> np.ndarray:
    """Inverse of the decomposition in `pose_targets`: Ry(yaw) Rx(pitch) Rz(roll), degrees."""
    return Rotation.from_euler("YXZ", np.asarray(ypr, dtype=np.float64), degrees=True).as_matrix()


class TaskDataset(torch.utils.data.Dataset):
    """`length` questions of one task; item i is a pure function of (seed, task, i).

    Builders can reject a draw (an occluded correspondence, an ambiguous relation); the item then
    retries with the next sub-key, so the dataset never returns None. `turns` > 1 makes each item a
    conversation of up to that many questions on the same images (`QuestionBuilder.conversation`).
    """

    def __init__(self, builder: QuestionBuilder, task: str, length: int, seed: int, turns: int = 1, **kw):
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        if turns > 1 and kw:
            raise ValueError(
                f"{task}: conversations (turns={turns}) take no question arguments, got {sorted(kw)}"
            )
        self.builder, self.task, self.length, self.seed, self.kw = builder, task, int(length), int(seed), kw
        self.turns = int(turns)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Example:
        for attempt in range(200):
            rng = np.random.default_rng([self.seed, TASKS.index(self.task), int(i), attempt])
            ex = (
                self.builder.conversation(self.task, rng, self.turns)
                if self.turns > 1
                else self.builder.build(self.task, rng, **self.kw)
            )
            if ex is not None:
                return ex
        raise RuntimeError(f"{self.task}: no valid question after 200 draws for item {i}; check the scenes")
