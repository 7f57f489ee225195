import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def qq_sample(tmp_path_factory):
    """A small QQ Browser sample dataset in the real layout (shared by the whole session: read only)."""
    from vmmlib.data.qqbrowser.sample import write_qqbrowser_sample

    return write_qqbrowser_sample(
        tmp_path_factory.mktemp("qq") / "data",
        videos=60,
        pairs=120,
        pair_videos=40,
        test_videos=10,
        shards=3,
        seed=1,
    )
