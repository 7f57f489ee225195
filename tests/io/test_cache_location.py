from pathlib import Path

from vmmlib.io import cache_dir_for, cache_location


def test_a_writable_data_folder_keeps_its_cache_inside(tmp_path):
    (tmp_path / "data").mkdir()
    assert cache_dir_for(tmp_path / "data") == (tmp_path / "data").resolve() / ".vmm_cache"


def test_a_read_only_data_folder_gets_a_cache_under_home_one_per_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_location.os, "access", lambda path, mode: False)  # root may write anywhere
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    a, b = cache_dir_for(tmp_path / "x" / "data"), cache_dir_for(tmp_path / "y" / "data")
    assert a.parent == Path(tmp_path / "home" / ".cache" / "vmmlib") and a.name.startswith("data-")
    assert a != b and a == cache_dir_for(tmp_path / "x" / "data")
