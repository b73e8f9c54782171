"""The stage-2 recipe's knobs: depth supervised on a few images per step, more training questions,
two-object questions in both orders; the test questions do not depend on any of them."""

import pytest
import torch

from depthvlm.config import load_config
from depthvlm.data import swapped
from depthvlm.model import silog_loss
from depthvlm.train import make_batch, training_examples


def test_unlabelled_images_skip_the_head_and_the_loss(tiny, scene_items):
    model, proc = tiny
    items = scene_items[:2]
    batch = proc([it.image for it in items], ["Which is closer?"] * 2)
    with torch.no_grad():
        full = model(**batch, depth_labels=[it.depth for it in items])
        part = model(**batch, depth_labels=[items[0].depth, None])
    assert part.depth[1] is None and torch.equal(part.depth[0], full.depth[0])
    assert part.depth_loss.item() == pytest.approx(silog_loss(full.depth[0], items[0].depth).item())
    assert full.depth_loss.item() != pytest.approx(part.depth_loss.item())


def test_make_batch_spreads_the_depth_images_over_the_batch(tiny, scene_items):
    _, proc = tiny
    examples = training_examples(scene_items, 2)
    labelled = lambda idx, k: [d is not None for d in  # noqa: E731
                               make_batch(proc, scene_items, examples, idx, True, "cpu", depth_images=k)["depth_labels"]]
    assert labelled([0, 1, 2, 3], 2) == [True, False, True, False]
    # two ranks at (2, 1) label the global batch's examples that one process at (4, 2) labels
    assert labelled([0, 1], 1) + labelled([2, 3], 1) == labelled([0, 1, 2, 3], 2)
    assert labelled([0, 1, 2], 0) == [True] * 3 and labelled([0, 1, 2], 1) == [True, False, False]


def test_both_orders_adds_each_two_object_question_swapped_with_its_answer(scene_items):
    plain = training_examples(scene_items, 2)
    both = training_examples(scene_items, 2, both_orders=True)
    two = [(i, q) for i, it in enumerate(scene_items) for q in it.questions if q["type"] in ("closer", "apart")]
    assert two and both[:len(plain)] == plain and len(both) == len(plain) + len(two)
    assert {q["type"] for _, q in two} == {"closer", "apart"}
    for (i, q), (j, prompt, answer) in zip(two, both[len(plain):]):
        a, b = q["names"]
        # the same distance; the same closer object, under the other option's letter
        flipped = {"A": "B", "B": "A"}[q["answer"]] if q["type"] == "closer" else q["answer"]
        assert (i, answer) == (j, flipped) and prompt == swapped(q)["question"]
        assert prompt.index(b) < prompt.index(a) and q["question"].index(a) < q["question"].index(b)


def test_training_question_count_leaves_the_test_questions_unchanged(tmp_path):
    from common.synthetic import generate_split
    from depthvlm.data import build_items

    for split in ("train", "test"):
        generate_split(tmp_path, split, scenes=1, views=2, size=64, seed=0, progress=False)
    base = load_config(None, [f"data.root={tmp_path}", "data.focal=60", "data.max_size=64"]).data
    more = load_config(None, [f"data.root={tmp_path}", "data.focal=60", "data.max_size=64",
                              "data.train_questions_per_view=9"]).data
    questions = lambda cfg, split: [q for it in build_items(cfg, split, 16) for q in it.questions]  # noqa: E731
    assert questions(more, "test") == questions(base, "test")
    assert len(questions(more, "train")) > len(questions(base, "train"))


def test_depth_images_above_the_batch_is_an_error():
    with pytest.raises(ValueError, match="train.stage2.depth_images"):
        load_config(None, ["train.stage2.batch_size=4", "train.stage2.depth_images=5"])
    assert load_config(None, ["train.stage2.depth_images=2"]).train.stage2.depth_images == 2


def test_closer_answers_counts_the_first_option_against_the_truth():
    from depthvlm.diagnostics.stage2_recipe import closer_answers

    records = [({"type": "closer", "answer": "A"}, " A"), ({"type": "closer", "answer": "B"}, "A"),
               ({"type": "closer", "answer": "B"}, "B"), ({"type": "closer", "answer": "A"}, "B"),
               ({"type": "how_far", "answer": "2.0"}, "A")]
    out = closer_answers(records)
    assert (out["answered_a"], out["a_is_closer"]) == (0.5, 0.5)


def test_closer_first_draws_only_closer_questions_then_every_kind(tiny, scene_items, tmp_path, monkeypatch):
    import depthvlm.train as train_module
    from depthvlm.config import StageConfig
    from depthvlm.data import CLOSER

    model, proc = tiny
    prompts, make = [], train_module.make_batch
    monkeypatch.setattr(train_module, "make_batch", lambda processor, items, examples, idx, *a, **k:
                        prompts.append([examples[i][1] for i in idx]) or make(processor, items, examples, idx, *a, **k))
    scfg = StageConfig(steps=6, lr=1e-3, batch_size=4, closer_first=3)
    train_module.train_stage(model, proc, scene_items, scfg, "text", tmp_path, seed=0, checkpoint_every=100,
                             both_orders=True)
    closer = [[p.startswith(CLOSER.split("?")[0]) for p in step] for step in prompts]
    assert len(closer) == 6 and all(all(c) for c in closer[:3])
    assert not all(all(c) for c in closer[3:])  # then the other kinds too


def test_closer_first_needs_closer_questions_and_is_stage_2_only(scene_items):
    from dataclasses import replace

    from common.config import ConfigError
    from depthvlm.config import StageConfig
    from depthvlm.train import stage_examples

    one_object = [replace(it, questions=[q for q in it.questions if q["type"] == "how_far"]) for it in scene_items]
    with pytest.raises(ValueError, match="no questions of kind closer"):
        stage_examples(one_object, StageConfig(closer_first=5), 2, both_orders=True)
    assert stage_examples(one_object, StageConfig(closer_first=0), 2, both_orders=True)[1]  # no curriculum
    with pytest.raises(ConfigError, match="train.stage1.closer_first"):
        load_config(None, ["train.stage1.closer_first=10"])
    with pytest.raises(ConfigError, match="train.stage2.closer_first"):
        load_config(None, ["train.stage2.closer_first=-1"])
