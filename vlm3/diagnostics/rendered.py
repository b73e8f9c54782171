"""Views rendered from a scene's annotations, and the questions and training lessons built on them.

    python -m vlm3.diagnostics.rendered --turn-pairs 0.5 train.steps=1300 train.out_dir=results/vlm3/turned
    python -m vlm3.diagnostics.rendered --copy-lessons 0.35 train.out_dir=results/vlm3/copy35
    python -m vlm3.diagnostics.rendered --copy-lessons 0.35 --corr-shift 20 train.out_dir=results/vlm3/shift20
    python -m vlm3.diagnostics.rendered --both-orders ... (the long profile's pose settings, DIAGNOSTICS.md)
    python -m vlm3.diagnostics.rendered --small-turns-first 5000 --orbits-first ... (the same)

Two kinds of second view, neither in the paper (DIAGNOSTICS.md, "Earlier diagnostics"):

- a turned pair, view key ("turn", i, j): camera i turned in place to camera j's orientation, the
  same rotation as the real pair (i, j) and no translation, so no parallax (every pixel moves by
  one homography);
- a moved copy, view key ("shift", i, dx, dy, m): camera i with its crop window moved by (dx, dy)
  stored-view pixels, |dx|, |dy| <= m (a render with a margin of m pixels, cropped): content at
  (u, v) in view i appears at (u - dx, v - dy), and the uncovered border shows what is really there.

`RenderedQuestionBuilder` asks a share `copy_lessons` of the training correspondence questions on one
view twice (the answer is the query: a lesson in copying the query coordinate, which a pretrained VLM
needs no lesson in; with `corr_shift` > 0 on moved copies instead), and a share `turn_pairs` of the
training correspondence and rotation (angle, yaw/pitch/roll) questions on turned pairs. With
`both_orders` every training pair is swapped half the time: along a path most pairs run forwards (81%
for 8 views), so an orbit's pairs all turn one way and a model could learn each training scene's yaw
sign rather than read it. With `small_turns_first` = N the first N steps' pose questions are on
pairs that turn by at most `max_turn` degrees (orbits only with `orbits_first`), a curriculum from
the turns a model reads first (DIAGNOSTICS.md) to all of them. `held_out_questions` builds the test questions on turned
pairs or moved copies (`vlm3.diagnostics.two_view --turned | --shifted`). The random draws of the
real questions are those of `vlm3.data.QuestionBuilder`: with these settings off the questions are
the product's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.datasets import MixtureDataset
from common.synthetic import Scene, render_views
from vlm3 import prompts as P
from vlm3.config import Config, load_config
from vlm3.data import QuestionBuilder, TaskDataset, TaskSettings, pose_targets
from vlm3.scenes import Frame, SceneCache, View
from vlm3.train import build_mixture as product_mixture
from vlm3.train import ensure_data, scene_cache, task_settings, train

ROTATIONS = ("angle", "ypr")  # the pose questions a turned pair (no translation) can answer


class RenderedSceneCache(SceneCache):
    """A `SceneCache` whose views can also be turned pairs and moved copies (see the module doc)."""

    def __init__(self, root, split: str, zoom=(1.0, 1.0), seed: int = 0, max_scenes: int | None = None):
        super().__init__(root, split, zoom, seed, max_scenes)
        self._rendered: dict = {}  # turned frames and shift canvases
        self._scenes: dict = {}  # s -> Scene, for the rendered frames

    @classmethod
    def like(cls, cache: SceneCache) -> RenderedSceneCache:
        """The same scenes and zooms as `cache` (no re-reading)."""
        out = cls.__new__(cls)
        out.samples, out.zoom, out.seed, out._views = cache.samples, cache.zoom, cache.seed, {}
        out._rendered, out._scenes = {}, {}
        return out

    def frame(self, s: int, v) -> Frame:
        if isinstance(v, (int, np.integer)):
            return super().frame(s, v)
        sample = self.samples[s]
        H, W = sample.images.shape[-2:]
        if v[0] == "shift":
            _, i, dx, dy, m = v
            if (s, i, m) not in self._rendered:
                K = sample.K[i].double().clone()
                K[0, 2], K[1, 2] = K[0, 2] + m, K[1, 2] + m
                self._rendered[(s, i, m)] = self._render(s, K, sample.w2c[i].double(), H + 2 * m, W + 2 * m)
            out = self._rendered[(s, i, m)]
            rows, cols = slice(m + dy, m + dy + H), slice(m + dx, m + dx + W)
            K = sample.K[i].double().clone()
            K[0, 2], K[1, 2] = K[0, 2] - dx, K[1, 2] - dy
            return Frame(
                out["images"][0][:, rows, cols],
                out["depth"][0][rows, cols],
                out["valid"][0][rows, cols],
                K,
                sample.w2c[i].double(),
                self.zoom_factor(s),
            )
        key = (s, tuple(v))
        if key not in self._rendered:
            _, i, j = v
            w2c = sample.w2c[j].double().clone()  # orientation of j, centre of i: t = -R C_i
            c_i = -sample.w2c[i][:3, :3].double().T @ sample.w2c[i][:3, 3].double()
            w2c[:3, 3] = -w2c[:3, :3] @ c_i
            out = self._render(s, sample.K[i].double(), w2c, H, W)
            self._rendered[key] = Frame(
                out["images"][0], out["depth"][0], out["valid"][0], sample.K[i].double(), w2c, self.zoom_factor(s)
            )
        return self._rendered[key]

    def _render(self, s: int, K: torch.Tensor, w2c: torch.Tensor, H: int, W: int) -> dict:
        if s not in self._scenes:
            self._scenes[s] = Scene.from_annotations(self.samples[s].annotations)
        out = render_views(self._scenes[s], K[None], w2c[None], H, W)
        return {k: out[k].float() if k != "valid" else out[k] for k in ("images", "depth", "valid")}

    def view(self, s: int, v, focal: float, unify: bool) -> View:
        if isinstance(v, tuple) and v[0] == "shift":  # moved copies are cheap to crop and many: not kept
            return self.make_view(self.frame(s, v), focal, unify)
        return super().view(s, v, focal, unify)


class RenderedQuestionBuilder(QuestionBuilder):
    """`QuestionBuilder` that asks a share `copy_lessons` of its drawn correspondence questions on one
    view twice (moved copies when `corr_shift` > 0) and a share `turn_pairs` of its drawn
    correspondence and rotation questions on turned pairs."""

    def __init__(self, cache: RenderedSceneCache, settings: TaskSettings, turn_pairs: float = 0.0,
                 corr_shift: int = 0, both_orders: bool = False, max_turn: float | None = None,
                 orbits_only: bool = False, copy_lessons: float = 0.0):
        super().__init__(cache, settings)
        if not (0 <= turn_pairs <= 1 and 0 <= copy_lessons <= 1) or corr_shift < 0:
            raise ValueError(f"turn_pairs {turn_pairs}, copy_lessons {copy_lessons}: expected 0..1; "
                             f"corr_shift {corr_shift}: expected >= 0")
        if corr_shift > 0 and copy_lessons == 0:
            raise ValueError(f"corr_shift {corr_shift}: moves the copy lessons, but copy_lessons is 0")
        if max_turn is not None and max_turn <= 0:
            raise ValueError(f"max_turn {max_turn}: expected degrees > 0")
        self.copy_lessons = float(copy_lessons)
        self.turn_pairs, self.corr_shift, self.both_orders = float(turn_pairs), int(corr_shift), bool(both_orders)
        self.max_turn, self.orbits_only = max_turn, bool(orbits_only)

    def small_turn_pair(self, rng) -> tuple | None:
        """A drawn pose pair (s, i, j) that turns by at most `max_turn` degrees (on an orbit if
        `orbits_only`), or None after 100 draws (`TaskDataset` retries with the next sub-key)."""
        for _ in range(100):
            s = int(rng.integers(len(self.cache)))
            if self.orbits_only and self.cache.samples[s].annotations["camera_path"]["kind"] != "orbit":
                continue
            i, j = self.draw_pair(rng, self.cache.samples[s])
            turn = pose_targets(self.cache.frame(s, i).w2c, self.cache.frame(s, j).w2c)["angle"]
            if self.max_turn is None or turn <= self.max_turn:
                return s, i, j
        return None

    def draw_pair(self, rng, sample) -> tuple[int, int]:
        i, j = super().draw_pair(rng, sample)
        if self.both_orders and rng.random() < 0.5:
            i, j = j, i
        return i, j

    def correspondence(self, rng, n_points: int | None = None, where=None):
        if where is None:  # the product's draws, then the rendered second view's
            s = int(rng.integers(len(self.cache)))
            i, j = self.draw_pair(rng, self.cache.samples[s])
            if self.copy_lessons > 0 and rng.random() < self.copy_lessons:
                j = i  # a copy lesson (drawn only when enabled: the product's stream otherwise) ...
                if self.corr_shift > 0:  # ... or the same camera with its crop window moved
                    m = self.corr_shift
                    j = ("shift", i, int(rng.integers(-m, m + 1)), int(rng.integers(-m, m + 1)), m)
            elif self.turn_pairs > 0 and rng.random() < self.turn_pairs:
                j = ("turn", i, j)
            where = (s, i, j)
        return super().correspondence(rng, n_points, where)

    def pose(self, rng, kind: str | None = None, pair=None):
        if pair is None and (self.max_turn is not None or self.orbits_only):
            pair = self.small_turn_pair(rng)
            if pair is None:
                return None
        if pair is None and self.turn_pairs > 0:  # the product's draws, then the turn's
            s = int(rng.integers(len(self.cache)))
            i, j = self.draw_pair(rng, self.cache.samples[s])
            kind = kind or P.POSE_QUESTIONS[int(rng.integers(len(P.POSE_QUESTIONS)))]
            if kind in ROTATIONS and rng.random() < self.turn_pairs:
                j = ("turn", i, j)  # same rotation as the pair (i, j), no translation
            pair = (s, i, j)
        return super().pose(rng, kind, pair)

    def pose_kinds(self, pair) -> tuple:
        """A turned pair has no translation: only the rotation questions."""
        return ROTATIONS if isinstance(pair[2], tuple) else P.POSE_QUESTIONS


def held_out_questions(cfg: Config, cache: SceneCache | None = None, turned: bool = False,
                       shifted: int = 0) -> dict:
    """The test questions on rendered second views, the product's test pairs otherwise:

    `turned`: correspondence and rotation questions on the test pairs with the second camera turned
    in place (the same rotations, no parallax); `shifted` > 0: correspondence questions only, each
    view against itself with the crop window moved by up to `shifted` pixels."""
    if turned == (shifted > 0):
        raise ValueError("held_out_questions: give one of turned and shifted")
    e = cfg.eval
    cache = RenderedSceneCache.like(cache or scene_cache(cfg, "test"))
    builder = RenderedQuestionBuilder(cache, task_settings(cfg, training=False), turn_pairs=1.0 if turned else 0.0,
                                      corr_shift=shifted, copy_lessons=1.0 if shifted > 0 else 0.0)
    corr = [
        TaskDataset(builder, "correspondence", e.correspondence, e.seed, n_points=1)[i]
        for i in range(e.correspondence)
    ]
    if shifted > 0:
        return {"correspondence": corr}
    pose = []
    rng = np.random.default_rng([e.seed, 99])  # the product's test pairs (vlm3.evaluate)
    for _ in range(e.pose_pairs):
        s = int(rng.integers(len(cache)))
        i, j = builder.draw_pair(rng, cache.samples[s])
        pose += [builder.pose(rng, kind=k, pair=(s, i, ("turn", i, j))) for k in ROTATIONS]
    return {"correspondence": corr, "pose": pose}


class Curriculum(torch.utils.data.Dataset):
    """Items 0 .. cut - 1 from `first`, the rest from `then` (both as long as the run)."""

    def __init__(self, first: MixtureDataset, then: MixtureDataset, cut: int):
        self.first, self.then, self.cut = first, then, int(cut)

    def __len__(self) -> int:
        return len(self.then)

    def __getitem__(self, k: int):
        return self.first[k] if k < self.cut else self.then[k]


def build_mixture(cfg: Config, turn_pairs: float = 0.0, corr_shift: int = 0, both_orders: bool = False,
                  small_turns_first: int = 0, max_turn: float = 20.0, orbits_first: bool = False,
                  copy_lessons: float = 0.0):
    """The product's training mixture (`vlm3.train.build_mixture`) with rendered lessons. With
    `small_turns_first` = N > 0 the first N steps' pose questions are on pairs that turn by at most
    `max_turn` degrees (orbits only if `orbits_first`); one process (a step is train.batch_size items)."""
    cache = RenderedSceneCache.like(scene_cache(cfg))

    def mixture(**small):
        builder = RenderedQuestionBuilder(cache, task_settings(cfg), turn_pairs, corr_shift, both_orders,
                                          copy_lessons=copy_lessons, **small)
        return product_mixture(cfg, builder=builder)

    if small_turns_first <= 0:
        return mixture()
    first = mixture(max_turn=max_turn, orbits_only=orbits_first)
    return Curriculum(first, mixture(), small_turns_first * cfg.train.batch_size)


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.diagnostics.rendered", description=__doc__)
    ap.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "tiny.yaml"),
                    help="YAML config (default: vlm3/configs/tiny.yaml)")
    ap.add_argument("--turn-pairs", type=float, default=0.0, metavar="P",
                    help="share of training correspondence and rotation questions on turned pairs (0..1)")
    ap.add_argument("--copy-lessons", type=float, default=0.0, metavar="P",
                    help="share of training correspondence questions asked on one view twice (0..1)")
    ap.add_argument("--corr-shift", type=int, default=0, metavar="N",
                    help="the copy lessons (--copy-lessons) on copies moved by up to N px")
    ap.add_argument("--both-orders", action="store_true",
                    help="each training pair's views swapped half the time (held-out pairs unchanged)")
    ap.add_argument("--small-turns-first", type=int, default=0, metavar="N",
                    help="the first N steps' pose questions on pairs turning by at most --max-turn degrees")
    ap.add_argument("--max-turn", type=float, default=20.0, metavar="DEG", help="see --small-turns-first")
    ap.add_argument("--orbits-first", action="store_true", help="--small-turns-first on orbit pairs only")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. train.steps=200")
    args = ap.parse_args(argv)
    with one_line_errors("vlm3.diagnostics.rendered"):
        if args.small_turns_first < 0 or args.max_turn <= 0:
            raise ValueError(f"--small-turns-first {args.small_turns_first}: expected >= 0; "
                             f"--max-turn {args.max_turn}: expected degrees > 0")
        if not 0 <= args.copy_lessons <= 1 or (args.corr_shift > 0 and args.copy_lessons == 0):
            raise ValueError(f"--copy-lessons {args.copy_lessons}: expected 0..1, and > 0 with --corr-shift")
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        ensure_data(cfg)
        mixture = build_mixture(cfg, args.turn_pairs, args.corr_shift, args.both_orders,
                                args.small_turns_first, args.max_turn, args.orbits_first, args.copy_lessons)
        train(cfg, mixture=mixture)
    print(f"checkpoint: {cfg.train.out_dir}/checkpoint")


if __name__ == "__main__":
    main()
