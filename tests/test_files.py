import os

import pytest

from whisper_ft.files import atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()  # readers see nothing until the write is complete
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("previous")
    with pytest.raises(OSError, match="disk full"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise OSError("disk full")
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_two_writers_of_one_file_use_different_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    with atomic_write(target) as first:
        monkeypatch.setattr("os.getpid", lambda: 999_999)
        with atomic_write(target) as second:
            assert first != second
            second.write_text("second")
        first.write_text("first")
    assert target.read_text() == "first"  # the last complete write wins, neither is torn


def test_a_killed_writers_temporaries_are_removed_at_the_next_write(tmp_path):
    import socket
    import subprocess
    import sys

    from whisper_ft.files import _host

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    pid = int(dead.stdout)  # a process that has ended
    stale = tmp_path / f".last.ckpt.{_host()}-{pid}.tmp"  # a killed checkpoint write
    legacy = tmp_path / f".last.ckpt.{pid}.tmp"  # named as before the host was in the name
    running = tmp_path / f".other.ckpt.{_host()}-{os.getppid()}.tmp"  # a live writer's
    elsewhere = tmp_path / f".last.ckpt.{socket.gethostname()}x-{pid}.tmp"  # another machine's
    unrelated = tmp_path / ".notes.tmp"
    for path in (stale, legacy, running, elsewhere, unrelated):
        path.write_bytes(b"x" * 100)
    with atomic_write(tmp_path / "metrics.json") as tmp:
        tmp.write_text("{}")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["metrics.json", running.name, elsewhere.name, unrelated.name])


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    import stat

    synced = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    with atomic_write(tmp_path / "out.txt") as tmp:
        tmp.write_text("new")
    assert synced == [False, True]  # the file's data, then the folder holding the rename
