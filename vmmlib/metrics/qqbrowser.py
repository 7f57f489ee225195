"""QQ Browser 2021 AIAC track 1 metric: Spearman rho between embedding cosine and human relevance.

Reproduces the official TF baseline's `util.test_spearmanr` (SPEC §2.1): read `label.tsv` with
`line.split()`, abort on any pair id missing from the submission, cosine as
`sklearn.metrics.pairwise.cosine_similarity` computes it, rho = `scipy.stats.spearmanr(sims,
relevances).correlation` (Pearson correlation of average ranks). The leaderboard showed rho x 100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from vmmlib.io.label_tsv import read_label_tsv  # noqa: F401  (the one label.tsv reader, part of this API)

if TYPE_CHECKING:
    import pandas as pd


class MissingIdError(KeyError):
    """A pair names a video id with no embedding; the official evaluator aborts on it."""

    def __init__(self, missing_id: str, num_missing: int = 1) -> None:
        super().__init__(missing_id)
        self.missing_id = missing_id
        self.num_missing = num_missing

    def __str__(self) -> str:
        more = f" ({self.num_missing} ids missing in all)" if self.num_missing > 1 else ""
        return f"ERROR: {self.missing_id} NOT found in the embeddings{more}"


def _sklearn_dtype(*arrays: np.ndarray) -> type:
    """`check_pairwise_arrays`: float32 only if both inputs are float32, else float64."""
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    """`sklearn.preprocessing.normalize`: rows over their L2 norm; a norm < 10·eps counts as 1 (zero stays zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    return x / norms[:, None]


def pair_cosine(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (P, D) arrays, as `cosine_similarity([a], [b])[0][0]` gives for each row.

    float32 if both are float32, else float64 (sklearn's rule); a zero vector has cosine 0. Bit for
    bit sklearn's value: same normalisation, and the same matmul kernel for each (1, D) @ (D, 1)
    product. That matters: an einsum sums in another order, and a last-bit change can split or
    merge tied cosines, which moves Spearman's average ranks.

    Returns:
        (P,) cosines.
    """
    emb_a, emb_b = np.asarray(emb_a), np.asarray(emb_b)
    if emb_a.ndim != 2 or emb_a.shape != emb_b.shape:
        raise ValueError(f"expected two (P, D) arrays of one shape, got {emb_a.shape} and {emb_b.shape}")
    dtype = _sklearn_dtype(emb_a, emb_b)
    a, b = _l2_normalise(emb_a.astype(dtype)), _l2_normalise(emb_b.astype(dtype))
    return np.matmul(a[:, None, :], b[:, :, None])[:, 0, 0]  # (P, 1, D) @ (P, D, 1) -> (P,)


def _as_pair_columns(pairs) -> tuple[list, list, np.ndarray]:
    if hasattr(pairs, "iloc"):  # a pandas DataFrame (pandas is imported only by its users)
        if pairs.shape[1] < 3:
            raise ValueError(
                "a pairs DataFrame needs query id, candidate id, relevance as its first 3 columns"
            )
        cols = [pairs.iloc[:, i] for i in range(3)]
        return cols[0].tolist(), cols[1].tolist(), cols[2].to_numpy(np.float64)
    queries, candidates, relevances = [], [], []
    for query, candidate, relevance in pairs:
        queries.append(query)
        candidates.append(candidate)
        relevances.append(float(relevance))
    return queries, candidates, np.asarray(relevances, dtype=np.float64)


def qq_spearman(
    embeddings: Mapping[str, Sequence[float] | np.ndarray],
    pairs: Sequence[tuple[str, str, float]] | pd.DataFrame,
) -> float:
    """The official QQ Browser score: Spearman rho of pair cosines against relevances.

    Args:
        embeddings: {video id: (D,) embedding}, e.g. the loaded `result.json`.
        pairs: (query id, candidate id, relevance) tuples (`read_label_tsv`), or a DataFrame whose
            first three columns are those.

    Returns:
        rho in [-1, 1]. NaN (with scipy's ConstantInputWarning) if all cosines, or all relevances,
        are equal, as scipy returns; kept so a collapsed model cannot score 0 by accident.

    Raises:
        MissingIdError: (a KeyError) naming the first id, in pair order, with no embedding.
    """
    queries, candidates, relevances = _as_pair_columns(pairs)
    missing = [v for pair in zip(queries, candidates) for v in pair if v not in embeddings]
    if missing:
        raise MissingIdError(missing[0], len(set(missing)))
    ids = list(dict.fromkeys(queries + candidates))
    row = {v: i for i, v in enumerate(ids)}
    table = np.stack([np.asarray(embeddings[v]) for v in ids])  # (U, D)
    sims = pair_cosine(table[[row[q] for q in queries]], table[[row[c] for c in candidates]])
    import scipy.stats  # here, so reading labels (`vmm validate`) does not load scipy

    return float(scipy.stats.spearmanr(sims, relevances).statistic)
