"""`RatedEntries` + `rated_map`: the segment mAP from the rated entries alone equals `segment_map`."""

import numpy as np

from vmmlib.metrics import RatedEntries, rated_map, segment_map
from vmmlib.ranking import Ranking


def test_rated_map_equals_segment_map_of_the_full_ranking():
    rng = np.random.default_rng(3)
    ids = [f"v{v}:{5 * k}" for v in range(6) for k in range(5)]
    classes = [4, 9, 11]
    truth = {(s, c): float(rng.integers(0, 2)) for s in ids for c in classes if rng.random() < 0.4}
    truth[("v0:0", 99)] = 1.0  # a class that is not ranked: not read
    index = np.stack([rng.permutation(len(ids))[:20] for _ in classes])
    ranking = Ranking(np.array(classes), index, np.zeros(index.shape, np.float32))
    entries = RatedEntries.from_truth(truth, classes)
    ranks = entries.ranks_in(ids, ranking)
    present = ranks >= 0
    got = rated_map(entries, -ranks.astype(float), present, np.zeros(len(ranks), np.int64))
    assert got == segment_map(ranking.to_submission(ids), {k: v for k, v in truth.items() if k[1] in classes})
    assert sorted(entries.num_positives) == sorted(
        {c for (_, c), v in truth.items() if v > 0 and c in classes}
    )


def test_rated_map_breaks_score_ties_by_the_tiebreak_and_is_nan_without_positives():
    entries = RatedEntries.from_truth({("a:0", 1): 0.0, ("b:0", 1): 1.0}, [1])
    tied = np.zeros(2)
    assert rated_map(entries, tied, np.ones(2, bool), np.array([0, 1])) == 0.5  # the negative first
    assert rated_map(entries, tied, np.ones(2, bool), np.array([1, 0])) == 1.0
    assert np.isnan(
        rated_map(RatedEntries.from_truth({("a:0", 1): 0.0}, [1]), np.zeros(1), np.ones(1, bool), np.zeros(1))
    )
