"""Decoder targets and the padding collator: the batch every step consumes.

Batch schema (what `Collator.__call__` returns), B utterances that could be read, L = longest
token sequence rounded up to a multiple of `pad_to_multiple_of` (8: tensor-core friendly), but
not past the decoder's `n_text_ctx`:

| key             | shape          | dtype   | meaning                                            |
| --------------- | -------------- | ------- | -------------------------------------------------- |
| (inputs)        |                |         | the input strategy's tensors (`data/inputs.py`):   |
|                 |                |         | `audio` (B, n_samples) + `audio_lengths` (B,) for  |
|                 |                |         | live audio, `features` (B, n_audio_ctx,            |
|                 |                |         | n_audio_state) for cached encoder output           |
|                 |                |         | (+ `features_block`, an int, when the cache holds  |
|                 |                |         | the input of that encoder block)                   |
| `durations_s`   | (B,)           | float32 | seconds of speech: what decoding's budget uses     |
| `dec_input_ids` | (B, L)         | int64   | [prompt +] SOT sequence + text tokens, padded with |
|                 |                |         | `eot`                                              |
| `labels`        | (B, L)         | int64   | `dec_input_ids` shifted left + `eot`, pad = -100;  |
|                 |                |         | -100 also over an item's prompt (see below)        |
| `ids`           | list[str]      |         | utterance ids                                      |
| `texts`         | list[str]      |         | the target strings (references for scoring)        |
| `speakers`      | list[str]      |         | speaker ids ("" where the manifest has none)       |
| `skipped`       | list[str]      |         | ids of unreadable items, left out (see below)      |
| `target`        | str            |         | what `texts` are: "kana" or "text" (orthography)   |

An item may carry `"n_prompt"` (packed windows, `data/windows.py`): its first n_prompt tokens
are a previous-text prompt (`<|startofprev|>` + text), which the model reads but is not taught
to predict: their labels, and the label of the last prompt position (which would predict the
SOT token), are -100, as in Whisper's training. The first labelled position is the SOT
token's, predicting the language token. Without it (every single-utterance item) n_prompt = 0.

An item whose target is empty (a clip with no speech, `data/speechless.py`) is labelled
`<|nospeech|>` at the SOT position when the collator has `no_speech` (as Whisper was trained),
instead of the language token every speech item teaches there: Whisper's no-speech
probability is the probability of that token after SOT, and `whisper.transcribe` and
faster-whisper skip a window by it (`decoding.LoopGuard.silent`). Taught `<|ja|>` after SOT on
every item, a fine-tune unlearns it. Its later labels (`<|transcribe|>`, `<|notimestamps|>`,
`<|endoftext|>`) stay, so decoding with the SOT sequence forced still ends at once.

An item `{"id", "error": reason}` (audio that became unreadable during a run) is left out of the
tensors and its id listed in `skipped` (usually empty). If every item was skipped, B = 0 and
L = 0: the inputs have 0 rows (`audio` (0, n_samples), `features` (0, n_audio_ctx,
n_audio_state)), `durations_s` is (0,), `dec_input_ids` and `labels` (0, 0), `ids`, `texts` and
`speakers` [].
"""

from dataclasses import dataclass, field, replace

import torch
from whisper.tokenizer import Tokenizer

from whisper_ft.data.inputs import AudioSamples, InputStrategy

IGNORE_INDEX = -100  # label value that torch's cross-entropy skips


def decoder_tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    """Teacher-forcing input for one target: `<|startoftranscript|><|ja|><|transcribe|>
    <|notimestamps|>` (the tokenizer's language and task) followed by the text's tokens."""
    return [*tokenizer.sot_sequence_including_notimestamps, *tokenizer.encode(text)]


@dataclass
class Collator:
    """Pads a list of dataset items (`{"id", "tokens", "text"}` and the input strategy's
    fields, optionally `"speaker"` and `"n_prompt"`; `{"id", "error"}` for an unreadable one)
    into one batch."""

    eot: int  # the tokenizer's end-of-text id: pads inputs and ends every label sequence
    pad_to_multiple_of: int = 8  # token columns rounded up to this (GPU tiles); 1: no rounding
    n_text_ctx: int | None = None  # the decoder's context: rounding never pads past it
    target: str = "kana"  # what the token sequences spell (kana or text); scoring depends on it
    inputs: InputStrategy = field(default_factory=AudioSamples)  # the dataset's, for its tensors
    no_speech: int | None = (
        None  # the tokenizer's <|nospeech|>: empty targets' SOT label (None: off)
    )

    def __post_init__(self) -> None:
        if self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}")

    def __call__(self, items: list[dict]) -> dict:
        skipped = [item["id"] for item in items if "error" in item]
        items = [item for item in items if "error" not in item]
        longest = max((len(item["tokens"]) for item in items), default=0)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if self.n_text_ctx is not None:  # 448 (Whisper) is a multiple of 8; a custom size may not
            width = max(longest, min(width, self.n_text_ctx))
        dec_input_ids = torch.full((len(items), width), self.eot, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            tokens = torch.tensor(item["tokens"], dtype=torch.long)
            dec_input_ids[row, : len(tokens)] = tokens
            labels[row, : len(tokens) - 1] = tokens[1:]
            labels[row, len(tokens) - 1] = self.eot
            labels[row, : item.get("n_prompt", 0)] = IGNORE_INDEX
            if self.no_speech is not None and not item["text"]:
                labels[row, item.get("n_prompt", 0)] = self.no_speech
        return {
            **self.inputs.batch(items),
            "dec_input_ids": dec_input_ids,
            "labels": labels,
            "ids": [item["id"] for item in items],
            "texts": [item["text"] for item in items],
            "speakers": [item.get("speaker", "") for item in items],
            "skipped": skipped,
            "target": self.target,
        }

    def with_inputs(self, inputs: InputStrategy) -> "Collator":
        """The same padding of tokens, the speech's tensors stacked by `inputs` instead."""
        return replace(self, inputs=inputs)
