"""Evaluation and transcription by real decoding: `whisper.DecodingOptions` and batched greedy."""

import functools

import torch
import whisper
from whisper.model import Whisper
from whisper.tokenizer import Tokenizer

# What a katakana transcript may contain besides the katakana block (U+30A0–U+30FF, with ー):
# the punctuation OpenJTalk's g2p keeps, and the space.
KANA_PUNCTUATION = "、。！？・「」 "


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


def sample_len_for(label_lengths: torch.Tensor, n_text_ctx: int) -> int:
    """Tokens to sample: 25% + 8 above the longest reference, at most Whisper's default half
    context. A model that never emits `eot` (a random one) then costs little time.

    label_lengths : torch.Tensor, shape = (batch,), tokens per label sequence (prefix + eot incl.)
    """
    return min(n_text_ctx // 2, int(label_lengths.max()) * 5 // 4 + 8)


def decode_results(
    model: Whisper, features: torch.Tensor, options: whisper.DecodingOptions
) -> list[whisper.DecodingResult]:
    """Batched greedy decoding; one `whisper.DecodingResult` per row (`.text`, `.tokens`
    without end-of-text, `.avg_logprob`, `.compression_ratio`).

    features : torch.Tensor, shape = (batch, n_mels, 3000) log-mel, or (batch, n_audio_ctx,
        n_audio_state) encoder output (then `model.decode` skips the encoder).
    """
    # Mixed-precision training wraps evaluation in autocast; decoding keeps Whisper's own
    # fp16/fp32 choice instead.
    with torch.autocast(features.device.type, enabled=False):
        return model.decode(features, options)


def hit_budget(result: whisper.DecodingResult, options: whisper.DecodingOptions) -> bool:
    """Whether decoding stopped at `options.sample_len` tokens instead of at end-of-text: the
    hypothesis was cut, the sign of a loop or a hallucination."""
    return options.sample_len is not None and len(result.tokens) >= options.sample_len


def decode_texts(
    model: Whisper, features: torch.Tensor, options: whisper.DecodingOptions
) -> list[str]:
    """`decode_results`' texts, one per row (shapes as there)."""
    return [result.text for result in decode_results(model, features, options)]
