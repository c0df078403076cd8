"""whisper-ft: fine-tune OpenAI Whisper with PyTorch Lightning (Japanese katakana targets first).

The public API, importable from the package itself; each name is imported on first use (PEP
562), so `import whisper_ft` stays light and inference never pulls in Lightning or the corpora:

    from whisper_ft import WhisperFineTuner, WhisperDataModule, Transcriber, export_model
"""

import importlib

from whisper_ft import _legacy

__version__ = "0.1.0"

_legacy.install()  # the module paths before the rooms (checkpoints name them)

# name → the module that defines it
_PUBLIC = {
    # training
    "WhisperFineTuner": "whisper_ft.training.module",
    "WhisperDataModule": "whisper_ft.data.datamodule",
    "find_best_checkpoint": "whisper_ft.training.checkpointing",
    "find_last_checkpoint": "whisper_ft.training.checkpointing",
    "default_precision": "whisper_ft.precision",
    "suggest_model_size": "whisper_ft.models.loading",
    # data
    "prepare_synthetic": "whisper_ft.corpora.synthetic",
    "prepare_long_recordings": "whisper_ft.corpora.synthetic",
    "prepare_jvs": "whisper_ft.corpora.jvs",
    "Utterance": "whisper_ft.manifest",
    "read_manifest": "whisper_ft.manifest",
    "write_manifest": "whisper_ft.manifest",
    "check_manifest": "whisper_ft.data.check",
    "load_audio": "whisper_ft.audio",
    "to_kana": "whisper_ft.text",
    # models
    "load_base_model": "whisper_ft.models.loading",
    "export_model": "whisper_ft.models.export",
    "DecodingSettings": "whisper_ft.decoding",
    # evaluation
    "score": "whisper_ft.evaluation.metrics",
    "score_recording": "whisper_ft.evaluation.longform",
    "show_report": "whisper_ft.evaluation.report",
    "read_scalars": "whisper_ft.evaluation.report",
    "write_report": "whisper_ft.evaluation.report",
    # inference
    "Transcriber": "whisper_ft.inference.transcriber",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'whisper_ft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
