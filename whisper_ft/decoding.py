"""Evaluation and transcription by real decoding: `whisper.DecodingOptions` and batched greedy."""

import torch
import whisper
from whisper.model import Whisper


def decoding_options(
    language: str, task: str, device: torch.device, sample_len: int | None = None
) -> whisper.DecodingOptions:
    """The options evaluation and `transcribe` share: greedy, no timestamps, fp16 on CUDA.

    Greedy because openai-whisper's batched beam search repeats the tokens per beam but not
    the audio features, so it breaks for batches of more than one utterance.
    """
    return whisper.DecodingOptions(
        language=language,
        task=task,
        without_timestamps=True,
        fp16=device.type == "cuda",
        sample_len=sample_len,
    )


def sample_len_for(label_lengths: torch.Tensor, n_text_ctx: int) -> int:
    """Tokens to sample: 25% + 8 above the longest reference, at most Whisper's default half
    context. A model that never emits `eot` (a random one) then costs little time.

    label_lengths : torch.Tensor, shape = (batch,), tokens per label sequence (prefix + eot incl.)
    """
    return min(n_text_ctx // 2, int(label_lengths.max()) * 5 // 4 + 8)


def decode_texts(
    model: Whisper, features: torch.Tensor, options: whisper.DecodingOptions
) -> list[str]:
    """Batched greedy decoding; returns one text per row.

    features : torch.Tensor, shape = (batch, n_mels, 3000) log-mel, or (batch, n_audio_ctx,
        n_audio_state) encoder output (then `model.decode` skips the encoder).
    """
    # Mixed-precision training wraps evaluation in autocast; decoding keeps Whisper's own
    # fp16/fp32 choice instead.
    with torch.autocast(features.device.type, enabled=False):
        results = model.decode(features, options)
    return [result.text for result in results]
