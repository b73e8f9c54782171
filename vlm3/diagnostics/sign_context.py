"""Where does a pose model take the yaw's sign from: the images, or an earlier answer?

    python -m vlm3.diagnostics.sign_context --checkpoint results/vlm3/long/pose/checkpoint model.pair_as_video=true

For each held-out pair of the chosen camera path (`--path`, default orbit) that turns by at least
1 degree, the model scores its true "Yaw=..., Pitch=..., Roll=..." answer against the same answer
with the yaw's sign flipped, at the sign's token (teacher-forced, so no generation): asked alone,
after the pair's direction question answered truly, and after the direction answered with the sign
of its x component flipped. On an orbit the yaw's sign is the opposite of that x sign (the camera
turns to keep the orbit's centre in view), so a model that reads the sign from the images is right
alone and ignores a flipped direction, while one that copies it from the direction answer follows
the flip. The direction's own x sign, asked alone, is scored the same way. Training conversations
that ask a pair's four questions together (tiny.yaml's `data.turns`) allow that copy.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from common.cli import OneLineParser, add_threads_flag, one_line_errors, set_threads
from vlm3 import prompts as P
from vlm3.diagnostics.two_view import path_kind


def last_answer_nll(vlm, images, turns) -> np.ndarray:
    """[T] negative log-likelihood of each token of the last answer of the conversation `turns`
    [(prompt, answer), ...] on `images` (teacher-forced; the answer's `<|im_end|>` included)."""
    (prompt, answer), more = turns[0], list(turns[1:])
    batch = vlm.encode([images], [prompt], answers=[answer], turns=[more])
    labels = batch.pop("labels")[0]  # [L]
    vlm.model.eval()
    with torch.no_grad():
        logits = vlm.model(**{k: v.to(vlm.device) for k, v in batch.items()}).logits[0].float().cpu()  # [L, V]
    pos = (labels != -100).nonzero()[:, 0].numpy()  # labelled positions, answers in order
    last = pos[np.split(np.arange(len(pos)), np.where(np.diff(pos) > 1)[0] + 1)[-1]]  # the last answer's run
    logp = torch.log_softmax(logits[last - 1], -1)  # [T, V]: token t is predicted at t - 1
    return -logp[torch.arange(len(last)), labels[last]].numpy()


def prefers_first(nll_a: np.ndarray, nll_b: np.ndarray) -> bool:
    """At the first token where two answers' tokenisations differ, is the first answer more likely?"""
    n = min(len(nll_a), len(nll_b))
    diff = np.nonzero(nll_a[:n] != nll_b[:n])[0]
    k = int(diff[0]) if len(diff) else 0
    return bool(nll_a[k] < nll_b[k])


def sign_sources(vlm, questions: list, cache, path: str = "orbit") -> dict:
    """The shares described in the module docstring, over the pose `questions` of `path`'s pairs."""
    by_pair = {}
    for e in questions:
        by_pair.setdefault(tuple(e.target["pair"]), {})[e.kind] = e
    rows = {"yaw_alone": [], "yaw_after_true_direction": [], "yaw_follows_flipped_direction": [],
            "direction_x_alone": []}
    for pair, q in sorted(by_pair.items()):
        if path_kind(cache, pair[0]) != path or not {"ypr", "direction"} <= set(q):
            continue
        e, d = q["ypr"], q["direction"]
        ypr = np.array(e.target["ypr"], dtype=np.float64)
        if abs(ypr[0]) < 1.0:
            continue
        flipped = ypr * [-1, 1, 1]
        t = np.array(d.target["t_unit"], dtype=np.float64)
        t_flipped = t * [-1, 1, 1]
        true, wrong = P.pose_answer("ypr", ypr=ypr), P.pose_answer("ypr", ypr=flipped)
        said = (d.prompt, P.pose_answer("direction", t_unit=t))
        said_flipped = (d.prompt, P.pose_answer("direction", t_unit=t_flipped))
        for name, before in (("yaw_alone", []), ("yaw_after_true_direction", [said]),
                             ("yaw_follows_flipped_direction", [said_flipped])):
            a = last_answer_nll(vlm, e.images, before + [(e.prompt, true)])
            b = last_answer_nll(vlm, e.images, before + [(e.prompt, wrong)])
            rows[name].append(prefers_first(b, a) if name == "yaw_follows_flipped_direction" else prefers_first(a, b))
        rows["direction_x_alone"].append(prefers_first(last_answer_nll(vlm, d.images, [said]),
                                                       last_answer_nll(vlm, d.images, [said_flipped])))
    return {"path": path, "pairs": len(rows["yaw_alone"]),
            **{k: float(np.mean(v)) if v else None for k, v in rows.items()}}


def main(argv=None) -> dict:
    from pathlib import Path

    from vlm3.config import load_config
    from vlm3.evaluate import held_out_questions
    from vlm3.model import VLM3
    from vlm3.train import scene_cache

    ap = OneLineParser("vlm3.diagnostics.sign_context", description=__doc__)
    ap.add_argument("--checkpoint", required=True, help="a trained pose model's checkpoint folder")
    ap.add_argument("--path", default="orbit", choices=("orbit", "forward"), help="the test pairs' camera path")
    ap.add_argument("--config", default=str(Path(__file__).parents[1] / "configs" / "tiny.yaml"),
                    help="YAML config of the data settings (default: vlm3/configs/tiny.yaml)")
    ap.add_argument("--out", default=None, help="write the shares here (JSON)")
    add_threads_flag(ap)
    ap.add_argument("overrides", nargs="*", help="config overrides key=value (model.pair_as_video=true)")
    args = ap.parse_args(argv)
    with one_line_errors("vlm3.diagnostics.sign_context"):
        set_threads(args.threads)
        cfg = load_config(args.config, args.overrides)
        vlm = VLM3.from_pretrained(args.checkpoint)
        cache = scene_cache(cfg, "test")
        res = sign_sources(vlm, held_out_questions(cfg, cache)["pose"], cache, args.path)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
