"""tests/packaging/bookworm.py's cached_tarball, the cache-or-build of the mmdebstrap roots that
the packaging and fleet tests share, with tar standing in for mmdebstrap (a real command that
writes the target it is given)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "packaging"))

from bookworm import cached_tarball  # noqa: E402


def _tar_of(src):
    return lambda target: ["tar", "-cf", target, "-C", str(src), "."]


def test_built_once_then_reused_and_rebuilt_for_another_recipe(tmp_path, monkeypatch):
    monkeypatch.delenv("CD_TEST_FRESH", raising=False)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    cache = tmp_path / "cache"
    logs = []
    p1 = cached_tarball("bookworm-x", _tar_of(src), 1, str(cache), "CD_TEST_FRESH", logs.append)
    assert os.path.basename(p1).startswith("bookworm-x-") and os.path.isfile(p1) and len(logs) == 1
    assert cached_tarball("bookworm-x", _tar_of(src), 1, str(cache), "CD_TEST_FRESH", logs.append) == p1
    assert len(logs) == 1  # reused, not built again
    # another key's tarball in the same cache, and a link, are not this key's to remove
    other = cached_tarball("bookworm", _tar_of(src), 1, str(cache), "CD_TEST_FRESH", logs.append)
    link = cache / ("bookworm-x-" + "0" * 12 + ".tar")
    os.symlink(other, link)
    p2 = cached_tarball("bookworm-x", _tar_of(src), 2, str(cache), "CD_TEST_FRESH", logs.append)
    assert p2 != p1 and not os.path.exists(p1) and os.path.isfile(other) and os.path.islink(link)
    monkeypatch.setenv("CD_TEST_FRESH", "1")
    mtime = os.stat(p2).st_mtime_ns
    os.utime(p2, ns=(mtime - 10**9, mtime - 10**9))
    assert cached_tarball("bookworm-x", _tar_of(src), 2, str(cache), "CD_TEST_FRESH", logs.append) == p2
    assert os.stat(p2).st_mtime_ns > mtime - 10**9  # rebuilt


def test_a_stale_tarball_is_rebuilt(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    p = cached_tarball("k", _tar_of(src), 1, str(tmp_path), "CD_TEST_UNSET", lambda m: None)
    os.utime(p, (1, 1))
    assert cached_tarball("k", _tar_of(src), 1, str(tmp_path), "CD_TEST_UNSET", lambda m: None, max_age=60) == p
    assert os.stat(p).st_mtime > 1


def test_a_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="tar failed"):
        cached_tarball("k", _tar_of(tmp_path / "missing"), 1, str(tmp_path / "c"), "CD_TEST_UNSET",
                       lambda m: None)
    assert os.listdir(tmp_path / "c") == []
