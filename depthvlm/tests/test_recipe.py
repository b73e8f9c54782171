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
    for (i, q), (j, prompt, answer) in zip(two, both[len(plain):]):
        a, b = q["names"]
        assert (i, answer) == (j, q["answer"]) and prompt == swapped(q)["question"]
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


def test_closer_failures_tells_a_mixed_name_from_a_copied_one():
    from depthvlm.diagnostics.stage2_recipe import closer_failures

    q = {"type": "closer", "names": ["the red box", "the green cone"], "answer": "the green cone"}
    records = [(q, "the green cone"), (q, " the red box"), (q, "the red cone"), (q, "the blue box"),
               ({"type": "how_far"}, "2.0")]
    out = closer_failures(records)
    assert (out["in_question"], out["first_named"], out["mixed"]) == (0.5, 0.25, 0.25)


def test_closer_as_letters_keeps_the_names_order_and_letters_the_answer():
    from depthvlm.data import CLOSER
    from depthvlm.diagnostics.stage2_recipe import closer_as_letters

    prompt = CLOSER.format(a="the red box", b="the green cone")
    text, letter = closer_as_letters(prompt, "the green cone")
    assert letter == "B" and text.index("(A) the red box") < text.index("(B) the green cone")
    assert closer_as_letters(prompt, "the red box")[1] == "A"
    assert closer_as_letters("How far is the red box from the camera, in metres?", "2.0")[1] == "2.0"
