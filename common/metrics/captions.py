"""ScanQA's text-generation metrics as the coco-caption toolkit (`pycocoevalcap`) computes them:
BLEU-1..4, ROUGE-L and CIDEr(-D), over a corpus of predictions, each with one or more references.

Tokenisation: coco-caption runs the Stanford PTB tokenizer (Java) and drops punctuation; here
text is lower-cased, punctuation becomes spaces and whitespace splits (the same tokens for
plain answers like ScanQA's; contractions may split differently).

- BLEU (`bleu`, option "closest"): corpus-level clipped n-gram precisions accumulated over all
  sentences, geometric mean up to n, brevity penalty exp(1 - r / c) with r the sum over sentences
  of the reference length closest to the candidate's (ties: the shorter).
- ROUGE-L (`rouge_l`): per candidate, LCS precision and recall against each reference, the max of
  each over references, F with beta = 1.2; the corpus score is the mean.
- CIDEr-D (`cider`): TF-IDF vectors of 1-4-grams with document frequencies from the corpus'
  references, clipped (min of candidate and reference weights) cosine per n, a Gaussian length
  penalty (sigma 6) on the difference in bigram counts, averaged over n and references, times
  10; the corpus score is the mean.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import numpy as np

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def tokenize(text: str) -> list[str]:
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    return _PUNCT.sub(" ", text.lower()).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _corpus(preds, refs) -> tuple[list, list]:
    preds, refs = list(preds), [[r] if isinstance(r, str) else list(r) for r in refs]
    if len(preds) != len(refs) or not preds:
        raise ValueError(
            f"preds and refs: expected the same non-zero length, got {len(preds)} and {len(refs)}"
        )
    if any(not r for r in refs):
        raise ValueError("refs: every prediction needs at least one reference")
    return [tokenize(p) for p in preds], [[tokenize(x) for x in r] for r in refs]


def bleu(preds, refs, n: int = 4) -> float:
    """Corpus BLEU-n (coco-caption `Bleu(4)`, "closest" reference length)."""
    preds, refs = _corpus(preds, refs)
    guess, correct = np.zeros(n), np.zeros(n)
    test_len = ref_len = 0
    for p, rs in zip(preds, refs):
        test_len += len(p)
        ref_len += min((len(r) for r in rs), key=lambda x: (abs(x - len(p)), x))
        for k in range(1, n + 1):
            counts = _ngrams(p, k)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, k)  # the max count of each n-gram over references
            guess[k - 1] += max(len(p) - k + 1, 0)
            correct[k - 1] += sum(min(c, best[g]) for g, c in counts.items())
    tiny, small = 1e-15, 1e-9
    score = math.exp(sum(math.log((correct[k] + tiny) / (guess[k] + small)) for k in range(n)) / n)
    ratio = (test_len + tiny) / (ref_len + small)
    return score * (math.exp(1 - 1 / ratio) if ratio < 1 else 1.0)


def _lcs(a: list, b: list) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def rouge_l(preds, refs, beta: float = 1.2) -> np.ndarray:
    """ROUGE-L F per prediction [N] (coco-caption `Rouge`); the corpus score is its mean."""
    preds, refs = _corpus(preds, refs)
    out = np.zeros(len(preds))
    for i, (p, rs) in enumerate(zip(preds, refs)):
        lcs = [_lcs(p, r) for r in rs]
        prec = max((m / len(p) if p else 0.0) for m in lcs)
        rec = max((m / len(r) if r else 0.0) for m, r in zip(lcs, rs))
        if prec > 0 and rec > 0:
            out[i] = (1 + beta**2) * prec * rec / (rec + beta**2 * prec)
    return out


def cider(preds, refs, n: int = 4, sigma: float = 6.0) -> np.ndarray:
    """CIDEr-D per prediction [N] (coco-caption `CiderD`); the corpus score is its mean. Document
    frequencies come from this corpus' references, so the score depends on the whole corpus."""
    preds, refs = _corpus(preds, refs)
    df: Counter = Counter()
    for rs in refs:
        df.update({g for r in rs for k in range(1, n + 1) for g in _ngrams(r, k)})
    log_n = math.log(float(len(refs)))

    def vec(tokens):
        v = [{} for _ in range(n)]
        for k in range(1, n + 1):
            for g, tf in _ngrams(tokens, k).items():
                v[k - 1][g] = tf * (log_n - math.log(max(1.0, df[g])))
        # coco's length is the number of bigrams (its `if n == 1` counts 2-grams)
        return v, [math.sqrt(sum(x * x for x in d.values())) for d in v], max(len(tokens) - 1, 0)

    out = np.zeros(len(preds))
    for i, (p, rs) in enumerate(zip(preds, refs)):
        vp, norm_p, len_p = vec(p)
        total = np.zeros(n)
        for r in rs:
            vr, norm_r, len_r = vec(r)
            for k in range(n):
                val = sum(min(w, vr[k][g]) * vr[k][g] for g, w in vp[k].items() if g in vr[k])
                if norm_p[k] != 0 and norm_r[k] != 0:
                    val /= norm_p[k] * norm_r[k]
                total[k] += val * math.exp(-((len_p - len_r) ** 2) / (2 * sigma**2))
        out[i] = float(np.mean(total)) / len(rs) * 10.0
    return out
