"""Okapi BM25 over numpy, with a tokenizer that treats Chinese as well as English.

Written here rather than taken from `rank_bm25` or `bm25s` because the whole scorer is
about 40 lines and neither library's tokenizer splits Chinese: we would write the
tokenizer anyway. Chinese (and Japanese kana) runs become their characters plus their
overlapping character bigrams (Lucene's CJKAnalyzer idea, with the unigrams kept so a
one-character query still matches); no word segmenter, so no dictionary load and no
segmenter vocabulary decides the ranking. Other text becomes lower-cased words after
`eval.metrics.normalize_text` (NFKC, punctuation dropped).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from tuneforge.eval.metrics import normalize_text

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUN = re.compile(f"[{_CJK}]+|[^\\W{_CJK}]+")
_IS_CJK = re.compile(f"[{_CJK}]")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words; each CJK run as its characters, then its character bigrams."""
    tokens: list[str] = []
    for run in _RUN.findall(normalize_text(text)):
        if _IS_CJK.match(run):
            tokens.extend(run)
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            tokens.append(run)
    return tokens


class BM25Index:
    """Okapi BM25 scores of a query against a fixed list of texts.

    The idf is Lucene's, `log(1 + (N - df + 0.5) / (df + 0.5))`, which is never negative,
    so a term found in most texts still counts a little instead of lowering the score.
    """

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        docs = [Counter(bm25_tokens(t)) for t in texts]
        lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
        average = float(lengths.mean()) if len(docs) and lengths.mean() > 0 else 1.0
        # The length normalisation depends only on the text, so it is computed once here.
        self._norm = k1 * (1 - b + b * lengths / average)
        self._k1 = k1
        self._size = len(docs)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for i, doc in enumerate(docs):
            for term, tf in doc.items():
                rows, counts = postings.setdefault(term, ([], []))
                rows.append(i)
                counts.append(tf)
        self._postings = {
            term: (np.array(rows), np.array(counts, dtype=np.float64))
            for term, (rows, counts) in postings.items()
        }

    def __len__(self) -> int:
        return self._size

    def scores(self, query: str) -> np.ndarray:
        """One score per text, 0.0 for a text that shares no term with the query."""
        out = np.zeros(self._size, dtype=np.float64)
        for term in bm25_tokens(query):
            if term not in self._postings:
                continue
            rows, tf = self._postings[term]
            idf = math.log(1 + (self._size - len(rows) + 0.5) / (len(rows) + 0.5))
            out[rows] += idf * tf * (self._k1 + 1) / (tf + self._norm[rows])
        return out
