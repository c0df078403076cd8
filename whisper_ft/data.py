"""Datasets over manifests and the LightningDataModule that feeds the module."""

from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset
from whisper.tokenizer import Tokenizer

from whisper_ft.audio import load_audio
from whisper_ft.collate import Collator, decoder_tokens
from whisper_ft.manifest import ManifestError, read_manifest


class UtteranceDataset(Dataset):
    """The utterances of one manifest: audio loaded per item, targets tokenised once.

    Each item is `{"id": str, "audio": np.ndarray (n_samples,) float32 at 16 kHz,
    "tokens": list[int] (SOT sequence + target tokens), "text": str (the target)}`.
    """

    def __init__(
        self,
        manifest: str | Path,
        tokenizer: Tokenizer,
        n_text_ctx: int,
        target: Literal["kana", "text"] = "kana",
    ) -> None:
        self.manifest = Path(manifest)
        self.utterances = read_manifest(self.manifest)
        self.targets: list[str] = []
        self.tokens: list[list[int]] = []
        for utterance in self.utterances:
            where = f"{self.manifest}:{utterance.line}"
            text = getattr(utterance, target)
            if text is None:
                raise ManifestError(
                    f"{where}: no {target!r} field. Make manifests with `python -m whisper_ft "
                    "prepare …`, which fills the katakana target and the duration."
                )
            tokens = decoder_tokens(tokenizer, text)
            if len(tokens) > n_text_ctx:
                raise ManifestError(
                    f"{where}: {utterance.id} has {len(tokens)} decoder tokens, more than the "
                    f"model's {n_text_ctx}; split the utterance or drop it from the manifest."
                )
            self.targets.append(text)
            self.tokens.append(tokens)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict:
        utterance = self.utterances[index]
        audio: np.ndarray = load_audio(utterance.audio_path(self.manifest.parent))
        return {
            "id": utterance.id,
            "audio": audio,
            "tokens": self.tokens[index],
            "text": self.targets[index],
        }


class WhisperDataModule(pl.LightningDataModule):
    """Train/val/test manifests → padded batches (schema in `whisper_ft.collate`).

    The tokenizer and the decoder's context length come from the module being trained, so the
    language and task are set once, on the model.

    Args:
        train_manifest: JSONL manifest to train on (fit).
        val_manifest: JSONL manifest for validation during fit, and for validate.
        test_manifest: JSONL manifest for test.
        batch_size: Utterances per training batch.
        eval_batch_size: Utterances per validation/test batch (decoding); None: batch_size.
        num_workers: DataLoader processes that read and resample audio.
        target: Manifest field to train on: kana (katakana from prepare) or text (the
            original orthography).
    """

    def __init__(
        self,
        train_manifest: str | None = None,
        val_manifest: str | None = None,
        test_manifest: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        target: Literal["kana", "text"] = "kana",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, UtteranceDataset] = {}

    def setup(self, stage: str) -> None:
        stage = TrainerFn(stage).value  # Lightning passes an enum that prints as TrainerFn.X
        module = self.trainer.lightning_module
        tokenizer, n_text_ctx = module.tokenizer, module.model.dims.n_text_ctx
        self.collator = Collator(eot=tokenizer.eot)
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ())
        for split in wanted:
            manifest = self.hparams[f"{split}_manifest"]
            if manifest is None:
                if split == "val" and stage == "fit":  # fit without validation is fine
                    continue
                raise ManifestError(
                    f"{stage} needs --data.{split}_manifest <file.jsonl>; make one with "
                    "`python -m whisper_ft prepare …`."
                )
            if split not in self.datasets:
                self.datasets[split] = UtteranceDataset(
                    manifest, tokenizer, n_text_ctx, self.hparams.target
                )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.hparams.batch_size
        if split != "train":
            batch_size = self.hparams.eval_batch_size or batch_size
        workers = self.hparams.num_workers
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=self.collator,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
