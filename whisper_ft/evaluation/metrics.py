"""Corpus-level error rates: for Japanese kana CER, orthographic CER, mora error rate and WER;
for other languages CER and WER after Whisper's normaliser; and the signs of looping.

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
| `wer` | none (see below) | OpenJTalk words of `normalize_words(text)` (spaces removed first) |
| `pipeline_kana_cer` | kana of `normalize(to_kana(raw hypothesis))` | = `kana_cer` |

Orthographic CER keeps hiragana and katakana apart. For kana targets a hypothesis is not read by
OpenJTalk for `kana_cer`: kanji a kana model writes are errors. `pipeline_kana_cer` is the other
reading, the honest baseline for a model that was not fine-tuned for kana: its own text (raw, before
normalisation, so OpenJTalk sees the punctuation and context it reads by) turned into kana by
OpenJTalk, as a user without a kana model would get it. For a kana model both are close.

Japanese WER needs words, and Japanese is written without spaces: both sides are segmented by
OpenJTalk from text with its spaces removed, so spacing is never an error. That segmentation is
real for orthography (今日 は いい 天気 です) but not for katakana, which OpenJTalk's dictionary
leaves as one word per utterance, so WER over kana would be an utterance error rate under
another name. Kana targets therefore get no WER (`word_errors`, `words` None; the corpus `wer`
NaN, null in metrics.json); kana CER and mora error rate are their rates.

Other languages (`score(..., language="en")`): Whisper's `EnglishTextNormalizer` (English) or
`BasicTextNormalizer` on both sides, CER over that text without spaces, WER over its words;
no kana, mora or pipeline rates. Beside every rate, the looping signs: `budget_hit_rate`
(hypotheses cut at the decoding budget), `repetition_rate` (`has_loop`) and `insertion_rate`.
"""

import functools
import math
import re
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
    kana_reference: str | None  # normalised katakana of the reference; None outside Japanese
    kana_hypothesis: str | None  # normalised katakana of the hypothesis
    kana_errors: int | None  # substitutions + deletions + insertions, in kana characters
    kana_chars: int | None  # reference length in kana characters
    mora_errors: int | None  # the same in morae (see text.split_morae)
    morae: int | None
    ortho_errors: int | None  # the same in characters of the orthography; None for kana targets
    ortho_chars: int | None
    # The same in words (text.normalize_words for Japanese, else spaces); None for Japanese kana
    # targets, which OpenJTalk cannot split into words (see the module docstring).
    word_errors: int | None
    words: int | None
    pipeline_errors: int | None  # kana edits after OpenJTalk reads the raw hypothesis
    char_insertions: int = 0  # insertions among the primary CER's character edits
    hit_budget: bool = False  # decoding reached its token budget without end-of-text
    repeating: bool = False  # the hypothesis holds a loop (see `has_loop`)

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
    def kana_cer(self) -> float | None:
        return None if self.kana_errors is None else error_rate(self.kana_errors, self.kana_chars)

    @property
    def mora_er(self) -> float | None:
        return None if self.mora_errors is None else error_rate(self.mora_errors, self.morae)

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


# A unit of 1-4 characters written 4 or more times in a row (サササササ, ですですですです).
_LOOP = re.compile(r"(.{1,4}?)\1{3,}", re.DOTALL)


def has_loop(text: str) -> bool:
    """Whether `text` repeats a unit of 1-4 characters at least 4 times in a row, the sign of a
    decoder stuck in a loop. Spaces are removed first; 3 repeats (ハハハ) are allowed."""
    return _LOOP.search("".join(text.split())) is not None


@functools.cache  # EnglishTextNormalizer reads its spelling table from disk when built
def _whisper_normalizer(language: str):
    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer() if language == "en" else BasicTextNormalizer()


def _score_other(
    reference: str, hypothesis: str, target: Target, language: str, hit_budget: bool
) -> UtteranceScore:
    """A language other than Japanese: Whisper's normaliser on both sides, CER on its text
    without spaces, WER on its words; no kana, mora or pipeline scores."""
    normalizer = _whisper_normalizer(language)
    ref_words, hyp_words = normalizer(reference).split(), normalizer(hypothesis).split()
    ref, hyp = "".join(ref_words), "".join(hyp_words)
    chars = jiwer.process_characters(ref, hyp)
    return UtteranceScore(
        target=target,
        reference=ref,
        hypothesis=hyp,
        kana_reference=None,
        kana_hypothesis=None,
        kana_errors=None,
        kana_chars=None,
        mora_errors=None,
        morae=None,
        ortho_errors=_edits(chars),
        ortho_chars=len(ref),
        word_errors=_edits(jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))),
        words=len(ref_words),
        pipeline_errors=None,
        char_insertions=chars.insertions,
        hit_budget=hit_budget,
        repeating=has_loop(hyp),
    )


def score(
    reference: str,
    hypothesis: str,
    target: Target = "kana",
    long_vowel: LongVowel = "keep",
    language: str = "ja",
    hit_budget: bool = False,
) -> UtteranceScore:
    """Edit counts of one utterance after normalisation (see the module docstring).

    target: "kana" when reference and hypothesis are katakana (the default targets), "text"
        when they are orthography; then both are also read into kana by OpenJTalk, so a model
        writing kanji gets a pronunciation score too.
    long_vowel: how `text.normalize` treats ー (keep, drop, or the vowel it lengthens); it
        applies to every rate.
    language: the run's language (Whisper's code). Other than "ja": Whisper's English (for
        "en") or basic normaliser on both sides, orthographic CER and WER only (kana fields
        None).
    hit_budget: the decoder reached its token budget without end-of-text (a looping sign).
    """
    if language != "ja":
        return _score_other(reference, hypothesis, target, language, hit_budget)
    if target == "kana":
        kana_ref, kana_hyp = normalize(reference, long_vowel), normalize(hypothesis, long_vowel)
        ortho_ref = ortho_hyp = None
        pipeline_hyp = normalize(to_kana(hypothesis), long_vowel)
    elif target == "text":
        kana_ref = normalize(to_kana(reference), long_vowel)
        kana_hyp = normalize(to_kana(hypothesis), long_vowel)
        # Orthography keeps its script: りんご and リンゴ are different spellings.
        ortho_ref = normalize(reference, long_vowel, fold_kana=False)
        ortho_hyp = normalize(hypothesis, long_vowel, fold_kana=False)
        pipeline_hyp = kana_hyp
    else:
        raise ValueError(f"target={target!r}: use 'kana' or 'text'")
    morae_ref, morae_hyp = split_morae(kana_ref), split_morae(kana_hyp)
    # Morae contain no spaces, so jiwer's words are exactly the morae.
    mora_edits = _edits(jiwer.process_words(" ".join(morae_ref), " ".join(morae_hyp)))
    word_errors = words = None
    if target == "text":
        ref_words = normalize_words(reference, long_vowel, fold_kana=False)
        hyp_words = normalize_words(hypothesis, long_vowel, fold_kana=False)
        word_errors = _edits(jiwer.process_words(ref_words, hyp_words))
        words = len(ref_words.split())
    kana_chars = jiwer.process_characters(kana_ref, kana_hyp)
    primary = kana_chars if ortho_ref is None else jiwer.process_characters(ortho_ref, ortho_hyp)
    return UtteranceScore(
        target=target,
        reference=kana_ref if ortho_ref is None else ortho_ref,
        hypothesis=kana_hyp if ortho_hyp is None else ortho_hyp,
        kana_reference=kana_ref,
        kana_hypothesis=kana_hyp,
        kana_errors=_edits(kana_chars),
        kana_chars=len(kana_ref),
        mora_errors=mora_edits,
        morae=len(morae_ref),
        ortho_errors=None if ortho_ref is None else _edits(primary),
        ortho_chars=None if ortho_ref is None else len(ortho_ref),
        word_errors=word_errors,
        words=words,
        pipeline_errors=char_edits(kana_ref, pipeline_hyp),
        char_insertions=primary.insertions,
        hit_budget=hit_budget,
        repeating=has_loop(kana_hyp if ortho_hyp is None else ortho_hyp),
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
_COUNTS = [*dict.fromkeys(name for pair in _RATES.values() for name in pair), "char_insertions"]
_ORTHO = ("ortho_cer", "ortho_errors", "ortho_chars")
_KANA = ("kana_cer", "kana_errors", "kana_chars", "mora_er", "mora_errors", "morae")
_KANA += ("pipeline_kana_cer", "pipeline_errors")
_WORDS = ("wer", "word_errors", "words")
# Looping signs: (rate, state it counts / what it is over).
_LOOPING = {
    "budget_hit_rate": ("budget_hits", "utterances"),  # share that hit the decoding budget
    "repetition_rate": ("repeating_utterances", "utterances"),  # share with a loop (has_loop)
    "insertion_rate": ("char_insertions", "chars"),  # inserted characters / reference characters
}
_TOTAL_KEYS = {"utterances": "n_utterances"}  # compute()'s key for a total


class CorpusErrorRates(torchmetrics.Metric):
    """Accumulates the edit counts of `UtteranceScore`s.

    `compute()` returns 0-d tensors, summed over processes: the rates of `_RATES` (float;
    `ortho_cer` is NaN when no text-target utterance was scored, `wer` when none had words),
    the counts they come from (`char_errors`, `chars`, `kana_errors`, …; int), `n_utterances`,
    `n_text_utterances`, `n_kana_utterances` and `n_word_utterances`.
    `rates_for_json` turns that into plain numbers for metrics.json.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        states = ["utterances", "text_utterances", "kana_utterances", "word_utterances"]
        for name in [*_COUNTS, *states, "budget_hits", "repeating_utterances"]:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: list[UtteranceScore]) -> None:
        for name in _COUNTS:
            # `or 0`: the ortho counts of kana targets are None (no orthography to compare).
            setattr(self, name, getattr(self, name) + sum(getattr(s, name) or 0 for s in scores))
        # Rebound, not changed in place: under ddp_spawn on the CPU the default state tensors
        # are shared between processes, and `+=` made each process add to the others' counts.
        self.utterances = self.utterances + len(scores)
        self.text_utterances = self.text_utterances + sum(s.target == "text" for s in scores)
        self.kana_utterances = self.kana_utterances + sum(s.kana_chars is not None for s in scores)
        self.word_utterances = self.word_utterances + sum(s.words is not None for s in scores)
        self.budget_hits = self.budget_hits + sum(s.hit_budget for s in scores)
        self.repeating_utterances = self.repeating_utterances + sum(s.repeating for s in scores)

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for rate, (errors, length) in _RATES.items():
            out[errors], out[length] = getattr(self, errors).clone(), getattr(self, length).clone()
            out[rate] = out[errors] / out[length].clamp(min=1)
        for rate, (count, total) in _LOOPING.items():
            out[count] = getattr(self, count).clone()
            out[rate] = out[count] / getattr(self, total).clamp(min=1)
        nan = torch.tensor(math.nan, device=self.device)
        if self.text_utterances == 0:
            out["ortho_cer"] = nan
        if self.kana_utterances == 0:  # no Japanese utterance: no kana to score
            out.update(dict.fromkeys(("kana_cer", "mora_er", "pipeline_kana_cer"), nan))
        if self.word_utterances == 0:  # Japanese kana targets only: no words to score
            out["wer"] = nan
        out["n_utterances"] = self.utterances.clone()
        out["n_text_utterances"] = self.text_utterances.clone()
        out["n_kana_utterances"] = self.kana_utterances.clone()
        out["n_word_utterances"] = self.word_utterances.clone()
        return out


def rates_for_json(computed: dict[str, torch.Tensor]) -> dict[str, float | int | None]:
    """`CorpusErrorRates.compute()` as plain numbers for metrics.json: counts as int, rates as
    float recomputed from the counts (exact, not float32), and `ortho_cer` with its counts as
    None (JSON null; json.dumps would write NaN, which is not JSON) when no text-target
    utterance was scored; the same for the kana rates without kana and for `wer` and its counts
    without words (Japanese kana targets)."""
    out: dict[str, float | int | None] = {}
    for rate, (errors, length) in _RATES.items():
        out[errors], out[length] = int(computed[errors]), int(computed[length])
        out[rate] = out[errors] / max(out[length], 1)
    out["char_insertions"] = int(computed["char_insertions"])
    for rate, (count, total) in _LOOPING.items():
        out[count] = int(computed[count])
        out[rate] = out[count] / max(int(computed[_TOTAL_KEYS.get(total, total)]), 1)
    out["n_utterances"] = int(computed["n_utterances"])
    out["n_text_utterances"] = int(computed["n_text_utterances"])
    if out["n_text_utterances"] == 0:
        out.update(dict.fromkeys(_ORTHO))
    if int(computed.get("n_kana_utterances", 1)) == 0:
        out.update(dict.fromkeys(_KANA))
    if int(computed.get("n_word_utterances", 1)) == 0:
        out.update(dict.fromkeys(_WORDS))
    return out
