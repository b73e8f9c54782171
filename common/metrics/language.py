"""Question-answering metrics: answer normalisation, exact match, number parsing, MRA, accuracy.

Protocols: ScanQA / SQA3D exact match as in LEO (`embodied-generalist`, `clean_answer` and
`answer_match`, reused by LLaVA-3D); numeric answers as in VSI-Bench
(`thinking-in-space`, `lmms_eval/tasks/vsibench/utils.py`) and DepthLM / DepthVLM.
"""

from __future__ import annotations

import math
import re
import string

import numpy as np

from ._utils import as_numpy

# Digits -> words, as LEO's clean_answer does for 0..20 (so "2" and "two" match).
_DIGIT_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()
_NUMBER_WORDS = {w: float(i) for i, w in enumerate(_DIGIT_WORDS)}
_NUMBER_WORDS.update(
    {
        "thirty": 30.0,
        "forty": 40.0,
        "fifty": 50.0,
        "sixty": 60.0,
        "seventy": 70.0,
        "eighty": 80.0,
        "ninety": 90.0,
        "hundred": 100.0,
        "half": 0.5,
    }
)
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.escape("".join(c for c in string.punctuation if c not in "'."))


def normalize_answer(text: str) -> str:
    """Normalise a free-form answer for exact match (ScanQA / SQA3D, LEO-style).

    Steps: lower-case; drop apostrophes ("don't" -> "dont"); every other punctuation character
    becomes a space, except a '.' between two digits ("2.5" stays); integer tokens 0..20 become
    words ("2" -> "two", the direction LEO uses) and "none" becomes "zero" (as LEO); the articles
    a / an / the are removed wherever they stand as words (LEO only drops them before a word,
    SQuAD everywhere: same result on real answers); whitespace is collapsed. LEO's ScanQA typo
    table ("letf" -> "left", ...) is not applied.
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    s = text.lower().replace("\u2019", "'").replace("'", "")
    s = re.sub(rf"[{_PUNCT}]", " ", s)
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)  # '.' survives only inside a decimal number
    tokens = []
    for tok in s.split():
        if tok.isdigit() and int(tok) <= 20:
            tok = _DIGIT_WORDS[int(tok)]
        elif tok == "none":
            tok = "zero"
        if tok not in _ARTICLES:
            tokens.append(tok)
    return " ".join(tokens)


def _answers(answers) -> list:
    if isinstance(answers, str):
        answers = [answers]
    answers = list(answers)
    if not answers:
        raise ValueError("answers: expected at least one reference answer")
    return [normalize_answer(a) for a in answers]


def exact_match(pred: str, answers) -> float:
    """1.0 if normalize_answer(pred) equals the normalised form of any reference answer, else 0.0.

    answers: one string or a list of strings (ScanQA has several). EM@1 of ScanQA / SQA3D.
    """
    return float(normalize_answer(pred) in _answers(answers))


def refined_exact_match(pred: str, answers) -> float:
    """ScanQA "refined" EM (LEO `answer_match`): exact match, or one normalised answer contains
    the other once all whitespace is removed. An empty normalised prediction only matches an
    empty answer (in LEO's code the empty string is a substring of everything and would score 1).
    """
    p = normalize_answer(pred)
    refs = _answers(answers)
    if p in refs:
        return 1.0
    p_compact = "".join(p.split())
    if not p_compact:
        return 0.0
    for ref in refs:
        r = "".join(ref.split())
        if r and (p_compact in r or r in p_compact):
            return 1.0
    return 0.0


_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
# A number: optional sign, digits with optional 3-digit thousands groups, optional decimals,
# optional exponent. Not preceded by a letter, digit or '.' (so "mat2" or "v1.2.3" tails are not
# read as numbers).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number(text) -> float | None:
    """The numeric answer in a model's output, or None when there is none (count it as wrong).

    The span searched is the content of the last <answer>...</answer> (an unclosed final
    <answer> counts too) when there is one; otherwise the text with <think>...</think> blocks
    removed. Within it the first number is returned: signed, decimal, thousands separators
    ("1,234.5"), scientific notation ("1.5e-3"), units attached or not ("3.2m", "about 2.4
    meters" -> 2.4; units are not converted). If no digit number is present, the first number
    word counts ("two" -> 2; zero..twenty, the tens, "hundred", "half"). Non-finite values and
    text without a number give None. An int/float input is returned as a float if finite.
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text) if math.isfinite(text) else None
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    tagged = _ANSWER_TAG.findall(text)
    span = tagged[-1] if tagged else _THINK_BLOCK.sub(" ", text)
    span = span.replace("\u2212", "-")  # unicode minus sign
    m = _NUMBER.search(span)
    if m:
        try:
            value = float(m.group(0).replace(",", ""))
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    for word in re.findall(r"[a-z]+", span.lower()):
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
    return None


def parse_number_vsibench(text) -> float | None:
    """VSI-Bench's own reading of a numeric answer (`fuzzy_matching` then `float()`): the first
    space-separated token with a trailing '.' stripped; anything else ("about 2 m", "two") is None,
    which scores 0. Stricter than `parse_number`; for comparing with VSI-Bench tables."""
    if text is None:
        return None
    try:
        value = float(str(text).strip().split(" ")[0].rstrip(".").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_number_depthlm(text) -> float | None:
    """DepthLM / VLM3's reading of a depth answer: the first number inside `<answer> ... </answer>`
    (the last such span); no tag, no number (their fallback after `math_verify` looks only there).
    Units and number words are not read. None scores as a miss."""
    if text is None:
        return None
    spans = re.findall(r"<answer>(.*?)</answer>", str(text), re.IGNORECASE | re.DOTALL)
    if not spans:
        return None
    m = _FLOAT.search(spans[-1])
    if not m:
        return None
    value = float(m.group(0))
    return value if math.isfinite(value) else None


# VSI-Bench's confidence thresholds C = {0.50, 0.55, ..., 0.95}, written out: its code builds them
# with np.linspace(0.5, 0.95, int((0.95 - 0.5) / 0.05 + 2)), which gives 10 values only because
# (0.95 - 0.5) / 0.05 + 2 = 10.999... truncates to 10.
MRA_THRESHOLDS = (0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
_MRA_TIE_TOL = 1e-9


def mean_relative_accuracy(pred, gt) -> float:
    """VSI-Bench Mean Relative Accuracy for one numeric answer, in [0, 1]; for sequences of answers
    (pred and gt of the same length) the mean over them.

    MRA = (1/10) sum_{theta in MRA_THRESHOLDS} 1[|pred - gt| / |gt| <= 1 - theta].
    The paper writes '<'; VSI-Bench's code uses '<=', whose outcome at an exact tie then depends
    on float rounding (1 - 0.55 = 0.44999999999999996, 1 - 0.75 = 0.25). We follow the code and
    make ties deterministic: a relative error within 1e-9 of 1 - theta counts as a hit (matters
    for counting questions, e.g. gt 4, pred 5 -> error 0.25). pred None or non-finite -> 0.
    gt must be non-zero and finite. Sequences of different lengths, or a sequence against a single
    number, are a ValueError naming both lengths.
    """
    pred_seq, gt_seq = _is_sequence(pred), _is_sequence(gt)
    if pred_seq or gt_seq:
        n_pred = len(pred) if pred_seq else "a single number"
        n_gt = len(gt) if gt_seq else "a single number"
        if not (pred_seq and gt_seq) or n_pred != n_gt or n_gt == 0:
            raise ValueError(
                f"pred and gt: expected two sequences of the same non-zero length, got {n_pred} and {n_gt}"
            )
        return float(np.mean([mean_relative_accuracy(p, g) for p, g in zip(pred, gt)]))
    gt = float(gt)
    if not math.isfinite(gt) or gt == 0:
        raise ValueError(f"gt: must be finite and non-zero for a relative error, got {gt}")
    if pred is None:
        return 0.0
    pred = float(pred)
    if not math.isfinite(pred):
        return 0.0
    rel = abs(pred - gt) / abs(gt)
    return float(np.mean([rel <= 1 - theta + _MRA_TIE_TOL for theta in MRA_THRESHOLDS]))


def _is_sequence(x) -> bool:
    """A list, tuple or array with a length (a 0-d array or a number is not)."""
    if isinstance(x, (str, bytes)):
        return False
    if hasattr(x, "ndim"):
        return x.ndim > 0
    return isinstance(x, (list, tuple))


def accuracy(flags) -> float:
    """Mean of per-item 0/1 (or bool, or fractional) scores, e.g. multiple-choice correctness."""
    flags = as_numpy(flags, "flags")
    if flags.ndim != 1 or flags.size == 0:
        raise ValueError(f"flags: expected a non-empty 1-D sequence, got shape {flags.shape}")
    if not np.all(np.isfinite(flags)):
        raise ValueError("flags: contains NaN or inf")
    return float(flags.mean())
