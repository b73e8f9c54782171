"""G2VLM (`g2vlm/`): depth, pose and reconstruction from its RGB-only network (the official path:
no depth, no poses in), grounding and QA in its sensor-depth mode (the task's depth as the sensor).

The model works on 4 square views at `model.image_size` (64 px in tiny.yaml): the task's 128 px
views are resized (K with them), and its 64 px outputs are brought back to 128 px by nearest
upsampling. Grounding and QA get 8 views: the adapter keeps 4 spread uniformly over them, swapping
in the view a text names (its "view k" renumbered to the kept order), as `g2vlm.data` does.
Multi-target expressions get the single best candidate (G2VLM grounds one object).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.methods import Method, Unavailable, find_run
from common.cameras import resize

RUNS = ["results/g2vlm/g2vlm/stage2/final", "results/g2vlm/benchmark/stage2/final"]


def _up(x: torch.Tensor, size) -> torch.Tensor:
    """[V, h, w, (C)] -> [V, H, W, (C)] nearest."""
    chan = x.ndim == 4
    y = x.permute(0, 3, 1, 2) if chan else x[:, None]
    y = F.interpolate(y.float(), size=tuple(size), mode="nearest")
    return y.permute(0, 2, 3, 1) if chan else y[:, 0]


def four_views(num_views: int, named: int | None) -> list[int]:
    views = sorted({int(round(x)) for x in np.linspace(0, num_views - 1, min(4, num_views))})
    if named is not None and named not in views:
        views[int(np.argmin([abs(v - named) for v in views]))] = named
        views = sorted(views)
    return views


def _named_view(text: str) -> int | None:
    m = re.search(r"\bview (\d+)\b", text)
    return None if m is None else int(m.group(1))


class G2VLMMethod(Method):
    name = "g2vlm"
    paper = "g2vlm"
    tasks = ("depth", "pose", "recon", "grounding", "qa")

    def load(self) -> None:
        from g2vlm.model import G2VLM

        path = self.checkpoint or find_run(RUNS, "g2vlm.json")
        if path is None and self.train_missing:
            import g2vlm
            from g2vlm.config import load_config
            from g2vlm.train import train

            tiny = Path(g2vlm.__file__).parent / "configs" / "tiny.yaml"
            cfg = load_config(tiny, ["train.out_dir=results/g2vlm/benchmark"])
            path = train(cfg, progress=False)
        if path is None:
            raise Unavailable(f"no trained run (looked for {RUNS[0]}; run make reproduce-g2vlm)")
        self.model = G2VLM.from_pretrained(path).eval()
        self.size = self.model.geometry.config.image_size
        self._cache = {}  # scene id -> RGB-only outputs (depth, pose and recon give the same views)

    # -- RGB-only geometry ------------------------------------------------------------------------
    @torch.no_grad()
    def rgb_only(self, q):
        """-> (depth [V, S, S], w2c [V, 4, 4] with view 0 at the identity, world [V, S, S, 3], normals)."""
        if q.scene_id not in self._cache:
            S = self.size
            rgb, _ = resize(q.images, q.K, (S, S))
            self._cache[q.scene_id] = self.model.geometry.rgb_only(rgb.clamp(0, 1), torch.eye(4))
        return self._cache[q.scene_id]

    def answer(self, task: str, queries: list) -> list:
        return [getattr(self, f"_{task}")(q) for q in queries]

    def _depth(self, q):
        from benchmarks.tasks.depth import DepthAnswer

        depth, *_ = self.rgb_only(q)
        return DepthAnswer(depth=_up(depth, q.images.shape[-2:]))

    def _pose(self, q):
        from benchmarks.tasks.pose import PoseAnswer

        _, w2c, *_ = self.rgb_only(q)
        return PoseAnswer(w2c=w2c)

    def _recon(self, q):
        from benchmarks.tasks.recon import ReconAnswer

        _, _, world, _ = self.rgb_only(q)
        return ReconAnswer(points=_up(world, q.images.shape[-2:]))

    # -- sensor-depth mode --------------------------------------------------------------------------
    @torch.no_grad()
    def _tokens_and_text(self, q, text: str):
        named = _named_view(text)
        views = four_views(q.images.shape[0], named)
        if named is not None:
            text = re.sub(
                r"\bview (\d+)\b",
                lambda m: f"view {views.index(int(m.group(1)))}" if int(m.group(1)) in views else m.group(0),
                text,
            )
        S = self.size
        rgb, K = resize(q.images[views], q.K[views], (S, S))
        depth, _ = resize(q.depth[views][:, None], q.K[views], (S, S), mode="nearest")
        g = self.model.geometry
        tokens = g.tokens(rgb.clamp(0, 1), depth[:, 0], K, q.w2c[views], "sensor")
        return tokens, text, rgb, K, q.w2c[views]

    @torch.no_grad()
    def _grounding(self, q):
        from benchmarks.tasks.grounding import GroundingAnswer
        from g2vlm.objective import PHRASE_PREFIX

        tokens, text, rgb, K, w2c = self._tokens_and_text(q, q.text)
        g = self.model.geometry
        feats, _ = g.object_features(tokens, q.candidates, rgb, K, w2c)
        enc = self.model.encode([PHRASE_PREFIX + text])
        scores = g.ground(feats, q.candidates, w2c, self.model.phrase_embeddings(enc))  # [1, N]
        return GroundingAnswer([int(scores[0].argmax())])

    @torch.no_grad()
    def _qa(self, q):
        from g2vlm.objective import QA_SUFFIX

        tokens, text, *_ = self._tokens_and_text(q, q.question)
        return self.model.answer([text + QA_SUFFIX], [tokens])[0]
