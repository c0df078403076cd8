"""Pins whisper_ft.training.lightning_compat to the installed Lightning: each internal it
touches still exists and still has the effect relied on. A failure here after a Lightning
upgrade names the function to update (and requirements.txt's range to widen only once it
passes)."""

import inspect
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from whisper_ft.training.lightning_compat import (
    MODEL_CHECKPOINT_METHODS,
    clear_sigterm,
    logger_started,
    set_logger_version,
    set_purge_step,
)

REQUIREMENTS = Path(__file__).parents[2] / "requirements.txt"


def test_installed_lightning_is_in_the_range_requirements_pin():
    found = re.search(
        r"^pytorch-lightning>=(\d+)\.(\d+),<(\d+)\.(\d+)$", REQUIREMENTS.read_text(), re.M
    )
    assert found, "requirements.txt: pytorch-lightning>=X.Y,<X.Z"
    low, high = (int(found[1]), int(found[2])), (int(found[3]), int(found[4]))
    installed = tuple(int(part) for part in pl.__version__.split(".")[:2])
    assert low <= installed < high


def test_clear_sigterm_resets_trainer_received_sigterm():
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert hasattr(trainer._signal_connector, "received_sigterm")
    trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets
    assert trainer.received_sigterm
    clear_sigterm(trainer)
    assert not trainer.received_sigterm


@pytest.mark.parametrize("name", MODEL_CHECKPOINT_METHODS)
def test_model_checkpoint_methods_we_override_or_call_exist(name):
    method = getattr(ModelCheckpoint, name)
    parameters = list(inspect.signature(method).parameters)
    expected = {"_save_checkpoint": ["self", "trainer", "filepath"]}
    if name in ("_save_last_checkpoint", "_save_topk_checkpoint"):
        expected[name] = ["self", "trainer", "monitor_candidates"]
    assert parameters == expected.get(name, ["self", "trainer"])
    assert hasattr(ModelCheckpoint(), "_last_global_step_saved")  # ResumableCheckpoint reads it


@pytest.mark.parametrize("logger_class", [TensorBoardLogger, CSVLogger])
def test_logger_started_turns_true_when_the_writer_is_created(logger_class, tmp_path):
    logger = logger_class(save_dir=tmp_path)
    assert not logger_started(logger)
    assert logger.experiment is not None  # its first read creates the writer
    assert logger_started(logger)


def test_set_purge_step_hides_the_steps_a_resumed_run_logs_again(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TensorBoardLogger(save_dir=tmp_path, version=0)
    for step in range(5):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finalize("success")
    resumed = TensorBoardLogger(save_dir=tmp_path, version=0)
    set_purge_step(resumed, 3)
    resumed.log_metrics({"loss": 30.0}, step=3)
    resumed.finalize("success")
    with pytest.raises(RuntimeError, match="exists already"):
        set_purge_step(resumed, 4)
    events = EventAccumulator(resumed.log_dir)
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [
        (0, 0.0),
        (1, 1.0),
        (2, 2.0),
        (3, 30.0),
    ]


@pytest.mark.parametrize("logger_class", [TensorBoardLogger, CSVLogger])
def test_set_logger_version_picks_the_folder_until_the_logger_has_one(logger_class, tmp_path):
    logger = logger_class(save_dir=tmp_path)
    assert set_logger_version(logger, 3)
    assert logger.version == 3
    assert Path(logger.log_dir).name == "version_3"
    assert not set_logger_version(logger, 5)  # fixed once chosen
    assert logger.version == 3
    assert not set_logger_version(logger_class(save_dir=tmp_path, version=1), 3)
    assert not set_logger_version(None, 3)  # `--trainer.logger false`
