"""Evaluation and transcription by real decoding: `whisper.DecodingOptions` and batched greedy."""

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import whisper
from whisper.audio import SAMPLE_RATE
from whisper.model import Whisper
from whisper.tokenizer import Tokenizer, get_tokenizer
from whisper.utils import compression_ratio

from whisper_ft.audio import pink, window_mel

# What a katakana transcript may contain besides the katakana block (U+30A0–U+30FF, with ー):
# the punctuation OpenJTalk's g2p keeps, and the space.
KANA_PUNCTUATION = "、。！？・「」 "

# The decoding budget (`decoding_budget`): no speech carries more than about 15 tokens a
# second (natural Japanese is ~8 mora/s, ~1.04 kana tokens per mora; English ~4 tokens/s),
# plus a few for punctuation, never past Whisper's own default of half the text context.
TOKENS_PER_SECOND = 15
BUDGET_SLACK = 8


N_TEXT_CTX = 448  # decoder context of every released Whisper (ModelDimensions.n_text_ctx)
SETTINGS_FILE = "whisper_ft.json"  # a CTranslate2 or Hugging Face export's DecodingSettings


@dataclass(frozen=True)
class DecodingSettings:
    """How a model was fine-tuned to decode, stored in every checkpoint and export (`.ckpt`
    key `whisper_ft_decoding`, `.pt` key `whisper_ft`, `SETTINGS_FILE` in a folder) and used
    as the defaults of `transcribe`, `serve` and `test`, so none of them decodes a translate
    or English fine-tune as Japanese transcription."""

    language: str = "ja"  # the language token
    task: str = "transcribe"  # transcribe or translate
    target: str | None = None  # what it was trained on: kana, text; None: not recorded
    kana_decoding: bool = False  # katakana-only decoding (`non_katakana_tokens`) for kana

    @property
    def kana_only(self) -> bool:
        """Whether decoding suppresses every token that cannot be part of katakana."""
        return self.kana_decoding and self.target == "kana"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DecodingSettings":
        """The settings in `values`, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def suppress_tokens(self, tokenizer: Tokenizer) -> list[int] | None:
        """`decoding_options`' `suppress_tokens`: a fresh katakana constraint, else None."""
        return non_katakana_tokens(tokenizer) if self.kana_only else None


def decoding_options(
    language: str,
    task: str,
    device: torch.device,
    sample_len: int | None = None,
    suppress_tokens: list[int] | None = None,
) -> whisper.DecodingOptions:
    """The options evaluation and `transcribe` share: greedy, no timestamps, fp16 on CUDA.

    Greedy because openai-whisper's batched beam search repeats the tokens per beam but not
    the audio features, so it breaks for batches of more than one utterance. `suppress_tokens`
    None keeps Whisper's default list ("-1"); a list replaces it (`non_katakana_tokens`).
    """
    return whisper.DecodingOptions(
        language=language,
        task=task,
        without_timestamps=True,
        fp16=device.type == "cuda",
        sample_len=sample_len,
        suppress_tokens="-1" if suppress_tokens is None else suppress_tokens,
    )


def non_katakana_tokens(tokenizer: Tokenizer) -> list[int]:
    """Text tokens that cannot be part of a katakana transcript: suppressed, they constrain
    decoding to katakana, ー and `KANA_PUNCTUATION`.

    Whisper's byte-level BPE splits characters across tokens, so a token is kept when its
    bytes can stand inside the UTF-8 of such a text: the tail of one allowed character, whole
    allowed characters, then the head of one (about 200 of multilingual Whisper's 50,257).
    """
    # A fresh list: Whisper's `DecodingTask._get_suppress_tokens` extends the list it is given
    # in place, which would grow a cached one on every decode.
    return list(_non_katakana(tokenizer.encoding, tokenizer.eot))


_KANA_UTF8 = {c.encode() for c in {chr(c) for c in range(0x30A0, 0x3100)} | set(KANA_PUNCTUATION)}
_KANA_HEADS = {b[:i] for b in _KANA_UTF8 for i in range(1, len(b))}
_KANA_TAILS = {b[i:] for b in _KANA_UTF8 for i in range(1, len(b))}


def _whole_then_head(data: bytes) -> bool:
    i = 0
    while i < len(data):
        n = next((n for n in (3, 2, 1) if data[i : i + n] in _KANA_UTF8), 0)
        if not n:
            return data[i:] in _KANA_HEADS
        i += n
    return True


def _fits_kana(data: bytes) -> bool:
    return _whole_then_head(data) or any(
        data[:k] in _KANA_TAILS and _whole_then_head(data[k:]) for k in (1, 2)
    )


@functools.cache  # one scan (0.1 s) per vocabulary
def _non_katakana(encoding, eot: int) -> tuple[int, ...]:
    return tuple(t for t in range(eot) if not _fits_kana(encoding.decode_single_token_bytes(t)))


def max_decode_tokens(n_text_ctx: int) -> int:
    """The most tokens decoding emits: Whisper's default `sample_len`, half the decoder's
    context (224 for every released model). A target longer than this cannot be produced."""
    return n_text_ctx // 2


def decoding_budget(duration_s: float | None, n_text_ctx: int, cap: int | None = None) -> int:
    """Tokens decoding may emit for `duration_s` seconds of audio, from the audio alone:
    `TOKENS_PER_SECOND` × duration + `BUDGET_SLACK`, at most `max_decode_tokens` (and `cap`).
    The same in test, validate, transcribe and serve, whatever the reference or the batch;
    a hypothesis that reaches it loops or hallucinates (`hit_budget`). Unknown duration
    (None or 0): the whole `max_decode_tokens`."""
    limit = (
        max_decode_tokens(n_text_ctx) if cap is None else min(cap, max_decode_tokens(n_text_ctx))
    )
    if not duration_s or duration_s <= 0:
        return limit
    return min(limit, math.ceil(duration_s * TOKENS_PER_SECOND) + BUDGET_SLACK)


def budgets_for(
    durations_s: torch.Tensor | list[float], n_text_ctx: int, cap: int | None = None
) -> list[int]:
    """`decoding_budget` of each row.

    durations_s : shape = (batch,), seconds of real audio per row (0: unknown)
    """
    return [decoding_budget(float(d), n_text_ctx, cap) for d in durations_s]


def decode_results(
    model: Whisper,
    features: torch.Tensor,
    options: whisper.DecodingOptions,
    budgets: list[int] | None = None,
) -> list[whisper.DecodingResult]:
    """Batched greedy decoding; one `whisper.DecodingResult` per row (`.text`, `.tokens`
    without end-of-text, `.avg_logprob`, `.compression_ratio`).

    With `budgets` (tokens per row, `budgets_for`), the batch decodes up to the largest and
    each row is cut at its own: greedy rows do not depend on one another, so a row's result
    is what decoding it alone with its budget gives, whatever its batch-mates (a cut row keeps
    the `avg_logprob` of its longer run). Without, `options.sample_len` holds for every row.

    features : torch.Tensor, shape = (batch, n_mels, 3000) log-mel, or (batch, n_audio_ctx,
        n_audio_state) encoder output (then `model.decode` skips the encoder).
    """
    if budgets is not None:
        if len(budgets) != len(features):
            raise ValueError(f"{len(budgets)} budgets for a batch of {len(features)}")
        if not budgets:
            return []
        options = dataclasses.replace(options, sample_len=max(budgets))
    if isinstance(options.suppress_tokens, list):
        # Whisper's `DecodingTask._get_suppress_tokens` extends this list in place: it gets a
        # copy, so options reused across calls (`Transcriber.options`) keep their own.
        options = dataclasses.replace(options, suppress_tokens=list(options.suppress_tokens))
    # Mixed-precision training wraps evaluation in autocast; decoding keeps Whisper's own
    # fp16/fp32 choice instead.
    with torch.autocast(features.device.type, enabled=False):
        results = model.decode(features, options)
    if budgets is None:
        return results
    tokenizer = get_tokenizer(
        model.is_multilingual,
        num_languages=model.num_languages,
        language=options.language,
        task=options.task,
    )
    return [_cut(r, budget, tokenizer) for r, budget in zip(results, budgets, strict=True)]


def _cut(
    result: whisper.DecodingResult, budget: int, tokenizer: Tokenizer
) -> whisper.DecodingResult:
    if len(result.tokens) <= budget:
        return result
    text = tokenizer.decode(result.tokens[:budget]).strip()
    return dataclasses.replace(
        result, tokens=result.tokens[:budget], text=text, compression_ratio=compression_ratio(text)
    )


@dataclass(frozen=True)
class LoopGuard:
    """`whisper.transcribe`'s checks of a decoded window and its temperature fallback, for a
    batch of files of up to 30 s (`decode_guarded`): a row that reached its budget, whose text
    compresses too well (a loop) or whose tokens are too unlikely is decoded again by sampling
    at each temperature in turn until it passes (the last try is kept, as Whisper does); a
    row the model calls no speech, with unlikely tokens, becomes "". None: that check is off."""

    compression_ratio_threshold: float | None = 2.4  # whisper.transcribe's defaults
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    # Above this no-speech probability a row is silence whatever its text: a fine-tune taught
    # `<|nospeech|>` (`--data.no_speech_label`) gives 0.997 to 1.00 on silence and noise and at
    # most 0.002 on speech, and then may say a confident ヲ or loop on digital silence;
    # pretrained base gives at most 0.93 even there, so Whisper's own rule alone applies to it
    # (benchmarks/RESULTS.md, "Packed windows"). None: Whisper's rule alone.
    certain_no_speech: float | None = 0.99
    temperatures: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    seed: int = 0  # sampling is seeded: the same audio gives the same text every time

    def silent(self, result: whisper.DecodingResult) -> bool:
        """No speech: Whisper's no-speech probability above the threshold, and text that is
        unlikely (Whisper's rule) or holds no letter or digit. The second case is this
        project's: Whisper's decoding bans <|endoftext|> as the first token, so a model that
        would end at once says its likeliest other token, often a confident 。; Whisper's
        log-prob condition protects confident speech, and a text without a word has none.
        A no-speech probability above `certain_no_speech` is silence whatever the text."""
        if self.no_speech_threshold is None or result.no_speech_prob <= self.no_speech_threshold:
            return False
        if self.certain_no_speech is not None and result.no_speech_prob > self.certain_no_speech:
            return True
        unlikely = (
            self.logprob_threshold is not None and result.avg_logprob < self.logprob_threshold
        )
        return unlikely or not any(character.isalnum() for character in result.text)

    def failed(self, result: whisper.DecodingResult, budget: int | None) -> bool:
        """Whether the row needs another try: cut at its budget, a loop, or unlikely."""
        if self.silent(result):
            return False
        return (
            hit_budget(result, budget)
            or (
                self.compression_ratio_threshold is not None
                and result.compression_ratio > self.compression_ratio_threshold
            )
            or (self.logprob_threshold is not None and result.avg_logprob < self.logprob_threshold)
        )


# whisper.transcribe's no-speech rule without its temperature fallback (whose samples made
# uncertain espeak-ng rows worse here: benchmarks/RESULTS.md): a row the model calls no speech,
# with unlikely text or no word in it, becomes "" (`LoopGuard.silent`). Whisper's decoding never
# ends at the first token (its SuppressBlank filter bans <|endoftext|> there; without it, its
# ranker divides by the empty length), so without this rule silence always gets a token.
NO_SPEECH_RULE = LoopGuard(temperatures=())


def decode_guarded(
    model: Whisper,
    features: torch.Tensor,
    options: whisper.DecodingOptions,
    budgets: list[int],
    guard: LoopGuard | None,
) -> list[whisper.DecodingResult]:
    """`decode_results` with `guard`'s fallback (None: plain greedy). The rows that fail are
    decoded again together at the next temperature (one sample each: openai-whisper's
    `best_of` does not batch); silent rows come back with text "" and no tokens.

    features : torch.Tensor, shape = (batch, n_mels, 3000) or (batch, n_audio_ctx, n_audio_state)
    """
    results = decode_results(model, features, options, budgets)
    if guard is None:
        return results
    retry = [i for i, r in enumerate(results) if guard.failed(r, budgets[i])]
    with torch.random.fork_rng(devices=[features.device] if features.device.type == "cuda" else []):
        torch.manual_seed(guard.seed)
        for temperature in guard.temperatures:
            if not retry:
                break
            again = decode_results(
                model,
                features[retry],
                dataclasses.replace(options, temperature=temperature),
                [budgets[i] for i in retry],
            )
            for i, result in zip(retry, again, strict=True):
                results[i] = result
            retry = [i for i in retry if guard.failed(results[i], budgets[i])]
    return [dataclasses.replace(r, text="", tokens=[]) if guard.silent(r) else r for r in results]


def hit_budget(result: whisper.DecodingResult, budget: int | None) -> bool:
    """Whether decoding stopped at its `budget` of tokens (a row's `decoding_budget`, or
    `options.sample_len`) instead of at end-of-text: the hypothesis was cut, the sign of a
    loop or a hallucination. None: Whisper's default budget, `max_decode_tokens`, applies;
    pass it explicitly."""
    return budget is not None and len(result.tokens) >= budget


def decode_texts(
    model: Whisper,
    features: torch.Tensor,
    options: whisper.DecodingOptions,
    budgets: list[int] | None = None,
) -> list[str]:
    """`decode_results`' texts, one per row (shapes and budgets as there)."""
    return [result.text for result in decode_results(model, features, options, budgets)]


SPEECHLESS_SECONDS = 5.0  # each clip of `speechless_clips`


def speechless_clips(seconds: float = SPEECHLESS_SECONDS) -> dict[str, np.ndarray]:
    """Clips with no speech in them, 16-kHz mono float32, seeded: digital silence, quiet
    white noise (RMS 0.01, about -40 dBFS) and louder pink noise (RMS 0.05, a fan or a
    room). A model must say nothing on them; a fine-tune that talks there hallucinates."""
    n = int(seconds * SAMPLE_RATE)
    rng = np.random.default_rng(0)
    white = rng.standard_normal(n)
    hum = pink(rng.standard_normal(n))
    return {
        "silence": np.zeros(n, dtype=np.float32),
        "white_noise": (0.01 * white / white.std()).astype(np.float32),
        "pink_noise": (0.05 * hum / hum.std()).astype(np.float32),
    }


@torch.inference_mode()
def speechless_outputs(
    model: Whisper, options: whisper.DecodingOptions, guard: LoopGuard | None = NO_SPEECH_RULE
) -> dict[str, str]:
    """What `model` says on each of `speechless_clips`, decoded with `options` (greedy, the
    audio's own budget) and `guard` (`NO_SPEECH_RULE`: as `transcribe` decodes them; None:
    plain greedy, which always says at least one token); "" for each is what a good model
    gives."""
    clips = speechless_clips()
    device = next(model.parameters()).device
    mel = window_mel(list(clips.values()), model.dims.n_mels, device)
    budgets = budgets_for([SPEECHLESS_SECONDS] * len(clips), model.dims.n_text_ctx)
    results = decode_guarded(model, mel, options, budgets, guard)
    return {name: result.text for name, result in zip(clips, results, strict=True)}


def speechless_said_rate(said: dict[str, str]) -> float:
    """The share of `speechless_outputs` that hold any text (0.0 is right)."""
    return sum(bool(text.strip()) for text in said.values()) / len(said)
