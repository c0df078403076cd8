"""Corpus-level error rates for Japanese: kana CER, orthographic CER, mora error rate and WER.

Every rate is summed edit operations over summed reference lengths (jiwer's alignments), summed
across processes under DDP (torchmetrics states with a "sum" reduction), never a mean of
per-batch or per-utterance rates.

What is compared depends on the target the model was trained on:

| rate | kana targets | text targets |
| --- | --- | --- |
| `kana_cer` | characters of `normalize(text)` | characters of `normalize(to_kana(text))` |
| `mora_er` | `split_morae` of the same kana | the same |
| `ortho_cer` | none (a kana model has no orthography) | characters of `normalize(text)` |
| `cer` (primary) | `kana_cer` | `ortho_cer` |
| `wer` | words of `normalize_words(text)` | the same |
| `pipeline_kana_cer` | kana of `normalize(to_kana(raw hypothesis))` | = `kana_cer` |

For kana targets a hypothesis is not read by OpenJTalk for `kana_cer`: kanji a kana model
writes are errors. `pipeline_kana_cer` is the other reading, the honest baseline for a model
that was not fine-tuned for kana: its own text (raw, before normalisation, so OpenJTalk sees
the punctuation and context it reads by) turned into kana by OpenJTalk, as a user without a
kana model would get it. For a kana model both are close.
"""

import math
from dataclasses import dataclass

import jiwer
import torch
import torchmetrics

from whisper_ft.manifest import Target
from whisper_ft.text import LongVowel, normalize, normalize_words, split_morae, to_kana


def error_rate(errors: int, length: int) -> float:
    """Edits over reference length. An empty reference: any hypothesis character is an
    insertion, a whole error (1.0), and no hypothesis is none (0.0)."""
    return errors / length if length else float(errors > 0)


@dataclass(frozen=True)
class UtteranceScore:
    target: Target  # what the model was trained to write: kana or text (orthography)
    reference: str  # normalised reference, exactly as scored for `cer`
    hypothesis: str  # normalised hypothesis, exactly as scored for `cer`
    kana_reference: str  # normalised katakana of the reference (= reference for kana targets)
    kana_hypothesis: str  # normalised katakana of the hypothesis
    kana_errors: int  # substitutions + deletions + insertions, in kana characters
    kana_chars: int  # reference length in kana characters
    mora_errors: int  # the same in morae (see text.split_morae)
    morae: int
    ortho_errors: int | None  # the same in characters of the orthography; None for kana targets
    ortho_chars: int | None
    word_errors: int  # the same in whitespace-separated words (see text.normalize_words)
    words: int
    pipeline_errors: int  # kana edits after OpenJTalk reads the raw hypothesis (/ kana_chars)

    @property
    def char_errors(self) -> int:
        """Character edits of the primary CER: orthographic for text targets, else kana."""
        return self.kana_errors if self.ortho_errors is None else self.ortho_errors

    @property
    def chars(self) -> int:
        return self.kana_chars if self.ortho_chars is None else self.ortho_chars

    @property
    def cer(self) -> float:
        return error_rate(self.char_errors, self.chars)

    @property
    def kana_cer(self) -> float:
        return error_rate(self.kana_errors, self.kana_chars)

    @property
    def mora_er(self) -> float:
        return error_rate(self.mora_errors, self.morae)

    @property
    def ortho_cer(self) -> float | None:
        if self.ortho_errors is None:
            return None
        return error_rate(self.ortho_errors, self.ortho_chars)


def _edits(output) -> int:
    return output.substitutions + output.deletions + output.insertions


def char_edits(reference: str, hypothesis: str) -> int:
    """Character substitutions + deletions + insertions (jiwer's alignment)."""
    return _edits(jiwer.process_characters(reference, hypothesis))


def score(
    reference: str,
    hypothesis: str,
    target: Target = "kana",
    long_vowel: LongVowel = "keep",
) -> UtteranceScore:
    """Edit counts of one utterance after normalisation (see the module docstring).

    target: "kana" when reference and hypothesis are katakana (the default targets), "text"
        when they are orthography; then both are also read into kana by OpenJTalk, so a model
        writing kanji gets a pronunciation score too.
    long_vowel: how `text.normalize` treats ー (keep, drop, or the vowel it lengthens); it
        applies to every rate.
    """
    if target == "kana":
        kana_ref, kana_hyp = normalize(reference, long_vowel), normalize(hypothesis, long_vowel)
        ortho_ref = ortho_hyp = None
        pipeline_hyp = normalize(to_kana(hypothesis), long_vowel)
    elif target == "text":
        kana_ref = normalize(to_kana(reference), long_vowel)
        kana_hyp = normalize(to_kana(hypothesis), long_vowel)
        ortho_ref, ortho_hyp = normalize(reference, long_vowel), normalize(hypothesis, long_vowel)
        pipeline_hyp = kana_hyp
    else:
        raise ValueError(f"target={target!r}: use 'kana' or 'text'")
    morae_ref, morae_hyp = split_morae(kana_ref), split_morae(kana_hyp)
    # Morae contain no spaces, so jiwer's words are exactly the morae.
    mora_edits = _edits(jiwer.process_words(" ".join(morae_ref), " ".join(morae_hyp)))
    ref_words = normalize_words(reference, long_vowel)
    hyp_words = normalize_words(hypothesis, long_vowel)
    return UtteranceScore(
        target=target,
        reference=kana_ref if ortho_ref is None else ortho_ref,
        hypothesis=kana_hyp if ortho_hyp is None else ortho_hyp,
        kana_reference=kana_ref,
        kana_hypothesis=kana_hyp,
        kana_errors=char_edits(kana_ref, kana_hyp),
        kana_chars=len(kana_ref),
        mora_errors=mora_edits,
        morae=len(morae_ref),
        ortho_errors=None if ortho_ref is None else char_edits(ortho_ref, ortho_hyp),
        ortho_chars=None if ortho_ref is None else len(ortho_ref),
        word_errors=_edits(jiwer.process_words(ref_words, hyp_words)),
        words=len(ref_words.split()),
        pipeline_errors=char_edits(kana_ref, pipeline_hyp),
    )


# Each corpus rate: (state summing its edits, state summing its reference lengths).
_RATES = {
    "cer": ("char_errors", "chars"),  # primary: orthographic for text targets, else kana
    "wer": ("word_errors", "words"),
    "kana_cer": ("kana_errors", "kana_chars"),
    "mora_er": ("mora_errors", "morae"),
    "ortho_cer": ("ortho_errors", "ortho_chars"),  # text-target utterances only
    "pipeline_kana_cer": ("pipeline_errors", "kana_chars"),  # raw hypothesis read by OpenJTalk
}
_COUNTS = list(dict.fromkeys(name for pair in _RATES.values() for name in pair))
_ORTHO = ("ortho_cer", "ortho_errors", "ortho_chars")


class CorpusErrorRates(torchmetrics.Metric):
    """Accumulates the edit counts of `UtteranceScore`s.

    `compute()` returns 0-d tensors, summed over processes: the rates of `_RATES` (float;
    `ortho_cer` is NaN when no text-target utterance was scored), the counts they come from
    (`char_errors`, `chars`, `kana_errors`, …; int), `n_utterances` and `n_text_utterances`.
    `rates_for_json` turns that into plain numbers for metrics.json.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in [*_COUNTS, "utterances", "text_utterances"]:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: list[UtteranceScore]) -> None:
        for name in _COUNTS:
            # `or 0`: the ortho counts of kana targets are None (no orthography to compare).
            setattr(self, name, getattr(self, name) + sum(getattr(s, name) or 0 for s in scores))
        # Rebound, not changed in place: under ddp_spawn on the CPU the default state tensors
        # are shared between processes, and `+=` made each process add to the others' counts.
        self.utterances = self.utterances + len(scores)
        self.text_utterances = self.text_utterances + sum(s.target == "text" for s in scores)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for rate, (errors, length) in _RATES.items():
            out[errors], out[length] = getattr(self, errors).clone(), getattr(self, length).clone()
            out[rate] = out[errors] / out[length].clamp(min=1)
        if self.text_utterances == 0:
            out["ortho_cer"] = torch.tensor(math.nan, device=self.device)
        out["n_utterances"] = self.utterances.clone()
        out["n_text_utterances"] = self.text_utterances.clone()
        return out


def rates_for_json(computed: dict[str, torch.Tensor]) -> dict[str, float | int | None]:
    """`CorpusErrorRates.compute()` as plain numbers for metrics.json: counts as int, rates as
    float recomputed from the counts (exact, not float32), and `ortho_cer` with its counts as
    None (JSON null; json.dumps would write NaN, which is not JSON) when no text-target
    utterance was scored."""
    out: dict[str, float | int | None] = {}
    for rate, (errors, length) in _RATES.items():
        out[errors], out[length] = int(computed[errors]), int(computed[length])
        out[rate] = out[errors] / max(out[length], 1)
    out["n_utterances"] = int(computed["n_utterances"])
    out["n_text_utterances"] = int(computed["n_text_utterances"])
    if out["n_text_utterances"] == 0:
        out.update(dict.fromkeys(_ORTHO))
    return out
