"""Probes: can a random-weight model of a given config learn the spatial skills the two-view tasks need?

    python -m vlm3.diagnostics.probe --task locate --steps 1000   # tiny.yaml: rope base 100, position std 0.5
    python -m vlm3.diagnostics.probe --task locate --steps 1000 model.rope_theta=10000 model.vision_pos_init_std=null
    python -m vlm3.diagnostics.probe --task moved --steps 1500 model.text_layers=4
    python -m vlm3.diagnostics.probe --task turned --yaw 6,20 --steps 1500 model.pair_as_video=true \
        data.focal_pose=40 model.min_pixels=1024 \
        data.root=data/synthetic512 "data.generate_scenes={train: 512, test: 32}"
    python -m vlm3.diagnostics.probe --flow-signs   # no model: where the orbit pairs' yaw sign shows in their motion

Correspondence and the sign of a rotation need the model to compare positions: where the query's
content is in the second image, which way the content moved. These probes isolate that skill with
one-word answers ("left" / "right"), fresh questions at every step (no memorising) on crops of the
synthetic views (the pose probes draw from a split's finite set of orbit pairs: with 64 training
scenes the model memorises them, hence a 512-scene root above), and 128 held-out questions from the
test split:

- `locate`: one image with a red square: is it in the left or the right half? (finding one thing)
- `relate`: one image with a red and a blue square: is the blue one left or right of the red one?
- `relate2`: two images, a red square in each: is the second image's left or right of the first's?
- `moved`: two crops of one view, the second moved sideways by 16-32 px: did the camera move left
  or right? (what correspondence and the yaw sign need, without parallax)
- `turned`: the two images of a pose question on an orbit scene, the second camera turned in place
  to the pair's rotation (no parallax): did the camera turn left or right? (the sign of the yaw)
- `orbit`: the same on the real pair (the camera moves along the orbit and turns to its centre:
  near and far content move opposite ways). Both keep pairs with |yaw| in `--yaw LO,HI` degrees.

Crops are 96 px (6 x 6 tokens of 16 px), squares 16 px; `crop` scales both and the moves. The pose
probes use the pose task's images (`data.focal_pose`, `data.unify_focal`, `model.pair_as_video`).
The held-out majority answer's share (`majority`) is the score of a model that learned nothing.

Training is the VLM3 loop in miniature (the model's own `encode` / `loss` / `generate`, AdamW, linear
warm-up); accuracy on the held-out questions is printed every `--every` steps and written to
`--out` (JSON). Chance is 0.5; a model that has learned nothing answers one word for every question.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from common.datasets import SceneDataset
from vlm3.config import load_config
from vlm3.data import QuestionBuilder, pose_targets
from vlm3.diagnostics.rendered import RenderedSceneCache
from vlm3.model import VLM3
from vlm3.train import ensure_data, task_settings

POSE_TASKS = ("turned", "orbit")
TASKS = ("locate", "relate", "relate2", "moved") + POSE_TASKS
PROMPTS = {
    "locate": "Given this image, is the red square in the left or right half?",
    "relate": "Given this image, is the blue square left or right of the red one?",
    "relate2": (
        "Given these two images, is the red square of the second image left or right of the one in the first?"
    ),
    "moved": "Given these two images, did the camera move left or right?",
    "turned": "Given these two images, did the camera turn left or right?",
    "orbit": "Given these two images, did the camera turn left or right?",
}
RED, BLUE = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])


def _paint(image: torch.Tensor, x: int, y: int, size: int, colour: torch.Tensor) -> None:
    image[:, y : y + size, x : x + size] = colour[:, None, None]


def probe_question(task: str, rng, views: list, crop: int = 96) -> tuple[list, str, str]:
    """(images [3, crop, crop] each, prompt, answer) on a random crop of a random view of `views`
    ([V, 3, H, W] per scene, at least crop + crop // 3 px wide); `answer` is "left" or "right".
    Squares are crop // 6 px; `moved` shifts by crop // 6 to crop // 3 px."""
    square = crop // 6
    if task not in TASKS:
        raise ValueError(f"probe task: expected one of {TASKS}, got {task!r}")
    scene = views[int(rng.integers(len(views)))]
    image = scene[int(rng.integers(scene.shape[0]))]  # [3, H, W]
    H, W = image.shape[-2:]
    if task == "moved":
        s = int(rng.integers(square, crop // 3 + 1)) * (1 if rng.random() < 0.5 else -1)  # the camera's move
        x0 = int(rng.integers(max(0, -s), W - crop - max(0, s) + 1))
        y0 = int(rng.integers(0, H - crop + 1))
        first, second = (
            image[:, y0 : y0 + crop, x0 : x0 + crop],
            image[:, y0 : y0 + crop, x0 + s : x0 + s + crop],
        )
        return [first.clone(), second.clone()], PROMPTS[task], "right" if s > 0 else "left"
    x0, y0 = int(rng.integers(0, W - crop + 1)), int(rng.integers(0, H - crop + 1))
    base = image[:, y0 : y0 + crop, x0 : x0 + crop]
    xs = [int(x) for x in rng.choice(crop - square, size=2, replace=False)]  # two distinct columns
    ys = [int(y) for y in rng.integers(0, crop - square, size=2)]
    if task == "locate" and 2 * xs[0] + square == crop:
        xs[0] += 1  # never centred exactly on the middle
    a = base.clone()
    _paint(a, xs[0], ys[0], square, RED)
    if task == "locate":
        return [a], PROMPTS[task], "left" if xs[0] + square / 2 < crop / 2 else "right"
    if task == "relate":
        _paint(a, xs[1], ys[1], square, BLUE)
        return [a], PROMPTS[task], "left" if xs[1] < xs[0] else "right"
    b = base.clone()
    _paint(b, xs[1], ys[1], square, RED)
    return [a, b], PROMPTS[task], "left" if xs[1] < xs[0] else "right"


class PoseSignQuestions:
    """`turned` / `orbit` questions on the orbit scenes of one split, drawn as the pose task draws
    its pairs (`QuestionBuilder.draw_pair`), redrawn until |yaw| is in `yaw` = (lo, hi) degrees."""

    def __init__(self, cfg, split: str, seed: int, yaw=(3.0, 90.0)):
        self.cache = RenderedSceneCache(cfg.data.root, split, zoom=cfg.data.zoom, seed=seed)
        self.builder = QuestionBuilder(self.cache, task_settings(cfg, training=False))
        self.orbits = [
            s
            for s, sample in enumerate(self.cache.samples)
            if sample.annotations["camera_path"]["kind"] == "orbit"
        ]
        if not self.orbits:
            raise ValueError(f"{cfg.data.root}/{split}: no orbit scene for the turned / orbit probes")
        self.yaw = (float(yaw[0]), float(yaw[1]))

    def draw(self, task: str, rng) -> tuple[list, str, str, tuple]:
        """(images, prompt, "left" | "right", (s, i, j)) where j is the second view (a "turn" frame
        for `turned`, see `vlm3.diagnostics.rendered`); "right" when the yaw is > 0 (the pose prompt's sign)."""
        for _ in range(1000):
            s = self.orbits[int(rng.integers(len(self.orbits)))]
            i, j = self.builder.draw_pair(rng, self.cache.samples[s])
            w2c = self.cache.samples[s].w2c
            yaw = pose_targets(w2c[i], w2c[j])["ypr"][0]  # a turned pair has the same rotation
            if self.yaw[0] <= abs(yaw) <= self.yaw[1]:  # checked before rendering a turned view
                j = ("turn", i, j) if task == "turned" else j
                ex = self.builder.pose(rng, kind="ypr", pair=(s, i, j))
                return ex.images, PROMPTS[task], "right" if yaw > 0 else "left", (s, i, j)
        raise ValueError(f"no orbit pair with |yaw| in {self.yaw} degrees in 1000 draws")


def flow_signs(cfg, split: str, turned: bool = False, pixels: int = 300, seed: int = 0) -> dict:
    """Where the yaw sign of an orbit scene's pose pairs shows in the images' motion.

    For every pair (i, j) the pose task draws from an orbit scene (`QuestionBuilder.draw_pair`'s gaps)
    with |yaw| >= 3 deg: `pixels` random valid pixels of view i are matched into view j with depth,
    as the correspondence labels are. Returns {region: share of pairs whose median horizontal motion
    in that region runs against the turn} (content moves left when the camera turns right) for the
    whole view, its top and bottom thirds and its nearer and farther halves (by depth), "pairs", and
    the share of pairs whose roll has the yaw's sign with their median |roll| (deg): the orbit's cameras
    look down at its centre, so a turn about the world's vertical is a yaw and a roll of camera 1.
    `turned`: the second camera turned in place (no parallax: everything moves against the turn)."""
    qs = PoseSignQuestions(cfg, split, seed)
    rng = np.random.default_rng(seed)
    regions = ("all", "top third", "bottom third", "nearer half", "farther half")
    hits: dict = {r: [] for r in regions}
    rolls = []  # roll x sign(yaw) per counted pair, deg
    lo, hi = qs.builder.s.pair_gap
    for s in qs.orbits:
        sample = qs.cache.samples[s]
        V, (H, W) = sample.images.shape[0], sample.images.shape[-2:]
        for i in range(V):
            fi = qs.cache.frame(s, i)
            for gap in range(lo, hi + 1):
                j = i + gap if i + gap < V else i - gap
                yaw, _, roll = pose_targets(sample.w2c[i], sample.w2c[j])["ypr"]
                if abs(yaw) < 3.0:
                    continue
                fj = qs.cache.frame(s, ("turn", i, j) if turned else j)
                rows = []  # (row, z-depth, horizontal motion in px)
                for u, v in rng.uniform((0, 0), (W, H), size=(pixels, 2)):
                    if not fi.valid[int(v), int(u)]:
                        continue
                    m = qs.builder.match(fi, fj, np.array([u, v]))
                    if m is not None:
                        rows.append((v, float(fi.depth[int(v), int(u)]), m[0] - u))
                if len(rows) < 30:
                    continue
                r = np.array(rows)  # [n, 3]
                rolls.append(roll * np.sign(yaw))
                near = r[:, 1] < np.median(r[:, 1])
                for name, sel in zip(
                    regions, (r[:, 0] >= 0, r[:, 0] < H / 3, r[:, 0] >= 2 * H / 3, near, ~near)
                ):
                    if sel.sum() >= 5:
                        hits[name].append(bool(np.sign(np.median(r[sel, 2])) == -np.sign(yaw)))
    out = {"pairs": len(hits["all"]), **{k: float(np.mean(v)) if v else None for k, v in hits.items()}}
    rolls = np.array(rolls)
    out["roll with the yaw"] = float(np.mean(rolls > 0)) if len(rolls) else None
    out["median |roll|"] = float(np.median(np.abs(rolls))) if len(rolls) else None
    return out


def run_probe(
    task: str,
    cfg,
    steps: int,
    every: int = 250,
    seed: int = 0,
    held_out: int = 128,
    crop: int = 96,
    progress: bool = True,
    yaw=(3.0, 90.0),
) -> dict:
    """Train a fresh `VLM3.build(cfg.model)` on `task` for `steps` steps of `cfg.train.batch_size`
    questions at `cfg.train.lr`; held-out accuracy every `every` steps."""
    if task not in TASKS:
        raise ValueError(f"probe task: expected one of {TASKS}, got {task!r}")
    if task in POSE_TASKS:
        train_q = PoseSignQuestions(cfg, cfg.data.train_split, cfg.train.seed, yaw)
        test_q = PoseSignQuestions(cfg, cfg.data.test_split, cfg.eval.seed, yaw)

        def ask(r, held_out=False):
            return (test_q if held_out else train_q).draw(task, r)[:3]
    else:
        root = Path(cfg.data.root)
        train_views = [s.images for s in SceneDataset(root, cfg.data.train_split)]
        test_views = [s.images for s in SceneDataset(root, cfg.data.test_split)]

        def ask(r, held_out=False):
            return probe_question(task, r, test_views if held_out else train_views, crop)

    torch.manual_seed(seed)
    vlm = VLM3.build(cfg.model, seed=seed)
    opt = torch.optim.AdamW(vlm.model.parameters(), lr=cfg.train.lr)
    rng, erng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    evalset = [ask(erng, held_out=True) for _ in range(held_out)]
    majority = float(
        max(np.mean([q[2] == "right" for q in evalset]), np.mean([q[2] == "left" for q in evalset]))
    )
    B = cfg.train.batch_size

    def accuracy() -> float:
        vlm.model.eval()
        said = []
        for k in range(0, len(evalset), 32):
            chunk = evalset[k : k + 32]
            said += vlm.generate([q[0] for q in chunk], [q[1] for q in chunk], 3)
        vlm.model.train()
        return float(np.mean([s.strip().startswith(q[2]) for s, q in zip(said, evalset)]))

    curve, losses, t0 = [{"step": 0, "accuracy": accuracy()}], [], time.time()
    vlm.model.train()
    for step in range(steps):
        qs = [ask(rng) for _ in range(B)]
        for group in opt.param_groups:
            group["lr"] = cfg.train.lr * min(1.0, (step + 1) / max(1, cfg.train.warmup))
        loss = vlm.loss(vlm.encode([q[0] for q in qs], [q[1] for q in qs], [q[2] for q in qs]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vlm.model.parameters(), cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            curve.append(
                {
                    "step": step + 1,
                    "accuracy": accuracy(),
                    "loss": float(np.mean(losses[-every:])),
                    "seconds": round(time.time() - t0, 1),
                }
            )
            if progress:
                print(
                    f"{task} step {step + 1}: held-out accuracy {curve[-1]['accuracy']:.3f} (majority "
                    f"{majority:.3f}), loss {curve[-1]['loss']:.3f}",
                    flush=True,
                )
    return {
        "task": task,
        "prompt": PROMPTS[task],
        "steps": steps,
        "batch_size": B,
        "lr": cfg.train.lr,
        "rope_theta": cfg.model.rope_theta,
        "held_out": held_out,
        "majority": majority,
        "yaw": list(yaw) if task in POSE_TASKS else None,
        "curve": curve,
        "final_accuracy": curve[-1]["accuracy"],
    }


def main(argv=None) -> None:
    ap = OneLineParser("vlm3.diagnostics.probe", description=__doc__)
    ap.add_argument("--task", choices=TASKS, help="the task whose accuracy curve is probed")
    ap.add_argument(
        "--flow-signs",
        action="store_true",
        help="instead of training: where the orbit pairs' yaw sign shows in their motion (no model)",
    )
    ap.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    ap.add_argument("--every", type=int, default=250, help="evaluate every N steps (default 250)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the training run (default 0)")
    ap.add_argument("--yaw", default="3,90", help="turned / orbit: keep pairs with |yaw| in LO,HI degrees")
    ap.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "tiny.yaml"),
                    help="YAML config (default: vlm3/configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="JSON file for the accuracy curve")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="key=value, e.g. model.rope_theta=100")
    args = ap.parse_args(argv)
    with one_line_errors("vlm3.diagnostics.probe"):
        _run(ap, args)


def _run(ap, args) -> None:
    set_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    try:
        yaw = tuple(float(v) for v in args.yaw.split(","))
    except ValueError:
        yaw = ()
    if len(yaw) != 2 or not 0 <= yaw[0] <= yaw[1]:
        ap.error(f"--yaw {args.yaw!r}: expected LO,HI degrees with 0 <= LO <= HI")
    ensure_data(cfg)
    if args.flow_signs:
        out = {
            split: {kind: flow_signs(cfg, split, turned=kind == "turned") for kind in ("real", "turned")}
            for split in (cfg.data.train_split, cfg.data.test_split)
        }
        print(json.dumps(out, indent=1))
        return
    if args.task is None:
        ap.error("--task is required (or --flow-signs)")
    result = run_probe(args.task, cfg, args.steps, args.every, args.seed, yaw=yaw)
    result["overrides"] = list(args.overrides)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("task", "steps", "final_accuracy", "majority")}))


if __name__ == "__main__":
    main()
