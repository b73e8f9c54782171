import pytest

from common.metrics import (
    MRA_THRESHOLDS,
    accuracy,
    exact_match,
    mean_relative_accuracy,
    normalize_answer,
    parse_number,
    refined_exact_match,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Brown Chair.", "brown chair"),
        ("  a   table ,  near   the window!", "table near window"),
        ("2", "two"),
        ("There are 3 chairs", "there are three chairs"),
        ("12 pillows", "twelve pillows"),
        ("25 books", "25 books"),
        ("2.5 meters", "2.5 meters"),
        ("It's left-side", "its left side"),
        ("None", "zero"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    assert exact_match("The chair.", ["brown chair", "chair"]) == 1.0
    assert exact_match("Two", "2") == 1.0
    assert exact_match("brown chair", "chair") == 0.0
    with pytest.raises(ValueError, match="answers"):
        exact_match("x", [])


def test_refined_exact_match():
    assert refined_exact_match("brown chair", ["chair"]) == 1.0  # gt inside pred
    assert refined_exact_match("chair", ["the brown chair"]) == 1.0  # pred inside gt
    assert refined_exact_match("blackboard", ["black board"]) == 1.0  # whitespace-insensitive
    assert refined_exact_match("table", ["chair"]) == 0.0
    assert refined_exact_match("...", ["chair"]) == 0.0  # empty after normalisation: no free match


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer> 3.5 </answer>", 3.5),
        ("<think>the sofa is 2 m away, the lamp 4</think><answer>about 2.4 meters</answer>", 2.4),
        ("<think>compare 1 and 7</think> final: 6.25", 6.25),
        ("<answer>1.5", 1.5),  # unclosed tag
        ("<answer>1</answer> then <answer>2</answer>", 2.0),  # the last answer block wins
        ("about 2.4 meters", 2.4),
        ("-1.5", -1.5),
        ("The distance is \u22120.5 m", -0.5),
        ("1,234.5", 1234.5),
        ("3.2m", 3.2),
        ("3.", 3.0),
        (".75 m", 0.75),
        ("1.5e-3", 1.5e-3),
        ("2E2 millimetres", 200.0),
        ("two", 2.0),
        ("There are Twelve chairs.", 12.0),
        ("2-3 meters", 2.0),
        ("mat2 is 4.5", 4.5),
        ("", None),
        ("I cannot tell.", None),
        ("nan", None),
        ("1e999", None),
        (None, None),
        (3, 3.0),
    ],
)
def test_parse_number(text, expected):
    got = parse_number(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_mra_thresholds_and_hand_cases():
    assert len(MRA_THRESHOLDS) == 10 and MRA_THRESHOLDS[0] == 0.5 and MRA_THRESHOLDS[-1] == 0.95
    assert mean_relative_accuracy(2.0, 2.0) == 1.0
    # rel error 0.12: passes 1 - theta for theta = 0.50..0.85 (0.5 ... 0.15) -> 8 of 10
    assert mean_relative_accuracy(1.12, 1.0) == pytest.approx(0.8)
    # rel error 0.3: 1 - theta >= 0.3 for theta = 0.5..0.7 -> 5 of 10 (tie at 0.7 counts)
    assert mean_relative_accuracy(13.0, 10.0) == pytest.approx(0.5)
    # counting tie: gt 4, pred 5 -> 0.25 = 1 - 0.75 -> thresholds 0.5..0.75 -> 6 of 10
    assert mean_relative_accuracy(5, 4) == pytest.approx(0.6)
    # gt 10, pred 11 -> 0.1 = 1 - 0.9 (tie, counted) -> 9 of 10
    assert mean_relative_accuracy(11, 10) == pytest.approx(0.9)
    assert mean_relative_accuracy(7.0, 1.0) == 0.0
    assert mean_relative_accuracy(None, 1.0) == 0.0
    assert mean_relative_accuracy(parse_number("no idea"), 3.0) == 0.0
    with pytest.raises(ValueError, match="gt"):
        mean_relative_accuracy(1.0, 0.0)


def test_accuracy():
    assert accuracy([True, False, True, True]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="flags"):
        accuracy([])


def test_peer_number_parsers():
    from common.metrics import parse_number_depthlm, parse_number_vsibench

    assert parse_number_vsibench("3 meters") == 3.0 and parse_number_vsibench("2.5.") == 2.5
    assert parse_number_vsibench("about 3") is None and parse_number_vsibench("three") is None
    assert parse_number_depthlm("<answer>1.5</answer>") == 1.5
    assert parse_number_depthlm("<answer>x</answer> then <answer>about 2.25 m</answer>") == 2.25
    assert parse_number_depthlm("1.5") is None and parse_number_depthlm("<answer>two</answer>") is None
