"""The flat layout's module paths (before the rooms) still import, as the modules that hold their
contents now: users' scripts, recipes naming class paths, and pickles that name them."""

import importlib
import pickle
import sys

import pytest

from whisper_ft._legacy import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_module_that_holds_it_now(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_old_class_paths_name_the_same_classes():
    from whisper_ft.data import WhisperDataModule
    from whisper_ft.data.datamodule import WhisperDataModule as new_data
    from whisper_ft.training.module import WhisperFineTuner

    assert importlib.import_module("whisper_ft.module").WhisperFineTuner is WhisperFineTuner
    assert WhisperDataModule is new_data  # whisper_ft.data.WhisperDataModule, the old class path
    # What an old pickle (torch.load without weights_only) or a jsonargparse class_path reads:
    assert pickle.loads(b"cwhisper_ft.checkpointing\nBestCheckpoint\n.").__module__ == (
        "whisper_ft.training.checkpointing"
    )


def test_the_old_entry_point_still_runs(monkeypatch, capsys):
    """`whisper_ft.cli:main`, what installs made before the rooms have as their script."""
    import whisper_ft.cli
    import whisper_ft.cli.entry  # a submodule named `main` would shadow the function here

    monkeypatch.setattr(sys, "argv", ["whisper-ft", "--help"])
    with pytest.raises(SystemExit) as exit_:
        whisper_ft.cli.main()
    assert exit_.value.code == 0 and "check-data" in capsys.readouterr().out


def test_a_path_that_never_existed_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("whisper_ft.no_such_module")
