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
