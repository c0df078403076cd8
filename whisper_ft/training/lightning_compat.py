"""The Lightning internals whisper-ft needs and Lightning has no public API for, in one place.

Each function was checked against pytorch-lightning 2.6.6 (requirements.txt pins >=2.6,<2.7);
tests/training/test_lightning_internals.py asserts each attribute still exists and still does
what the function relies on, so an upgrade fails there, not in a resumed run."""

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

# ModelCheckpoint's protected methods that ResumableCheckpoint/BestCheckpoint override or call
# (2.6.6): subclassing is how ModelCheckpoint is extended, but these names are not documented.
MODEL_CHECKPOINT_METHODS = (
    "_save_checkpoint",  # (trainer, filepath): every save; overridden to flush logs after it
    "_save_last_checkpoint",  # (trainer, monitor_candidates): writes last.ckpt
    "_save_topk_checkpoint",  # (trainer, monitor_candidates): overridden to skip non-decoding vals
    "_monitor_candidates",  # (trainer): the metrics a save names and ranks by
    "_should_skip_saving_checkpoint",  # (trainer): sanity check, fast_dev_run, saved already
)


def clear_sigterm(trainer: pl.Trainer) -> None:
    """Forgets a received SIGTERM (`trainer.received_sigterm` becomes False), so that Lightning
    does not also stop on it after our own clean stop has saved. Lightning 2.6.6 keeps the flag
    in `trainer._signal_connector.received_sigterm`; `Trainer.received_sigterm` is read-only."""
    trainer._signal_connector.received_sigterm = False


def save_last_checkpoint(callback: ModelCheckpoint, trainer: pl.Trainer) -> None:
    """Writes the callback's last.ckpt now, named with the current metrics (Lightning 2.6.6:
    `ModelCheckpoint._save_last_checkpoint(trainer, _monitor_candidates(trainer))`)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def logger_started(logger: Logger) -> bool:
    """Whether a TensorBoardLogger or CSVLogger has created its writer (`logger.experiment`,
    which a read would create). Lightning 2.6.6 keeps it in `logger._experiment`."""
    return getattr(logger, "_experiment", None) is not None


def set_purge_step(logger: TensorBoardLogger, step: int) -> None:
    """Makes a TensorBoardLogger's SummaryWriter, when created, hide the events logged at steps
    >= `step` (SummaryWriter's `purge_step`). Call before `logger_started`. Lightning 2.6.6
    passes `logger._kwargs` to `SummaryWriter(log_dir, **kwargs)` on first use."""
    if logger_started(logger):
        raise RuntimeError("set_purge_step: the logger's SummaryWriter exists already")
    logger._kwargs["purge_step"] = step


def set_logger_version(logger: Any, version: int | str) -> bool:
    """Makes a TensorBoardLogger or CSVLogger log into `version` (`version_N` for an int) when it
    has not picked one yet (constructed with `version=None`, the Trainer's default); returns
    whether it did. The version is a constructor argument only; Lightning 2.6.6 keeps it in
    `logger._version` until the first `logger.version` read fixes it."""
    if not isinstance(logger, (TensorBoardLogger, CSVLogger)) or logger._version is not None:
        return False
    logger._version = version
    return True
