"""Model FLOPs, device peaks and the training-throughput callback (samples/s and MFU).

    encoder_forward_flops(dims)                  one utterance through the encoder
    decoder_forward_flops(dims, n_tokens)        one token sequence through the decoder
    decoder_training_flops(dims, n_tokens)       forward + backward of the decoder
    training_flops_per_sample(dims, n_tokens, encoder="frozen"|"cached"|"trained")
    peak_flops(device)                           dense bf16/fp16 peak, None for a CPU/unknown GPU
    ThroughputLogger()                           logs samples_per_s (and mfu) during every fit

FLOPs are counted from `ModelDimensions` alone, as nanoGPT and PaLM count "model FLOPs": 2 per
multiply-add of every matmul and convolution the model needs, whatever the kernels really run
(attention recomputation, padding waste and elementwise work are not counted). With
d = n_audio_state (encoder) or n_text_state (decoder), T = n_audio_ctx (1500 frames for 30 s),
N = decoder tokens, V = n_vocab:

    encoder forward = conv stem + n_audio_layer × layer
        conv1 (n_mels → d, kernel 3, 2T frames)  2 · 2T · 3 · n_mels · d
        conv2 (d → d, kernel 3, stride 2, T out)  2 · T · 3 · d²
        layer: q, k, v, out projections           4 · 2 · T · d²
               scores q·kᵀ and weights·v           2 · 2 · T² · d
               MLP d → 4d → d                      2 · 2 · T · 4d²
    decoder forward = n_text_layer × layer + logits
        self-attention: projections 4 · 2 · N · d², scores and values 2 · 2 · N² · d
        cross-attention: q and out projections 2 · 2 · N · d², k and v projections of the
            audio features 2 · 2 · T · d², scores and values 2 · 2 · N · T · d
        MLP 2 · 2 · N · 4d²; logits (tied token embedding) 2 · N · d · V

Training is forward + backward, the backward costing twice the forward (one matmul for the
gradient of the input, one for the weight): 3 × forward. One exception: the cross-attention k/v
projections read the encoder output, which needs no gradient when the encoder is frozen or
cached, so they cost 2 × their forward (forward + weight gradient). For whisper-small (d = 768,
12 + 12 layers) that gives 344 GFLOP per encoder forward and 149 GFLOP to train the decoder on
64 tokens (3 × forward would say 192); the k/v projections over 1,500 frames are most of it.

MFU = model FLOPs per second / the device's dense 16-bit tensor peak (`peak_flops`).
"""

import re
import time
from typing import Literal

import pytorch_lightning as pl
import torch
from whisper.model import ModelDimensions

EncoderWork = Literal["frozen", "cached", "trained"]  # what a training step does with audio

# Dense (no 2:4 sparsity) FP16/BF16 tensor-core peaks with FP32 accumulate, FLOP/s, from the
# vendor's datasheets (their "with sparsity" figures are twice these). Matched in order against
# `torch.cuda.get_device_name()`, lower-cased: the first pattern found wins.
_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    # H200 datasheet: 1,979 TFLOPS (SXM) / 1,671 (NVL) BF16/FP16 with sparsity.
    (r"h200 nvl", 835e12),
    (r"h200", 989e12),
    # H100 datasheet: 1,979 (SXM), 1,671 (NVL), 1,513 (PCIe) TFLOPS with sparsity. The SXM
    # part reports itself as "NVIDIA H100 80GB HBM3", the PCIe one as "H100 PCIe" (or HBM2e).
    (r"h100 nvl", 835e12),
    (r"h100.*(pcie|hbm2e)", 756e12),
    (r"h100", 989.4e12),
    # A100 datasheet (SXM4 and PCIe alike): 312 TFLOPS BF16/FP16 dense, 624 with sparsity.
    (r"a100", 312e12),
    # NVIDIA publishes no A10G (AWS) sheet; the A10 datasheet gives 125 TFLOPS dense
    # (250 with sparsity), the figure cloud GPU tables use for the A10G too.
    (r"a10g?\b", 125e12),
    # L4 datasheet: 242 TFLOPS FP16/BF16 with sparsity.
    (r"\bl4\b", 121e12),
    # T4 datasheet: 65 TFLOPS FP16 mixed precision (Turing has no bf16).
    (r"\bt4\b", 65e12),
    # V100 datasheet: 125 (SXM2), 112 (PCIe), 130 (V100S) TFLOPS tensor performance, FP16.
    (r"v100s", 130e12),
    (r"v100.*pcie", 112e12),
    (r"v100", 125e12),
    # Ada whitepaper (GeForce RTX 4090): 165.2 TFLOPS FP16/BF16 tensor with FP32 accumulate
    # (330.3 with FP16 accumulate, which PyTorch's matmuls do not use).
    (r"rtx 4090", 165.2e12),
)


def encoder_forward_flops(dims: ModelDimensions) -> float:
    """FLOPs of one utterance (30 s, 2 · n_audio_ctx mel frames) through the encoder."""
    d, t = dims.n_audio_state, dims.n_audio_ctx
    conv = 2 * (2 * t) * 3 * dims.n_mels * d + 2 * t * 3 * d * d
    projections = 4 * 2 * t * d * d
    attention = 2 * 2 * t * t * d
    mlp = 2 * 2 * t * 4 * d * d
    return float(conv + dims.n_audio_layer * (projections + attention + mlp))


def _decoder_layer_flops(dims: ModelDimensions, n_tokens: int) -> tuple[float, float]:
    """(FLOPs of one decoder layer except the cross-attention k/v projections, FLOPs of those
    projections of the n_audio_ctx audio features)."""
    d, t, n = dims.n_text_state, dims.n_audio_ctx, n_tokens
    self_attention = 4 * 2 * n * d * d + 2 * 2 * n * n * d
    cross_attention = 2 * 2 * n * d * d + 2 * 2 * n * t * d
    mlp = 2 * 2 * n * 4 * d * d
    return float(self_attention + cross_attention + mlp), float(2 * 2 * t * d * d)


def decoder_forward_flops(dims: ModelDimensions, n_tokens: int) -> float:
    """FLOPs of one sequence of `n_tokens` tokens through the decoder, attending to one
    utterance's audio features, up to the logits over n_vocab."""
    layer, kv = _decoder_layer_flops(dims, n_tokens)
    logits = 2 * n_tokens * dims.n_text_state * dims.n_vocab
    return dims.n_text_layer * (layer + kv) + logits


def decoder_training_flops(
    dims: ModelDimensions, n_tokens: int, audio_features_grad: bool = False
) -> float:
    """FLOPs of the decoder's forward and backward for one sequence of `n_tokens`: 3 × forward,
    except the cross-attention k/v projections at 2 × when the audio features need no gradient
    (`audio_features_grad` False: the encoder is frozen or its output cached)."""
    forward = decoder_forward_flops(dims, n_tokens)
    if audio_features_grad:
        return 3 * forward
    _, kv = _decoder_layer_flops(dims, n_tokens)
    return 3 * forward - dims.n_text_layer * kv


def training_flops_per_sample(
    dims: ModelDimensions, n_tokens: int, encoder: EncoderWork = "frozen"
) -> float:
    """Model FLOPs one training utterance costs, by what the step does with its audio:
    `frozen` runs the encoder forward (live paths), `cached` reads its stored output (no
    encoder work: it was done once, before), `trained` runs it forward and backward."""
    if encoder == "cached":
        return decoder_training_flops(dims, n_tokens)
    if encoder == "frozen":
        return encoder_forward_flops(dims) + decoder_training_flops(dims, n_tokens)
    if encoder == "trained":
        return 3 * encoder_forward_flops(dims) + decoder_training_flops(
            dims, n_tokens, audio_features_grad=True
        )
    raise ValueError(f"encoder must be 'frozen', 'cached' or 'trained', got {encoder!r}")


def peak_flops_of(device_name: str) -> float | None:
    """The dense bf16/fp16 peak (FLOP/s) of a GPU named as `torch.cuda.get_device_name` names
    it, or None when the table does not know it."""
    name = device_name.lower()
    return next((peak for pattern, peak in _PEAK_FLOPS if re.search(pattern, name)), None)


def peak_flops(device: torch.device | str) -> float | None:
    """The dense bf16/fp16 peak (FLOP/s) of `device`; None for a CPU (no meaningful tensor
    peak) and for GPUs the table does not know."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device))


class ThroughputLogger(pl.Callback):
    """Logs `samples_per_s` (training utterances per second of wall clock, all processes) and,
    on a GPU whose peak `peak_flops` knows, `mfu`, every `log_every_n_steps` optimizer steps.

    The time window runs from the start of the first training batch (the DataLoader's start-up
    is not in it) to each logging step; time spent in validation is taken out. On CUDA the
    device is synchronised only at logging steps and around validation, never every step.
    FLOPs per batch come from the module's Whisper dims (`pl_module.model.dims`), the width of
    the batch's `dec_input_ids`, and whether the batch carries `features` (cached encoder
    output: no encoder work) or audio (the encoder runs, trained if any of its parameters
    requires a gradient).

    Args:
        log_every_n_steps: Optimizer steps per logged value; None: the Trainer's
            `log_every_n_steps`, so that every value reaches the logger.
    """

    def __init__(self, log_every_n_steps: int | None = None) -> None:
        super().__init__()
        self.log_every_n_steps = log_every_n_steps
        self._peak: float | None = None
        self._encoder_trained = False
        self._reset_window(None)
        self._paused_at: float | None = None
        self._last_logged_step = -1

    def _reset_window(self, start: float | None) -> None:
        self._window_start = start
        self._samples = 0
        self._flops = 0.0

    def _sync(self, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._peak = peak_flops(pl_module.device)
        encoder = pl_module.model.encoder
        self._encoder_trained = any(p.requires_grad for p in encoder.parameters())
        self._reset_window(None)
        self._last_logged_step = -1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict, batch_idx: int
    ) -> None:
        if self._window_start is None:
            self._sync(pl_module)
            self._window_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: dict,
        batch_idx: int,
    ) -> None:
        n_utterances, n_tokens = batch["dec_input_ids"].shape
        if n_utterances:
            if "features" in batch:
                encoder: EncoderWork = "cached"
            else:
                encoder = "trained" if self._encoder_trained else "frozen"
            per_sample = training_flops_per_sample(pl_module.model.dims, n_tokens, encoder)
            self._samples += n_utterances
            self._flops += n_utterances * per_sample
        every = self.log_every_n_steps or trainer.log_every_n_steps
        step = trainer.global_step
        if not every or step % every or step == self._last_logged_step or not self._samples:
            return
        self._sync(pl_module)
        now = time.perf_counter()
        elapsed = now - self._window_start
        world = trainer.world_size
        samples_per_s = self._samples * world / elapsed
        pl_module.log("samples_per_s", samples_per_s, prog_bar=True, on_step=True, on_epoch=False)
        if self._peak is not None:
            mfu = self._flops / elapsed / self._peak
            pl_module.log("mfu", mfu, prog_bar=True, on_step=True, on_epoch=False)
        self._last_logged_step = step
        self._reset_window(now)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._window_start is not None and not trainer.sanity_checking:
            self._sync(pl_module)
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._paused_at is not None:
            self._window_start += time.perf_counter() - self._paused_at
            self._paused_at = None
