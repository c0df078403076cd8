"""The module paths of the flat layout before the rooms (0.1.0 and earlier), kept importable.

LightningCLI writes class paths into every checkpoint's hyperparameters and every run's
config.yaml (`whisper_ft.module.WhisperFineTuner`, `whisper_ft.checkpointing.BestCheckpoint`,
…), and users' own recipes and scripts name them too. An old path imports the module that
now holds its contents, the same module object, so `fit --ckpt_path`, `test`, `export` and
`transcribe` on those checkpoints keep working:

    import whisper_ft.module                  # is whisper_ft.training.module
    from whisper_ft.check import check_manifest

`whisper_ft.data.WhisperDataModule` needs no alias: `whisper_ft.data` is the data room, whose
`__init__` gives that name.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

# old module → the module that holds its contents now
MOVED = {
    "whisper_ft.dataset": "whisper_ft.data.dataset",
    "whisper_ft.collate": "whisper_ft.data.collate",
    "whisper_ft.sampler": "whisper_ft.data.sampler",
    "whisper_ft.augment": "whisper_ft.data.augment",
    "whisper_ft.check": "whisper_ft.data.check",
    "whisper_ft.check_cache": "whisper_ft.data.check",
    "whisper_ft.check_lines": "whisper_ft.data.check",
    "whisper_ft.features": "whisper_ft.data.feature_cache",
    "whisper_ft.feature_build": "whisper_ft.data.feature_cache",
    "whisper_ft.feature_dataset": "whisper_ft.data.feature_cache",
    "whisper_ft.model": "whisper_ft.models.loading",
    "whisper_ft.ct2": "whisper_ft.models.ct2",
    "whisper_ft.hf": "whisper_ft.models.hf",
    "whisper_ft.export": "whisper_ft.models.export",
    "whisper_ft.module": "whisper_ft.training.module",
    "whisper_ft.checkpointing": "whisper_ft.training.checkpointing",
    "whisper_ft.lightning_compat": "whisper_ft.training.lightning_compat",
    "whisper_ft.failures": "whisper_ft.training.failures",
    "whisper_ft.throughput": "whisper_ft.training.throughput",
    "whisper_ft.results": "whisper_ft.training.results",
    "whisper_ft.metrics": "whisper_ft.evaluation.metrics",
    "whisper_ft.predictions": "whisper_ft.evaluation.predictions",
    "whisper_ft.report": "whisper_ft.evaluation.report",
    "whisper_ft.transcriber": "whisper_ft.inference.transcriber",
    "whisper_ft.transcribe": "whisper_ft.inference.transcribe",
    "whisper_ft.transcripts": "whisper_ft.inference.transcribe",
    "whisper_ft.serve": "whisper_ft.serving.app",
    "whisper_ft.uploads": "whisper_ft.serving.uploads",
    "whisper_ft.batcher": "whisper_ft.serving.batcher",
    "whisper_ft.connections": "whisper_ft.serving.connections",
    "whisper_ft.demo": "whisper_ft.recipes.demo",
    "whisper_ft.commands": "whisper_ft.cli.commands",
    "whisper_ft.arguments": "whisper_ft.cli.arguments",
}


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module that holds its contents now (one object, two names)."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # the target ran when it was imported


class LegacyFinder(importlib.abc.MetaPathFinder):
    """Finds the old flat module paths (`MOVED`); consulted after the real ones."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Put `LegacyFinder` on `sys.meta_path` once (after the standard finders)."""
    if not any(isinstance(f, LegacyFinder) for f in sys.meta_path):
        sys.meta_path.append(LegacyFinder())
