"""QQ Browser's `label.tsv`, read in one place: by the data reader (`vmmlib.data.qqbrowser.reader.read_pairs`)
and the scorer (`vmmlib.metrics.qqbrowser`).

Each line is `line.split()` into query id, candidate id and relevance, as the official
`util.test_spearmanr` reads it. Read through `vmmlib.io.safe` (streamed, strict UTF-8, bounded
lines); a line that is not three fields, or a relevance that is not a finite number (`nan`, `inf`),
is an InputError naming the file and line; so is a truth file with no pair. Blank lines are skipped.
"""

from __future__ import annotations

import math
import os

from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, iter_lines

__all__ = ["read_label_tsv"]


def read_label_tsv(
    path: str | os.PathLike, *, allow_empty: bool = False, limits: Limits = DEFAULT_LIMITS
) -> list[tuple[str, str, float]]:
    """`label.tsv` as (query_id, candidate_id, relevance) tuples, in file order.

    Args:
        allow_empty: accept a file with no pair (a data folder of unlabelled videos, as `vmm extract`
            writes one); a truth file to score against must hold pairs.
    """
    pairs = []
    for number, line in iter_lines(path, limits=limits, what="label.tsv"):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        if len(fields) != 3:
            raise InputError(path, f"expected 'query candidate relevance', got {line[:80]!r}", where)
        query, candidate, text = fields
        try:
            relevance = float(text)
        except ValueError:
            raise InputError(path, f"relevance {text[:40]!r} is not a number", where) from None
        if not math.isfinite(relevance):
            raise InputError(path, f"relevance {text[:40]!r} is not a finite number", where)
        pairs.append((query, candidate, relevance))
    if not pairs and not allow_empty:
        raise InputError(path, "holds no pairs")
    return pairs
