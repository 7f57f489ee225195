"""Chinese-CLIP's feature jsonl files: round trip, and every malformed line named with its file and line."""

import json

import numpy as np
import pytest

from vmmlib.io.feature_jsonl import feature_file, read_features, write_features


def test_features_round_trip_in_chinese_clips_layout_and_names(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 7)).astype(np.float32)
    path = write_features(
        feature_file(tmp_path, "valid", "image_id"), "image_id", np.arange(10, 15), features
    )
    assert path.name == "valid_imgs.img_feat.jsonl" and feature_file(tmp_path, "test", "text_id").name == (
        "test_texts.txt_feat.jsonl"
    )
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"image_id", "feature"} and first["image_id"] == 10 and len(first["feature"]) == 7
    key, ids, back = read_features(path)
    assert key == "image_id" and ids == [10, 11, 12, 13, 14]
    np.testing.assert_array_equal(back, features)  # float32 values survive JSON exactly
    with pytest.raises(ValueError, match="non-finite"):
        write_features(tmp_path / "x.jsonl", "text_id", [1], np.array([[np.nan]]))
    with pytest.raises(ValueError, match="valid choices: image_id, text_id"):
        write_features(tmp_path / "x.jsonl", "query_id", [1], np.ones((1, 2)))


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"image_id": 1, "feature": [1.0, 2.0]}', "{"], r"line 2: invalid JSON"),
        (['{"image_id": 1}'], r"line 1: expected"),
        (['{"image_id": 1, "text_id": 2, "feature": [1.0]}'], r"line 1: expected"),
        (
            ['{"image_id": 1, "feature": [1.0]}', '{"text_id": 2, "feature": [1.0]}'],
            r"line 2: text_id in a file of image_ids",
        ),
        (['{"image_id": true, "feature": [1.0]}'], r"line 1: image_id must be an int"),
        (
            ['{"image_id": 1, "feature": [1.0]}', '{"image_id": 1, "feature": [2.0]}'],
            r"line 2: image_id 1 repeated",
        ),
        (['{"image_id": 1, "feature": [1.0, NaN]}'], r"line 1: invalid JSON \(NaN is not JSON\)"),
        (['{"image_id": 1, "feature": [1.0, "2"]}'], r"line 1: 'feature' must be"),
        (['{"image_id": 1, "feature": []}'], r"line 1: 'feature' must be"),
        (
            ['{"image_id": 1, "feature": [1.0]}', '{"image_id": 2, "feature": [1.0, 2.0]}'],
            r"line 2: 2 values where",
        ),
        ([], r"no features"),
    ],
)
def test_a_malformed_feature_file_is_refused_naming_file_and_line(tmp_path, lines, message):
    path = tmp_path / "f.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValueError, match=message):
        read_features(path)


def test_a_value_that_overflows_float32_is_refused_not_turned_into_inf(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"image_id": 1, "feature": [1.0, 1e39]}\n')
    with pytest.raises(ValueError, match="line 1: 'feature' must be a non-empty list of finite float32"):
        read_features(path)
