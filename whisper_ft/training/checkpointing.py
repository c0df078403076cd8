"""Checkpoints that survive a kill: atomic writes, a periodic `last.ckpt`, top-k by val_cer, and
a clean stop on SIGTERM/SIGINT that leaves a checkpoint to resume mid-epoch from.

Lightning (2.6) resumes a mid-epoch checkpoint by restoring its loop counters: `batch_idx` and
the step continue (`_TrainingEpochLoop.reset`, `on_run_start` adds the batches already done to
the fetcher's count), but it does not skip batches of a DataLoader that has no `state_dict`; it
only warns. `WhisperDataModule.state_dict` therefore stores where the training sampler stands
(the batches the loop finished, not those the workers prefetched), and the sampler resumes
there. A checkpoint is written only where Lightning knows how to restart from: at a training
batch's end (an epoch's end too, at its last batch: `is_last_step_of_epoch`) or a validation's
end; not from `on_train_epoch_end` or `on_exception`, whose loop states Lightning restarts with
an epoch or a logging step counted twice.
"""

import csv
import shutil
import signal
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO

from whisper_ft.files import atomic_write
from whisper_ft.training.lightning_compat import (
    clear_sigterm,
    logger_started,
    save_last_checkpoint,
    set_purge_step,
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` to a temporary file beside the checkpoint, fsync, rename: a kill while saving
    leaves the previous file whole. With `mirror_dir`, each checkpoint is also copied (the same
    way) into that folder, e.g. a mounted Google Drive that outlives a Colab runtime, under the
    run's own folder (`mirror_run_folder`): two runs never overwrite each other's copies. A
    copy that fails is a warning (the local checkpoint is written) and the next save copies
    again."""

    def __init__(self, mirror_dir: str | Path | None = None) -> None:
        super().__init__()
        self.mirror_dir = None if mirror_dir is None else Path(mirror_dir)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        try:
            with atomic_write(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as e:  # disk full: the previous checkpoint is kept
            raise OSError(
                f"could not write checkpoint {path.name} in {path.parent}: {e}; the previous one "
                "is intact. Free space there (or point --trainer.default_root_dir elsewhere) and "
                "resume with --ckpt_path last."
            ) from e
        if self.mirror_dir is not None:
            mirror = mirror_run_folder(self.mirror_dir, path) / path.name
            try:
                with atomic_write(mirror) as tmp:
                    shutil.copyfile(path, tmp)
            except OSError as e:  # Drive unmounted or full: training goes on, the next save retries
                warnings.warn(
                    f"could not copy checkpoint {path.name} to {mirror.parent}: {e}; {path} is "
                    "written, training goes on and the next checkpoint is copied again",
                    stacklevel=2,
                )

    def remove_checkpoint(self, path: _PATH) -> None:
        super().remove_checkpoint(path)
        if self.mirror_dir is not None:
            mirror = mirror_run_folder(self.mirror_dir, Path(path)) / Path(path).name
            try:
                mirror.unlink(missing_ok=True)
            except OSError as e:
                warnings.warn(f"could not remove the mirror copy {mirror}: {e}", stacklevel=2)


def mirror_run_folder(mirror_dir: Path, ckpt: Path) -> Path:
    """The run's folder under `mirror_dir`: `<logger name>/<version>` of a checkpoint in
    `…/<logger name>/<version>/checkpoints/` (`lightning_logs/version_3`), else the name of
    the checkpoint's folder."""
    folder = Path(ckpt).resolve().parent
    if folder.name == "checkpoints":
        return mirror_dir / folder.parent.parent.name / folder.parent.name
    return mirror_dir / folder.name


class ResumableCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` every `every_n_minutes` of training (or `every_n_train_steps`), at each
    epoch's last training step (before its validation) and at the fit's last, atomically; on
    SIGTERM or a first Ctrl-C (SIGINT) it finishes the step, writes `last.ckpt` and ends the
    process with the command that resumes. Loggers are flushed after each checkpoint, so that
    `continue_logs` finds every step before it.

    Args:
        every_n_minutes: Wall time between periodic checkpoints (ignored with every_n_train_steps).
        every_n_train_steps: Optimizer steps between periodic checkpoints instead; None: by time.
        mirror_dir: Also copy every checkpoint into this folder (e.g. /content/drive/MyDrive/run).
        dirpath: Checkpoint folder; None: `<log_dir>/checkpoints` (Lightning's default).
    """

    def __init__(
        self,
        every_n_minutes: float = 10.0,
        every_n_train_steps: int | None = None,
        mirror_dir: str | None = None,
        dirpath: str | None = None,
    ) -> None:
        by_time = every_n_train_steps is None
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,  # top-k by val_cer is BestCheckpoint's job
            save_last=True,
            every_n_train_steps=None if by_time else every_n_train_steps,
            train_time_interval=timedelta(minutes=every_n_minutes) if by_time else None,
            enable_version_counter=False,  # always the same last.ckpt, found by --ckpt_path last
        )
        self.mirror_dir = mirror_dir
        self._stop_signal: str | None = None
        self._previous_sigint: Any = None
        self._flush_logs = False
        self._exit_message: str | None = None  # set when a stop's checkpoint is saved

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Every checkpoint of the run (this one's and the top-k) goes through the strategy's IO.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO(self.mirror_dir)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning handles SIGTERM itself (trainer.received_sigterm); a KeyboardInterrupt would
        # stop mid-step, so SIGINT only asks to stop at the step's end. A second one stops now.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, self._previous_sigint)
        self._stop_signal = "SIGINT"
        print("\nstopping after this step (press Ctrl-C again to stop at once)…", flush=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        stop = self._stop_signal is not None or trainer.received_sigterm
        if trainer.world_size > 1:  # every process stops at the same step
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        return stop

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._flush_logs:  # the step that was just checkpointed is logged after the save
            for logger in trainer.loggers:
                logger.save()
            self._flush_logs = False
        if self._exit_message is not None:
            raise SystemExit(self._exit_message)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if is_last_step_of_epoch(trainer) and not self._should_skip_saving_checkpoint(trainer):
            save_last_checkpoint(self, trainer)
        if self._stop_requested(trainer):
            # The step is logged after this hook: exit at the next hook instead of now. Lightning
            # would raise on SIGTERM first, after validating, from a state its restart mishandles.
            self._exit_message = self._save_for_stop(trainer)
            clear_sigterm(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.on_train_batch_start(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not trainer.sanity_checking and self._stop_requested(trainer):
            message = self._save_for_stop(trainer)
            for logger in trainer.loggers:  # this step and its validation are logged already
                logger.save()
            raise SystemExit(message)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._flush_logs = True

    def _save_for_stop(self, trainer: pl.Trainer) -> str:
        """Saves last.ckpt unless this step's is saved; returns the message to exit with."""
        if self._last_global_step_saved != trainer.global_step:
            save_last_checkpoint(self, trainer)
            self._last_global_step_saved = trainer.global_step
        return resume_message(trainer, self.last_model_path, self._stop_signal)


class BestCheckpoint(ModelCheckpoint):
    """Keeps the `save_top_k` checkpoints of lowest val_cer. Validation runs that do not decode
    (`decode_every_n_val`) log no val_cer: those are skipped, not an error. Whether one decoded
    is the module's `val_decoded`, not val_cer's presence in `trainer.callback_metrics`, which
    keeps an earlier validation's value.

    Args:
        save_top_k: How many checkpoints of lowest val_cer to keep; 0: none.
        dirpath: Checkpoint folder; None: `<log_dir>/checkpoints` (Lightning's default).
    """

    def __init__(self, save_top_k: int = 3, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="epoch={epoch}-step={step}-val_cer={val_cer:.4f}",
            monitor="val_cer",
            mode="min",
            save_top_k=save_top_k,
            auto_insert_metric_name=False,
        )

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if self.monitor in monitor_candidates and trainer.lightning_module.val_decoded:
            super()._save_topk_checkpoint(trainer, monitor_candidates)


def is_last_step_of_epoch(trainer: pl.Trainer) -> bool:
    """The training batch that just ended is its epoch's last, or the fit's (`max_steps`).

    The epoch's end is checkpointed here, at that batch's end, not in `on_train_epoch_end`:
    Lightning (2.6) restarts a `max_steps` fit from a checkpoint saved in `on_train_epoch_end`
    by running that epoch's end a second time (`FitLoop` restart stage "restarted_on_epoch_end",
    its epoch loop "restarted_on_last"), which counts the epoch and the logging step twice: every
    later epoch gets the next one's `set_epoch` and every later step is logged one step off. A
    checkpoint at a training batch's end restarts with each counted once (`FitLoop.reset`
    finishes the epoch when it was the last batch)."""
    loop = trainer.fit_loop.epoch_loop
    return loop.batch_progress.is_last_batch or loop.global_step >= trainer.max_steps > 0


def resilient_callbacks(
    every_n_minutes: float = 10.0,
    every_n_train_steps: int | None = None,
    save_top_k: int = 3,
    mirror_dir: str | None = None,
) -> list[Callback]:
    """The checkpoint callbacks `python -m whisper_ft fit` uses, for a plain `pl.Trainer`:
    `pl.Trainer(callbacks=resilient_callbacks(), …)`. BestCheckpoint comes first: it is the
    Trainer's `checkpoint_callback` (`ckpt_path="best"`) and saves before a stop."""
    return [
        BestCheckpoint(save_top_k=save_top_k),
        ResumableCheckpoint(every_n_minutes, every_n_train_steps, mirror_dir),
    ]


def resume_message(trainer: pl.Trainer, ckpt: str, reason: str | None) -> str:
    """`stopped at step N …; resume with: python -m whisper_ft fit --config … --ckpt_path …`."""
    config = Path(trainer.log_dir or trainer.default_root_dir) / "config.yaml"
    command = "python -m whisper_ft fit"
    if config.is_file():
        command += f" --config {config}"
    why = reason or "SIGTERM"
    return (
        f"stopped at step {trainer.global_step} ({why}): saved {ckpt}\n"
        f"resume with: {command} --ckpt_path {ckpt}"
    )


def continue_logs(loggers: list[Logger], ckpt_path: str | Path) -> None:
    """Resuming a run whose logs reach past its checkpoint (it was killed after saving): keeps
    what was logged for the steps before the checkpoint's and drops the rest, which the resumed
    run logs again, so each step is in the log once. Call it before `fit`: Lightning creates the
    loggers' writers (and CSVLogger empties its metrics.csv) before any callback hook runs."""
    global_step = int(
        torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    )
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and not logger_started(logger):
            # SummaryWriter's own way: on opening, it hides events at steps >= purge_step.
            set_purge_step(logger, global_step)
        elif isinstance(logger, CSVLogger) and not logger_started(logger):
            metrics = Path(logger.log_dir) / "metrics.csv"
            if not metrics.is_file():
                continue
            with metrics.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) < global_step]
            writer = logger.experiment  # its creation deletes metrics.csv: write the kept rows back
            writer.metrics = [{k: v for k, v in r.items() if v != ""} for r in rows]
            writer.save()


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The `last.ckpt` under `root` (`<root>/lightning_logs/version_N/checkpoints/`); None if
    there is none. ValueError when several runs under `root` have one: which to resume is the
    user's choice (the newest is not always it), and the message lists them."""
    found = sorted(Path(root).glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if len(found) > 1:
        runs = "\n".join(
            f"  {p} (saved {time.strftime('%Y-%m-%d %H:%M', time.localtime(p.stat().st_mtime))})"
            for p in reversed(found)
        )
        raise ValueError(
            f"{len(found)} runs under {Path(root).resolve()} have a last.ckpt, newest first:\n"
            f"{runs}\nresume one with --ckpt_path <its path>, or give each run its own "
            "--trainer.default_root_dir"
        )
    return found[-1] if found else None


def logger_version(ckpt: str | Path) -> int | str | None:
    """The logger version folder a checkpoint was written in (`…/version_3/checkpoints/x.ckpt`
    → 3), so a resumed run logs on in the same folder; None if it is not in such a folder."""
    ckpt = Path(ckpt).resolve()
    if ckpt.parent.name != "checkpoints":
        return None
    name = ckpt.parent.parent.name
    if name.startswith("version_") and name[len("version_") :].isdigit():
        return int(name[len("version_") :])
    return name


def find_best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of lowest val_cer that `BestCheckpoint` kept in a run folder
    (`<run_dir>/checkpoints/epoch=…-step=…-val_cer=….ckpt`; ties: the later step), else its
    `last.ckpt`; None when it has neither."""
    folder = Path(run_dir) / "checkpoints"
    kept = []
    for path in folder.glob("*-val_cer=*.ckpt"):
        try:
            kept.append((float(path.stem.rsplit("val_cer=", 1)[1]), -path.stat().st_mtime, path))
        except ValueError:  # a hand-renamed file: not one BestCheckpoint wrote
            continue
    if kept:
        return min(kept)[2]
    last = folder / "last.ckpt"
    return last if last.is_file() else None


def resolve_ckpt_path(ckpt_path: str | None, trainer_config: dict) -> str | None:
    """`--ckpt_path last`: the last.ckpt under the Trainer's default_root_dir (Lightning's own
    "last" looks only in the new run's checkpoint folder, which is empty); ValueError listing
    them when several runs there have one. `--ckpt_path best`: the checkpoint of lowest val_cer
    in the newest run's folder (`find_best_checkpoint`; for validate/test). Else unchanged."""
    if ckpt_path not in ("last", "best"):
        return ckpt_path
    root = trainer_config.get("default_root_dir") or "."
    if ckpt_path == "last":
        try:
            found = find_last_checkpoint(root)
        except ValueError as e:
            raise ValueError(f"--ckpt_path last: {e}") from e
    else:  # validate/test: the newest run's best is the usual wish, and says which it took
        found = max(Path(root).glob("**/last.ckpt"), key=lambda p: p.stat().st_mtime, default=None)
    if found is None:
        raise FileNotFoundError(
            f"--ckpt_path {ckpt_path}: no last.ckpt under {Path(root).resolve()}; give the "
            "checkpoint's path, or the --trainer.default_root_dir the run was started with"
        )
    if ckpt_path == "best":
        found = find_best_checkpoint(found.parent.parent) or found
        print(f"--ckpt_path best: {found}", flush=True)
    else:
        print(f"resuming from {found}", flush=True)
    return str(found)
