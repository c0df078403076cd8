"""Retention: how well a model still transcribes a language it was not fine-tuned on, e.g.
English after a Japanese kana fine-tune (catastrophic forgetting, measured).

    retention_scores(model, manifest, language)   WER and looping signs of one model
    retention(before, after, manifest, language)  both, and after / before
    retention_row(result)                         "| before | after | ratio |" for a table
    cached_scores(stored, model, manifest, …)     a model's scores kept in a JSON (the base's:
                                                  computed once, the model loaded only then)

Every clip is decoded as plain text in `language` (`decoding_options`: greedy, without
timestamps, no katakana constraint, whatever the model was fine-tuned to write), cut at its
budget from the audio (`budgets_for`), and scored by `metrics.score` with Whisper's normaliser
(`EnglishTextNormalizer` for "en"): WER is summed word edits over summed reference words. The
manifest's `text` is the reference (`corpora.espeak.prepare_espeak` writes the English set).
No Lightning; imports only the core and `evaluation.metrics`.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from whisper.model import Whisper

from whisper_ft.audio import load_audio, window_mel
from whisper_ft.decoding import budgets_for, decode_results, decoding_options, hit_budget
from whisper_ft.evaluation.metrics import UtteranceScore, error_rate, score
from whisper_ft.manifest import read_manifest


@dataclass(frozen=True)
class RetentionScores:
    """One model's scores on a retention set."""

    language: str  # the language decoded and normalised
    word_errors: int  # word substitutions + deletions + insertions, summed over utterances
    words: int  # reference words (after the normaliser), summed
    budget_hits: int  # hypotheses cut at their decoding budget (a looping sign)
    repeating: int  # hypotheses holding a loop (`metrics.has_loop`)
    utterances: list[UtteranceScore] = field(default_factory=list, repr=False)
    hypotheses: list[str] = field(default_factory=list, repr=False)  # raw decoded texts

    @property
    def wer(self) -> float:
        return error_rate(self.word_errors, self.words)

    @property
    def n_utterances(self) -> int:
        return len(self.utterances)


def scores_of(
    references: list[str],
    hypotheses: list[str],
    language: str = "en",
    budget_hits: list[bool] | None = None,
) -> RetentionScores:
    """`RetentionScores` of decoded `hypotheses` against `references` (text targets, Whisper's
    normaliser for `language`); `budget_hits`: which were cut at their budget (None: none)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    hits = budget_hits or [False] * len(references)
    scored = [
        score(ref, hyp, target="text", language=language, hit_budget=hit)
        for ref, hyp, hit in zip(references, hypotheses, hits, strict=True)
    ]
    return RetentionScores(
        language=language,
        word_errors=sum(s.word_errors for s in scored),
        words=sum(s.words for s in scored),
        budget_hits=sum(s.hit_budget for s in scored),
        repeating=sum(s.repeating for s in scored),
        utterances=scored,
        hypotheses=list(hypotheses),
    )


@torch.no_grad()
def encode_clips(model: Whisper, manifest: str | Path, batch_size: int = 8) -> torch.Tensor:
    """`model`'s encoder output for every clip of `manifest` (each cut or padded to 30 s), on
    the CPU: what models sharing that encoder (a fine-tune with a frozen encoder, and the base
    it started from) can all decode from, one encoder pass for them all.

    returns : torch.Tensor, shape = (n_clips, n_audio_ctx, n_audio_state), float32
    """
    manifest = Path(manifest)
    utterances = read_manifest(manifest)
    device = next(model.parameters()).device
    dtype = next(model.encoder.parameters()).dtype
    was_training = model.training
    model.eval()
    try:
        parts = []
        for start in range(0, len(utterances), batch_size):
            batch = utterances[start : start + batch_size]
            waveforms = [load_audio(u.audio_path(manifest.parent)) for u in batch]
            mel = window_mel(waveforms, model.dims.n_mels, device)
            with torch.autocast(device.type, enabled=False):  # as `decode_results` decodes
                parts.append(model.encoder(mel.to(dtype)).float().cpu())
    finally:
        model.train(was_training)
    return (
        torch.cat(parts)
        if parts
        else torch.zeros(0, model.dims.n_audio_ctx, model.dims.n_audio_state)
    )


@torch.no_grad()
def retention_scores(
    model: Whisper,
    manifest: str | Path,
    language: str = "en",
    batch_size: int = 8,
    audio_features: torch.Tensor | None = None,
) -> RetentionScores:
    """Decode every clip of `manifest` with `model` (on its own device) as plain `language`
    text and score it (see the module docstring). Clips longer than 30 s are cut to 30 s.
    `audio_features`: the clips' encoder output (`encode_clips` of a model with the same
    encoder); None: `encode_clips` of `model`."""
    if language == "ja":
        raise ValueError(
            "`language` 'ja' is the fine-tuned language: retention is measured in another one "
            "(e.g. 'en' with corpora.espeak.prepare_espeak); use `test` for Japanese."
        )
    utterances = read_manifest(manifest)
    if audio_features is None:
        audio_features = encode_clips(model, manifest, batch_size)
    device = next(model.parameters()).device
    options = decoding_options(language, "transcribe", device)
    hypotheses: list[str] = []
    hits: list[bool] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(utterances), batch_size):
            batch = utterances[start : start + batch_size]
            features = audio_features[start : start + batch_size].to(device)
            budgets = budgets_for([u.duration or 0.0 for u in batch], model.dims.n_text_ctx)
            results = decode_results(model, features, options, budgets)
            hypotheses += [r.text for r in results]
            hits += [hit_budget(r, b) for r, b in zip(results, budgets, strict=True)]
    finally:
        model.train(was_training)
    return scores_of([u.text for u in utterances], hypotheses, language, hits)


@dataclass(frozen=True)
class Retention:
    """A model's retention set scores before and after fine-tuning."""

    before: RetentionScores
    after: RetentionScores

    @property
    def ratio(self) -> float:
        """WER after / WER before (1.0: nothing forgotten; inf when before was perfect)."""
        if self.before.wer == 0:
            return 1.0 if self.after.wer == 0 else float("inf")
        return self.after.wer / self.before.wer


def cached_scores(
    stored: str | Path,
    load_model: Callable[[], Whisper],
    manifest: str | Path,
    language: str = "en",
    batch_size: int = 8,
    audio_features: torch.Tensor | None = None,
) -> RetentionScores:
    """`retention_scores` of the model `load_model()` returns (from `audio_features` when
    given, as `retention_scores` takes them), kept in the JSON `stored` (its
    hypotheses and budget hits, re-scored on reading): a later call on the same manifest
    reads them and never calls `load_model`. The file is rewritten when the manifest's
    references or `language` changed."""
    stored, manifest = Path(stored), Path(manifest)
    references = [u.text for u in read_manifest(manifest)]
    if stored.is_file():
        kept = json.loads(stored.read_text(encoding="utf-8"))
        if kept.get("references") == references and kept.get("language") == language:
            return scores_of(references, kept["hypotheses"], language, kept["budget_hits"])
    scores = retention_scores(load_model(), manifest, language, batch_size, audio_features)
    hits = [u.hit_budget for u in scores.utterances]
    kept = {"language": language, "references": references, "hypotheses": scores.hypotheses}
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps({**kept, "budget_hits": hits}, ensure_ascii=False) + "\n")
    return scores


def retention(
    model_before: Whisper,
    model_after: Whisper,
    manifest: str | Path,
    language: str = "en",
    batch_size: int = 8,
) -> Retention:
    """`retention_scores` of the base (`model_before`) and the fine-tune (`model_after`)."""
    return Retention(
        retention_scores(model_before, manifest, language, batch_size),
        retention_scores(model_after, manifest, language, batch_size),
    )


RETENTION_HEADER = (
    "| language | utterances | WER before | WER after | ratio | budget hits before / after "
    "| loops before / after |\n| --- | --- | --- | --- | --- | --- | --- |\n"
)


def retention_json(result: Retention) -> dict:
    """The figures of `retention_row`, for metrics.json (`retention_row` reads them back)."""
    b, a = result.before, result.after
    return {
        "language": b.language,
        "utterances": b.n_utterances,
        "wer_before": b.wer,
        "wer_after": a.wer,
        "ratio": result.ratio,
        "budget_hits_before": b.budget_hits,
        "budget_hits_after": a.budget_hits,
        "loops_before": b.repeating,
        "loops_after": a.repeating,
    }


def retention_row(result: Retention | dict) -> str:
    """One Markdown table row under `RETENTION_HEADER`: WER before, after, and their ratio;
    `result` a `Retention` or its `retention_json`."""
    r = retention_json(result) if isinstance(result, Retention) else result
    return (
        f"| {r['language']} | {r['utterances']} | {r['wer_before']:.3f} | {r['wer_after']:.3f} "
        f"| {r['ratio']:.2f} | {r['budget_hits_before']} / {r['budget_hits_after']} "
        f"| {r['loops_before']} / {r['loops_after']} |\n"
    )
