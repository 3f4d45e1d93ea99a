"""history.cores.size(): a core's size is read from the file itself, never through a symlink
planted in a directory others may write (/var/crash, a cwd)."""
import os

from coredoctor.history import cores


def test_size_of_a_regular_file_only(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 4096)
    core = tmp_path / "core.1"
    core.write_bytes(b"y" * 10)
    os.symlink(secret, tmp_path / "core.2")
    os.mkfifo(tmp_path / "core.3")
    assert cores.size(str(core)) == 10
    assert cores.size(str(tmp_path / "core.2")) is None   # not the secret's 4096
    assert cores.size(str(tmp_path / "core.3")) is None
    assert cores.size(str(tmp_path / "gone")) is None
