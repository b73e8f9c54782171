"""Spatial question answering: one question set, one scoring, several parsers.

Protocol: a method is given the scene as an RGB-D video with poses (all 8 views at 128 px, as in the
grounding task; a method may use only the RGB), the question (which names views by their index
0-7 where it needs one) and its type, and returns its answer as text.

Questions: every question of the held-out synthetic scenes (closer, left_of, distance, depth at a
pixel, size, count). Scores, each item 0..1, averaged over items (`common.metrics`):
- `qa_em`: exact match after LEO's normalisation (ScanQA / SQA3D), every question;
- `qa_mra`: VSI-Bench mean relative accuracy on the numeric questions (distance, depth, size,
  count), the number read by the project's lenient parser (`parse_number`: the first number
  anywhere, units and number words allowed);
- `qa_mra_vsibench`: the same with VSI-Bench's own parser (the first space-separated token, a
  trailing '.' stripped, `float()`; nothing else counts), so a model that writes "about 2 m" scores 0;
- `qa_mra_depthlm`: the same with DepthLM's parser (the first number inside <answer> tags);
- `qa_accuracy`: exact match on the categorical questions and MRA (lenient) on the numeric ones;
- ScanQA's text metrics as coco-caption computes them: `qa_bleu4` (corpus BLEU-4), `qa_rouge_l`,
  `qa_cider` (CIDEr-D with document frequencies from this question set's answers).
Baselines: the train split's most frequent answer per question type (median value for numbers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.tasks.base import Item, Metric, Participant, Task, TaskData
from common.metrics import (
    bleu,
    cider,
    exact_match,
    mean_relative_accuracy,
    parse_number,
    parse_number_depthlm,
    parse_number_vsibench,
    rouge_l,
)

NUMERIC = ("distance", "depth_at_pixel", "size", "count")


@dataclass
class QAQuery:
    scene_id: str
    images: torch.Tensor  # [F, 3, H, W]
    depth: torch.Tensor  # [F, H, W]
    K: torch.Tensor  # [F, 3, 3]
    w2c: torch.Tensor  # [F, 4, 4]
    question: str
    qtype: str
    view: int | None  # the view the question names, if any


@dataclass
class QATruth:
    answer: str
    value: float | None  # numeric questions


class QATask(Task):
    name = "qa"
    title = "Spatial question answering"
    protocol = "8 RGB-D views with K and w2c and a question -> a text answer; EM (LEO) and MRA (VSI-Bench)"
    metrics = [
        Metric("qa_accuracy", True, "EM on categorical + MRA (lenient parser) on numeric"),
        Metric("qa_em", True, "ScanQA exact match, LEO normalisation"),
        Metric("qa_mra", True, "VSI-Bench MRA, lenient parser"),
        Metric("qa_mra_vsibench", True, "VSI-Bench MRA, VSI-Bench's parser (first token, float())"),
        Metric("qa_mra_depthlm", True, "VSI-Bench MRA, DepthLM's parser (number in <answer> tags)"),
        Metric("qa_bleu4", True, "ScanQA: coco-caption BLEU-4 (corpus)"),
        Metric("qa_rouge_l", True, "ScanQA: coco-caption ROUGE-L"),
        Metric("qa_cider", True, "ScanQA: coco-caption CIDEr-D (corpus document frequencies)"),
    ]
    participants = [
        Participant("ide3d"),
        Participant("g2vlm", "sensor-depth mode"),
        Participant("depthvlm", "one view"),
        Participant("vlm3", "one view"),
    ]

    def items(self, data: TaskData) -> list[Item]:
        out = []
        for s in data.samples:
            for q in s.annotations.get("questions", []):
                value = float(q["answer_value"]) if q["type"] in NUMERIC else None
                query = QAQuery(
                    s.scene_id, s.images, s.depth, s.K, s.w2c, q["question"], q["type"], q.get("view")
                )
                out.append(Item(query, QATruth(str(q["answer"]), value)))
        return out

    def score(self, item: Item, answer: str) -> dict[str, float]:
        if not isinstance(answer, str):
            raise ValueError(f"qa answer: expected text, got {type(answer).__name__}")
        t = item.truth
        em = exact_match(answer, [t.answer])
        out = {"qa_em": em, "qa_accuracy": em, "qa_rouge_l": float(rouge_l([answer], [[t.answer]])[0])}
        if t.value is not None and t.value != 0:
            mra = mean_relative_accuracy(parse_number(answer), t.value)
            out.update(
                qa_accuracy=mra,
                qa_mra=mra,
                qa_mra_vsibench=mean_relative_accuracy(parse_number_vsibench(answer), t.value),
                qa_mra_depthlm=mean_relative_accuracy(parse_number_depthlm(answer), t.value),
            )
        return out

    def corpus(self, items: list[Item], answers: list) -> dict[str, float]:
        refs = [[it.truth.answer] for it in items]
        return {"qa_bleu4": bleu(answers, refs), "qa_cider": float(cider(answers, refs).mean())}

    def baselines(self, data: TaskData, train: TaskData | None) -> dict:
        if train is None:
            return {}
        by_type: dict[str, list] = {}
        for s in train.samples:
            for q in s.annotations.get("questions", []):
                by_type.setdefault(q["type"], []).append(q)
        best = {}
        for qtype, qs in by_type.items():
            if qtype in NUMERIC:
                value = float(np.median([float(q["answer_value"]) for q in qs]))
                best[qtype] = str(int(round(value))) if qtype == "count" else f"{value:.2f}"
            else:
                best[qtype] = Counter(str(q["answer"]) for q in qs).most_common(1)[0][0]
        return {"majority-answer-per-type": lambda q: best.get(q.qtype, "")}
