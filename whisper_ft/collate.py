"""Decoder targets and the padding collator: the batch every step consumes.

Batch schema (what `Collator.__call__` returns), B utterances, L = longest token sequence:

| key             | shape          | dtype   | meaning                                            |
| --------------- | -------------- | ------- | -------------------------------------------------- |
| `audio`         | (B, n_samples) | float32 | 16-kHz waveforms zero-padded/trimmed to 30 s       |
| `dec_input_ids` | (B, L)         | int64   | SOT sequence + text tokens, padded with `eot`      |
| `labels`        | (B, L)         | int64   | `dec_input_ids` shifted left + `eot`, pad = -100   |
| `ids`           | list[str]      |         | utterance ids                                      |
| `texts`         | list[str]      |         | the target strings (references for scoring)        |
"""

from dataclasses import dataclass

import numpy as np
import torch
import whisper
from whisper.audio import N_SAMPLES
from whisper.tokenizer import Tokenizer

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips


def decoder_tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    """Teacher-forcing input for one target: `<|startoftranscript|><|ja|><|transcribe|>
    <|notimestamps|>` (the tokenizer's language and task) followed by the text's tokens."""
    return [*tokenizer.sot_sequence_including_notimestamps, *tokenizer.encode(text)]


@dataclass
class Collator:
    """Pads a list of dataset items (`{"id", "audio", "tokens", "text"}`) into one batch."""

    eot: int  # the tokenizer's end-of-text id: pads inputs and ends every label sequence
    n_samples: int = N_SAMPLES  # waveform length the encoder takes (30 s at 16 kHz)

    def __call__(self, items: list[dict]) -> dict:
        longest = max(len(item["tokens"]) for item in items)
        dec_input_ids = torch.full((len(items), longest), self.eot, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            tokens = torch.tensor(item["tokens"], dtype=torch.long)
            dec_input_ids[row, : len(tokens)] = tokens
            labels[row, : len(tokens) - 1] = tokens[1:]
            labels[row, len(tokens) - 1] = self.eot
        audio = np.stack([whisper.pad_or_trim(item["audio"], self.n_samples) for item in items])
        return {
            "audio": torch.from_numpy(audio),
            "dec_input_ids": dec_input_ids,
            "labels": labels,
            "ids": [item["id"] for item in items],
            "texts": [item["text"] for item in items],
        }
