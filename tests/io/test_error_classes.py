"""Every reader's own error class is a `vmmlib.io.safe.InputError` (so `vmm` prints it in one line
with exit status 2), keeps its message and fields, and survives pickling across worker processes."""

import pickle

import pytest

from vmmlib.data.muge.prepare import MugeDataError
from vmmlib.data.record_checks import NonFiniteFeatureError
from vmmlib.data.wbdc.zips import FrameReadError
from vmmlib.io.lmdb_store import UnsafePickleError
from vmmlib.io.media import MediaError
from vmmlib.io.safe import InputError
from vmmlib.io.tfrecord import RecordError
from vmmlib.io.wbdc_categories import UnknownCategoryError

CASES = [
    (RecordError("bad crc", "/d/a.tfrecord", 17), "/d/a.tfrecord: record at byte offset 17: bad crc"),
    (NonFiniteFeatureError("inf in rgb", "/d/b", 3, ["v1"]), "/d/b: record at byte offset 3: inf in rgb"),
    (MediaError("/d/v.mp4", "no video stream"), "/d/v.mp4: no video stream"),
    (UnsafePickleError("refusing to load global os.system"), "refusing to load global os.system"),
    (MugeDataError("/d/t.jsonl:3: text_id 7 repeated"), "/d/t.jsonl:3: text_id 7 repeated"),
    (FrameReadError("v1", "no member v1.npy in /d/z.zip"), "video v1: no member v1.npy in /d/z.zip"),
    (UnknownCategoryError("unknown category id '9999'"), "unknown category id '9999'"),
]


@pytest.mark.parametrize("error, message", CASES, ids=[type(e).__name__ for e, _ in CASES])
def test_reader_errors_are_input_errors_with_their_messages_kept(error, message):
    assert isinstance(error, InputError) and isinstance(error, ValueError)
    assert str(error) == message
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == message
    assert (again.path, again.reason) == (error.path, error.reason)


def test_older_handlers_still_catch_what_they_caught():
    assert isinstance(MediaError("x", "y"), RuntimeError)
    assert isinstance(UnknownCategoryError("x"), KeyError)
    assert isinstance(UnsafePickleError("x"), pickle.UnpicklingError)
    assert RecordError("r", "p", 5).offset == 5 and FrameReadError("v", "r").video_id == "v"
