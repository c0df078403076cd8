"""Corpus-level CER and WER: summed edit operations over summed reference lengths (jiwer).

Summed across processes under DDP (torchmetrics states with a "sum" reduction), never a mean
of per-batch or per-utterance rates.
"""

from dataclasses import dataclass

import jiwer
import torch
import torchmetrics

from whisper_ft.text import normalize, normalize_words


@dataclass(frozen=True)
class UtteranceScore:
    reference: str  # normalised reference, exactly as scored for CER
    hypothesis: str  # normalised hypothesis, exactly as scored for CER
    char_errors: int  # substitutions + deletions + insertions, in characters
    chars: int  # reference length in characters
    word_errors: int  # the same in whitespace-separated words (see text.normalize_words)
    words: int

    @property
    def cer(self) -> float:
        return self.char_errors / self.chars if self.chars else float(self.char_errors > 0)


def _edits(output) -> int:
    return output.substitutions + output.deletions + output.insertions


def score(reference: str, hypothesis: str) -> UtteranceScore:
    """Edit counts of one utterance after normalisation (NFKC, hiragana→katakana, no
    punctuation; no whitespace for characters)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    ref_words, hyp_words = normalize_words(reference), normalize_words(hypothesis)
    chars = jiwer.process_characters(ref, hyp)
    words = jiwer.process_words(ref_words, hyp_words)
    return UtteranceScore(
        reference=ref,
        hypothesis=hyp,
        char_errors=_edits(chars),
        chars=len(ref),
        word_errors=_edits(words),
        words=len(ref_words.split()),
    )


class CorpusErrorRates(torchmetrics.Metric):
    """Accumulates edit counts; `compute()` returns `{"cer", "wer", "n_utterances"}`."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("char_errors", "chars", "word_errors", "words", "utterances"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: list[UtteranceScore]) -> None:
        self.char_errors += sum(s.char_errors for s in scores)
        self.chars += sum(s.chars for s in scores)
        self.word_errors += sum(s.word_errors for s in scores)
        self.words += sum(s.words for s in scores)
        self.utterances += len(scores)

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            "cer": self.char_errors / self.chars.clamp(min=1),
            "wer": self.word_errors / self.words.clamp(min=1),
            "n_utterances": self.utterances.clone(),
        }
