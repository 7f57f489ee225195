"""QQ Browser Spearman metric against sklearn cosine + scipy spearmanr (the official evaluator's parts)."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics.pairwise import cosine_similarity

from vmmlib.metrics import MissingIdError, pair_cosine, qq_spearman, read_label_tsv


def _official_spearman(embeddings, pairs):
    """`util.test_spearmanr` of the official TF baseline, minus the file reading."""
    relevances, similarities = [], []
    for query, candidate, relevance in pairs:
        if query not in embeddings or candidate not in embeddings:
            raise Exception("NOT found")
        similarities.append(cosine_similarity([embeddings[query]], [embeddings[candidate]])[0][0])
        relevances.append(float(relevance))
    return scipy.stats.spearmanr(similarities, relevances).correlation


def _unit(cos):  # a 2-d unit vector whose cosine with [1, 0] is `cos`
    return [cos, math.sqrt(1 - cos * cos)]


def test_pair_cosine_matches_sklearn_and_gives_zero_for_a_zero_vector():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    a[3] = 0.0
    b[7] = 0.0
    expected = [cosine_similarity(a[i : i + 1], b[i : i + 1])[0, 0] for i in range(50)]
    assert pair_cosine(a, b).tolist() == expected  # bit for bit: ties between cosines must survive
    assert pair_cosine(a, b)[3] == 0.0 and pair_cosine(a, b)[7] == 0.0


def test_pair_cosine_stays_float32_only_when_both_inputs_are_float32_like_sklearn():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    assert pair_cosine(a, b).dtype == np.float32 == cosine_similarity(a[:1], b[:1]).dtype
    assert pair_cosine(a.astype(np.float16), b).dtype == np.float64
    assert pair_cosine(a, b).tolist() == [
        cosine_similarity(a[i : i + 1], b[i : i + 1])[0, 0] for i in range(20)
    ]


def test_qq_spearman_equals_the_official_sklearn_scipy_computation():
    rng = np.random.default_rng(2)
    ids = [str(1000 + i) for i in range(60)]
    embeddings = {v: rng.normal(size=32).astype(np.float16).astype(float).tolist() for v in ids}
    embeddings[ids[0]] = [0.0] * 32  # a collapsed video
    pairs = [(ids[q], ids[c], round(float(rng.random()), 1)) for q, c in rng.integers(0, 60, (300, 2))]
    assert any(q == c for q, c, _ in pairs)  # self pairs: cosines equal up to the last bit
    assert qq_spearman(embeddings, pairs) == _official_spearman(embeddings, pairs)


def test_qq_spearman_gives_tied_relevances_their_average_rank():
    embeddings = {"q": [1.0, 0.0], **{f"c{i}": _unit(c) for i, c in enumerate([0.1, 0.2, 0.3, 0.4])}}
    pairs = [("q", "c0", 0.0), ("q", "c1", 1.0), ("q", "c2", 1.0), ("q", "c3", 2.0)]
    # ranks (1, 2, 3, 4) vs (1, 2.5, 2.5, 4): Pearson = 4.5 / sqrt(5 * 4.5) = 3 / sqrt(10)
    assert qq_spearman(embeddings, pairs) == pytest.approx(3 / math.sqrt(10))


def test_qq_spearman_treats_a_zero_embedding_as_cosine_zero():
    embeddings = {"q": [1.0, 0.0], "zero": [0.0, 0.0], "a": _unit(0.5), "b": _unit(-0.5)}
    pairs = [("q", "zero", 0.3), ("q", "a", 0.9), ("q", "b", 0.1)]
    # cosines (0, 0.5, -0.5) rank (2, 3, 1), relevances rank (2, 3, 1): rho = 1
    assert qq_spearman(embeddings, pairs) == pytest.approx(1.0)


def test_qq_spearman_raises_when_a_pair_id_is_missing_from_the_submission():
    embeddings = {"1": [1.0, 0.0], "2": [0.0, 1.0]}
    with pytest.raises(MissingIdError, match="ERROR: 42 NOT found") as info:
        qq_spearman(embeddings, [("1", "2", 0.5), ("1", "42", 0.1)])
    assert isinstance(info.value, KeyError) and info.value.missing_id == "42"


def test_qq_spearman_is_nan_when_all_cosines_are_equal():
    embeddings = {"q": [1.0, 0.0], "a": [2.0, 0.0], "b": [3.0, 0.0]}
    with pytest.warns(scipy.stats.ConstantInputWarning):
        assert math.isnan(qq_spearman(embeddings, [("q", "a", 0.2), ("q", "b", 0.9)]))


def test_read_label_tsv_splits_on_any_whitespace_and_feeds_a_dataframe_alike(tmp_path):
    path = tmp_path / "label.tsv"
    path.write_text("11\t12\t0.5\n11 13  0.25\n12\t13\t1\n")
    pairs = read_label_tsv(path)
    assert pairs == [("11", "12", 0.5), ("11", "13", 0.25), ("12", "13", 1.0)]
    embeddings = {"11": [1.0, 0.2], "12": [0.3, 1.0], "13": [1.0, 1.0]}
    frame = pd.DataFrame(pairs, columns=["query", "candidate", "relevance"])
    assert qq_spearman(embeddings, frame) == qq_spearman(embeddings, pairs)


def test_read_label_tsv_rejects_a_malformed_line(tmp_path):
    path = tmp_path / "label.tsv"
    path.write_text("1\t2\t0.5\n3\t4\n")
    with pytest.raises(ValueError, match="label.tsv: line 2: expected"):
        read_label_tsv(path)
