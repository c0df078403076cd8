"""The data room: manifests' utterances to training batches. The data module, the dataset with
its input strategies (live audio, cached encoder features), collate, sampler, augmentation, the
data check and the encoder-feature cache. Imports only the core.

`WhisperDataModule` is given here too (imported on first use), the class path
`whisper_ft.data.WhisperDataModule` that configs and checkpoints written before the rooms name.
"""


def __getattr__(name: str):
    if name in ("WhisperDataModule", "ModelSide"):
        from whisper_ft.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'whisper_ft.data' has no attribute {name!r}")
