"""`python -m whisper_ft <command>`: the entry point. Owns the LightningCLI of fit/validate/test
(checkpoint callbacks, `--ckpt_path last`, `--tune_batch_size`), the parser of the other verbs
(the verb table of `build_parser`; each verb's front is in `commands.py` or `transcription.py`,
its options made from a library function's signature), and `main`, the one place where a user
error becomes one `error:` line."""

import argparse
import contextlib
import logging
import sys
import warnings
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test")


# The loggers Lightning's rank_zero_info writes through (the fabric's one or the trainer's).
LIGHTNING_INFO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class NoLightningTips(logging.Filter):
    """Drops Lightning's "💡 Tip: …" lines, advertisements for litlogger and litmodels that
    say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


@contextlib.contextmanager
def lightning_quieted():
    """Within: no Lightning tips, no FutureWarning of Lightning's own `_pytree` about torch's
    deprecated `LeafSpec` (Lightning's to fix, not the user's), and no question whether an
    empty validation loader list was intended. Each is matched by the module that emits it, so
    nothing else is hidden; the logger and warning filters are as before once the block ends."""
    tips = NoLightningTips()
    loggers = [logging.getLogger(name) for name in LIGHTNING_INFO_LOGGERS]
    for logger in loggers:
        logger.addFilter(tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                category=FutureWarning,
                module=r"pytorch_lightning\.utilities\._pytree",
            )
            # A fit without --data.val_manifest has an empty list of validation loaders, on
            # purpose; Lightning asks whether that was intended.
            warnings.filterwarnings(
                "ignore",
                message=r"Total length of `list` across ranks is zero",
                module=r"pytorch_lightning\.utilities\.data",
            )
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(tips)


def run_lightning(args: list[str] | None) -> None:
    """fit/validate/test through LightningCLI: every `__init__` argument of the module and data
    module is an option (`--model.*`, `--data.*`), as is every `--trainer.*` flag;
    `--config` takes a file or a shipped recipe's name (`recipes.resolve_config`)."""
    from pytorch_lightning.cli import LightningCLI

    from whisper_ft.recipes import with_recipes

    args = with_recipes(sys.argv[1:] if args is None else args)

    from whisper_ft.corpora.espeak import retention_set
    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.precision import default_precision
    from whisper_ft.training.checkpointing import (
        BestCheckpoint,
        ResumableCheckpoint,
        continue_logs,
        logger_version,
        resolve_ckpt_path,
    )
    from whisper_ft.training.lightning_compat import set_logger_version
    from whisper_ft.training.module import WhisperFineTuner

    class WhisperFTCLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            # `--ckpt_path last`/`best` becomes the checkpoint's path right after parsing, before
            # Lightning reads the checkpoint's hyperparameters into the config, so that a resumed
            # fit gets them as it does with an explicit path.
            super().parse_arguments(parser, args)
            if self.config.get("subcommand"):
                config = self.config[self.config.subcommand]
                config["ckpt_path"] = resolve_ckpt_path(config.get("ckpt_path"), config["trainer"])

        def before_instantiate_classes(self) -> None:
            # With --ckpt_path the checkpoint holds the dims and every weight: build the model
            # from it instead of downloading (or finding) the base model only to overwrite it.
            # The base model's name is kept in the hyperparameters and reports.
            config = self.config[self.subcommand]
            self.base_model = config["model"]["base_model"]
            ckpt_path = config.get("ckpt_path")  # `last` already resolved by parse_arguments
            self.resume_version = None if ckpt_path is None else logger_version(ckpt_path)
            if ckpt_path and Path(ckpt_path).suffix == ".ckpt" and Path(ckpt_path).is_file():
                config["model"]["base_model"] = str(ckpt_path)

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            self.model.hparams.base_model = self.base_model
            if self.resume_version is not None:
                # The resumed run logs on in the checkpoint's version folder (TensorBoard curves
                # continue); Lightning would otherwise start a new version_N.
                set_logger_version(self.trainer.logger, self.resume_version)
            if self.subcommand == "fit" and self.config[self.subcommand].get("ckpt_path"):
                continue_logs(self.trainer.loggers, self.config[self.subcommand]["ckpt_path"])

        def add_arguments_to_parser(self, parser) -> None:
            # last.ckpt every 10 min and at epoch ends (--checkpoint.every_n_minutes,
            # --checkpoint.every_n_train_steps, --checkpoint.mirror_dir for a second copy on
            # e.g. Google Drive), top-3 by val_cer (--best_checkpoint.save_top_k), a clean stop
            # on SIGTERM/Ctrl-C. BestCheckpoint first: it is the Trainer's checkpoint_callback.
            parser.add_lightning_class_args(BestCheckpoint, "best_checkpoint")
            parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
            parser.add_argument(
                "--tune_batch_size",
                type=bool,
                default=False,
                help="fit: first find the largest --data.batch_size that trains without running "
                "out of memory (Lightning's Tuner, doubling from --data.batch_size), then train "
                "with it",
            )

        def before_fit(self) -> None:
            if self.config[self.subcommand].get("tune_batch_size"):
                tune_batch_size(self.trainer, self.model, self.datamodule)

        def before_test(self) -> None:
            # The retention set (English spoken by espeak-ng), made once under the root folder.
            language = self.model.hparams.get("retention_language")
            if language:
                self.model.retention_set = retention_set(self.trainer.default_root_dir, language)

    WhisperFTCLI(
        WhisperFineTuner,
        WhisperDataModule,
        args=args,
        trainer_defaults={"default_root_dir": "checkpoints", "precision": default_precision()},
        save_config_kwargs={"overwrite": True},
        # The module's own AdamW groups and schedule; a second way to set them would conflict.
        auto_configure_optimizers=False,
        parser_kwargs={"prog": "python -m whisper_ft"},
        seed_everything_default=0,
    )


def tune_batch_size(trainer, model, datamodule) -> int:
    """Lightning's Tuner in power mode: from the data module's batch_size, doubles it while 3
    training steps fit in memory (halves it on the first out-of-memory error), leaves the
    largest that fit in `datamodule.hparams.batch_size` and returns it. The model and
    optimizer are restored afterwards: the trials do not count as training."""
    from pytorch_lightning.tuner import Tuner

    if datamodule.hparams.max_duration_s is not None:
        sys.exit(
            "error: --tune_batch_size tunes --data.batch_size, but --data.max_duration_s makes "
            "batches by seconds of audio; drop one of the two."
        )
    size = Tuner(trainer).scale_batch_size(
        model, datamodule=datamodule, mode="power", init_val=datamodule.hparams.batch_size
    )
    print(f"--tune_batch_size: training with --data.batch_size {size}", flush=True)
    return size


def lightning_flags() -> dict[str, str]:
    """fit/validate/test's flag of each parameter a library message may name: the module's
    (`lr` → --model.lr), the data module's (--data.*), the Trainer's (--trainer.*) and
    --tune_batch_size."""
    import inspect

    from pytorch_lightning import Trainer

    from whisper_ft.data.datamodule import WhisperDataModule
    from whisper_ft.training.module import WhisperFineTuner

    flags = {"tune_batch_size": "--tune_batch_size"}
    for prefix, cls in (
        ("trainer", Trainer),
        ("data", WhisperDataModule),
        ("model", WhisperFineTuner),
    ):
        for name in list(inspect.signature(cls.__init__).parameters)[1:]:  # after self
            flags[name] = f"--{prefix}.{name}"
    return flags


def build_parser() -> argparse.ArgumentParser:
    from whisper_ft.cli.commands import (
        add_cache_command,
        add_check_command,
        add_demo_command,
        add_export_command,
        add_prepare_command,
        add_recipes_command,
        add_report_command,
    )
    from whisper_ft.cli.transcription import add_serve_command, add_transcribe_command

    parser = argparse.ArgumentParser(
        prog="python -m whisper_ft",
        description="Fine-tune OpenAI Whisper with PyTorch Lightning. Also: fit, validate, test "
        "(LightningCLI; see `python -m whisper_ft fit --help`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    add_demo_command(commands)
    add_prepare_command(commands)
    add_check_command(commands)
    add_cache_command(commands)
    add_recipes_command(commands)
    add_report_command(commands)
    add_serve_command(commands)
    add_export_command(commands)
    add_transcribe_command(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one command: the one place where an error about the user's input ends the process
    with one `error: …` line instead of a traceback.

    User errors are what the library raises for input it cannot use: ValueError (a corpus,
    manifest, audio file, argument; ManifestError, AudioError and the others subclass it),
    FileNotFoundError, ImportError of an optional package (the message says what to install)
    and ModelLoadError; also a full disk, running out of memory and a diverging loss. Anything
    else is a bug and keeps its traceback.
    """
    import errno

    from whisper_ft.cli.arguments import with_flags
    from whisper_ft.models.loading import ModelLoadError

    args = sys.argv[1:] if argv is None else argv
    flags: dict[str, str] = {}  # parameter → its flag, for the error line
    try:
        # Every verb (fit as much as demo, test inside it, cache) runs without Lightning's tips.
        with lightning_quieted():
            if args and args[0] in LIGHTNING_COMMANDS:
                flags = lightning_flags()
                run_lightning(argv)
                return
            parsed = build_parser().parse_args(args)
            flags = getattr(parsed, "flags", {})
            code = parsed.func(parsed)
        sys.exit(code)
    except (ValueError, FileNotFoundError, ImportError, ModelLoadError) as e:
        # Library errors name parameters; on the command line they are flags.
        sys.exit(f"error: {with_flags(str(e), flags)}")
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
        from whisper_ft.training.failures import (
            NonFiniteLossError,
            is_out_of_memory,
            out_of_memory_message,
        )

        if isinstance(e, NonFiniteLossError):
            sys.exit(f"error: {with_flags(str(e), flags)}")
        if is_out_of_memory(e):
            sys.exit(f"error: {with_flags(out_of_memory_message(e), flags)}")
        raise
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        sys.exit(
            f"error: no space left on the device{where}. What was stored before is kept (the "
            "previous checkpoint; encoder-feature cache rows already written, which the next "
            "run reuses). Free space, or point --out / --trainer.default_root_dir / "
            "--data.feature_cache at a larger disk."
        )
