"""3D-IDE (`ide3d/`): grounding and QA from the RGB-D video with poses, as its own evaluation runs them.

All 8 views of a query become the video's frames (tiny.yaml samples 8, so "view k" in a text is
frame k unchanged). Queries of one scene are answered together: the scene is prepared once
(`ide3d.data.prepare`: resize to the model's input, patch membership of each candidate box) and
`ide3d.evaluate.predict` runs them in batches. A single-target expression gets the argmax
candidate, a multi-target one the Multi3DRefer set (nothing when "no target" wins).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.methods import Method, Unavailable, find_run

RUNS = ["results/ide3d/ide3d/final", "results/ide3d/benchmark/final"]


class IDE3DMethod(Method):
    name = "ide3d"
    paper = "ide3d"
    tasks = ("grounding", "qa")

    def load(self) -> None:
        from ide3d.model import load_pretrained

        path = self.checkpoint or find_run(RUNS, "config.json")
        if path is None and self.train_missing:
            path = self._train()
        if path is None:
            raise Unavailable(f"no trained run (looked for {RUNS[0]}; run make reproduce-ide3d)")
        self.model, self.processor = load_pretrained(path)
        self.model.eval()

    @staticmethod
    def _train() -> Path:
        import ide3d
        from ide3d.config import load_config
        from ide3d.data import load_scenes
        from ide3d.teacher import train_teacher
        from ide3d.train import train

        tiny = Path(ide3d.__file__).parent / "configs" / "tiny.yaml"
        cfg = load_config(tiny, ["train.out_dir=results/ide3d/benchmark"])
        if not (Path(cfg.supervision.teacher_path) / "config.json").is_file():
            train_teacher(
                cfg,
                load_scenes(cfg.data, cfg.data.train_split),
                Path(cfg.supervision.teacher_path),
                progress=False,
            )
        return train(cfg, progress=False)

    def answer(self, task: str, queries: list) -> list:
        from benchmarks.tasks.grounding import GroundingAnswer
        from ide3d.data import Query, Scene, prepare
        from ide3d.evaluate import predict
        from ide3d.processing import ground_prompt, qa_prompt

        by_scene: dict[str, list[int]] = {}
        for k, q in enumerate(queries):
            by_scene.setdefault(q.scene_id, []).append(k)
        out: list = [None] * len(queries)
        for ks in by_scene.values():
            first = queries[ks[0]]
            if task == "grounding":
                boxes = first.candidates
                qs = [
                    Query(
                        "ground",
                        ground_prompt(queries[k].text, queries[k].multi),
                        queries[k].text,
                        "multi3drefer" if queries[k].multi else "scanrefer",
                        "",
                        targets=None,
                    )
                    for k in ks
                ]
            else:  # QA has no candidates
                boxes = torch.zeros(0, 6)
                qs = [
                    Query(
                        "qa",
                        qa_prompt(queries[k].question),
                        queries[k].question,
                        "scanqa",
                        queries[k].qtype,
                        answers=[""],
                    )
                    for k in ks
                ]
            scene = Scene(
                first.scene_id,
                list(range(first.images.shape[0])),
                first.images,
                first.depth,
                first.K,
                first.w2c,
                boxes,
                qs,
            )
            preds = predict(self.model, self.processor, [prepare(scene, self.processor)])
            for j, k in enumerate(ks):
                out[k] = (
                    GroundingAnswer(preds.chosen[(0, j)]) if task == "grounding" else preds.answers[(0, j)]
                )
        return out
