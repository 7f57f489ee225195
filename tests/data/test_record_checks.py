import pickle

import numpy as np
import pytest

from vmmlib.data.record_checks import (
    NonFiniteFeatureError,
    RecordRef,
    finite_frames,
    locate_record,
    nonfinite_rows,
)
from vmmlib.io import encode_example, tfrecord_index, write_tfrecord


def test_fp16_bitwise_check_agrees_with_isfinite_on_every_bit_pattern():
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(-1, 16)
    reference = ~np.isfinite(every.astype(np.float32)).all(axis=1)
    np.testing.assert_array_equal(nonfinite_rows(every), reference)
    assert reference.sum() == 2 * 1024 // 16  # codes with every exponent bit set (±inf, NaNs), 16 a row
    np.testing.assert_array_equal(nonfinite_rows(every.astype(np.float32)), reference)
    assert nonfinite_rows(np.zeros((0, 1536), np.float16)).shape == (0,)
    assert not nonfinite_rows(np.full((2, 3), 255, np.uint8)).any()  # integer features cannot be non-finite


def test_finite_frames_keeps_clean_frames_zeroes_or_drops_bad_ones():
    frames = np.ones((3, 4), np.float32)
    assert finite_frames(frames, "error", "v", None) is frames
    frames[1, 2] = np.nan
    zeroed = finite_frames(frames, "zero", "v", None)
    assert zeroed[1, 2] == 0 and np.isnan(frames[1, 2]) and zeroed.sum() == 11
    assert finite_frames(frames, "drop", "v", None) is None
    with pytest.raises(
        NonFiniteFeatureError,
        match="video v: 'frame_feature' holds non-finite values \\(NaN in frame\\(s\\) 1\\)",
    ):
        finite_frames(frames, "error", "v", None)


def test_record_refs_find_the_byte_offset_across_files(tmp_path):
    a, b = tmp_path / "a.tfrecords", tmp_path / "b.tfrecords"
    write_tfrecord(a, [encode_example({"id": str(i)}) for i in range(3)])
    write_tfrecord(b, [encode_example({"id": "x" * 50}), encode_example({"id": "y"})])
    assert locate_record([a, b], 4) == RecordRef(b, 1)
    assert RecordRef(b, 1).offset() == tfrecord_index(b)[1] > 0
    err = RecordRef(b, 1).error("bad")
    assert err.path == str(b) and err.offset == tfrecord_index(b)[1] and str(err).endswith(": bad")
    with pytest.raises(IndexError):
        locate_record([a, b], 5)


def test_nonfinite_error_keeps_its_fields_through_pickling():
    err = NonFiniteFeatureError("video v: bad", "/x.tfrecords", 12, ["v", "w"])
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.offset, back.video_ids, str(back)) == ("/x.tfrecords", 12, ["v", "w"], str(err))
