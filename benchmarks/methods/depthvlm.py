"""DepthVLM (`depthvlm/`): metric depth and text from one forward pass per view, as its evaluation runs.

Each view is resampled to the run's canonical focal length (`common.cameras.unify_focal`) and centre
cropped to at most the run's `max_size` and a multiple of the processor's token size
(`depthvlm.data.to_vlm_items`); `generate_with_depth` returns the depth map of that crop, which is
warped back to the view's own camera (`resample_to_intrinsics`, nearest). Pixels the crop does not
cover (a thin border) take the nearest covered pixel's depth, so every pixel has an answer.
Questions go to one view: the one the question names, else view 0 (DepthVLM reads one image);
it was trained on its own three question templates, so the shared questions are out of its
distribution.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.methods import Method, Unavailable, find_run
from common.cameras import crop, resample_to_intrinsics, unify_focal

RUNS = ["results/depthvlm/run/stage2/final", "results/depthvlm/benchmark/stage2/final"]


def fill_nearest(depth: torch.Tensor) -> torch.Tensor:
    """[H, W] with zeros -> every zero replaced by its nearest non-zero pixel's value."""
    from scipy.ndimage import distance_transform_edt

    d = depth.numpy()
    if (d > 0).all() or not (d > 0).any():
        return depth
    _, (ii, jj) = distance_transform_edt(d <= 0, return_indices=True)
    return torch.from_numpy(d[ii, jj])


class DepthVLMMethod(Method):
    name = "depthvlm"
    paper = "depthvlm"
    tasks = ("depth", "qa")

    def load(self) -> None:
        import depthvlm
        from depthvlm.config import load_config
        from depthvlm.model import load_pretrained

        tiny = Path(depthvlm.__file__).parent / "configs" / "tiny.yaml"
        path = self.checkpoint or find_run(RUNS, "config.json")
        if path is None and self.train_missing:
            from depthvlm.train import train

            path = train(load_config(tiny, ["out_dir=results/depthvlm/benchmark"]))
        if path is None:
            raise Unavailable(f"no trained run (looked for {RUNS[0]}; run make reproduce-depthvlm)")
        run_cfg = Path(path).parents[1] / "config.json"
        data = json.loads(run_cfg.read_text())["data"] if run_cfg.is_file() else {}
        defaults = load_config(tiny).data
        self.focal = float(data.get("focal", defaults.focal))
        self.max_size = int(data.get("max_size", defaults.max_size))
        self.model, self.processor = load_pretrained(path)
        self.model.eval()

    def _view(self, image: torch.Tensor, K: torch.Tensor) -> tuple:
        """-> (image crop [3, h, w] at the canonical focal, its K [3, 3])."""
        f = self.processor.factor
        image_u, K_u = unify_focal(image, K, self.focal)
        H, W = image_u.shape[-2:]
        th, tw = min(H, self.max_size or H) // f * f, min(W, self.max_size or W) // f * f
        if th < f or tw < f:
            raise ValueError(f"view of {H}x{W} px at focal {self.focal} is smaller than one token ({f} px)")
        img, K_c = crop(image_u, K_u, (H - th) // 2, (W - tw) // 2, th, tw)
        return img.clamp(0, 1), K_c

    @torch.no_grad()
    def _run(self, images: list, prompts: list[str], depth: bool):
        batch = self.processor(images, prompts)
        if depth:
            ids, maps = self.model.generate_with_depth(batch, max_new_tokens=10)
            return self.processor.decode(ids), [m.float().cpu() for m in maps]
        batch.pop("image_sizes")
        ids = self.model.generate(**batch, max_new_tokens=10, do_sample=False, predict_depth=False)
        return self.processor.decode(ids[:, batch["input_ids"].shape[1] :]), None

    def answer(self, task: str, queries: list) -> list:
        from benchmarks.tasks.depth import DepthAnswer
        from depthvlm.data import DEPTH_PROMPT

        out = []
        for q in queries:
            if task == "depth":
                views = [self._view(q.images[v], q.K[v]) for v in range(q.images.shape[0])]
                _, maps = self._run([img for img, _ in views], [DEPTH_PROMPT] * len(views), depth=True)
                H, W = q.images.shape[-2:]
                depth = torch.stack(
                    [
                        fill_nearest(resample_to_intrinsics(m[None], K_c, q.K[v], (H, W), mode="nearest")[0])
                        for v, (m, (_, K_c)) in enumerate(zip(maps, views))
                    ]
                )
                out.append(DepthAnswer(depth=depth))
            else:
                v = q.view if q.view is not None else 0
                img, _ = self._view(q.images[v], q.K[v])
                text, _ = self._run([img], [q.question], depth=False)
                out.append(text[0].strip())
        return out
