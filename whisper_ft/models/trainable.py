"""What fine-tuning trains of a Whisper model: a frozen encoder (or its top blocks training),
the decoder parts that learn (all of it, its cross-attention, or its last layers), LoRA
adapters and their merge back into plain weights, and gradient checkpointing.

    freeze(model.encoder)
    first = train_encoder_top(model.encoder, 2)            # blocks[first:] and ln_post train
    audio_features = encoder_top(model.encoder, x, first)  # x: the input of blocks[first]
    select_trainable(model.decoder, "cross_attention")     # → parameters that train
    add_lora(model.decoder, rank=8, alpha=16.0)            # peft, imported only here
    plain = merge_lora_state(state_dict, scaling=16.0 / 8)  # what every checkpoint read does
"""

from typing import Literal

import torch
import torch.utils.checkpoint
from whisper.model import ResidualAttentionBlock


def freeze(module: torch.nn.Module) -> None:
    """No gradients and eval mode for `module` (the encoder, when only the decoder trains)."""
    module.requires_grad_(False)
    module.eval()


def train_encoder_top(encoder: torch.nn.Module, top_layers: int) -> int:
    """Gradients on (and train mode) for the last `top_layers` blocks of a Whisper
    `AudioEncoder` and its `ln_post`, the rest left as it is (frozen by `freeze`); returns the
    index of the first block that trains (n_audio_layer when `top_layers` is 0: none).

    At most n_audio_layer - 1 blocks: the first block's input is the convs' output, and a
    feature cache of it would save nothing (train the whole encoder with freeze_encoder
    false instead).
    """
    n_layers = len(encoder.blocks)
    if not 0 <= top_layers < n_layers:
        raise ValueError(
            f"encoder_top_layers={top_layers}: use 0 to {n_layers - 1} (the encoder has "
            f"{n_layers} blocks; 0 trains none; to train all of it, set freeze_encoder false)."
        )
    if top_layers:
        for module in (*encoder.blocks[-top_layers:], encoder.ln_post):
            module.requires_grad_(True)
            module.train()
    return n_layers - top_layers


def encoder_top(encoder: torch.nn.Module, x: torch.Tensor, first_block: int) -> torch.Tensor:
    """The rest of Whisper's `AudioEncoder.forward` from the input of `blocks[first_block]`:
    those blocks, then `ln_post`. `x` from `data.feature_cache.encoder_stem(encoder, mel,
    first_block)` gives `encoder(mel)`.

    x : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state)
    returns : torch.Tensor, shape = (batch, n_audio_ctx, n_audio_state)
    """
    for block in encoder.blocks[first_block:]:
        x = block(x)
    return encoder.ln_post(x)


# Which decoder weights fine-tuning updates: all of them, the cross-attention (the part that
# listens) of every block, or the last `last_layers` blocks with the final layer norm.
TrainParts = Literal["decoder", "cross_attention", "last_layers"]


def select_trainable(decoder: torch.nn.Module, parts: TrainParts, last_layers: int = 2) -> int:
    """Leave gradients on for `parts` of a Whisper `TextDecoder` only; returns how many
    parameters train."""
    if parts not in ("decoder", "cross_attention", "last_layers"):
        raise ValueError(f"train_parts={parts!r}: use decoder, cross_attention or last_layers.")
    if parts != "decoder":
        decoder.requires_grad_(False)
        if parts == "cross_attention":
            for block in decoder.blocks:
                block.cross_attn.requires_grad_(True)
                block.cross_attn_ln.requires_grad_(True)
        else:
            if not 1 <= last_layers <= len(decoder.blocks):
                raise ValueError(
                    f"last_layers={last_layers}: use 1 to {len(decoder.blocks)} (the decoder's "
                    "blocks)."
                )
            for block in decoder.blocks[-last_layers:]:
                block.requires_grad_(True)
            decoder.ln.requires_grad_(True)
    return sum(p.numel() for p in decoder.parameters() if p.requires_grad)


# The decoder's linear layers that get LoRA adapters: every attention projection (self and
# cross), as in the LoRA paper's transformer experiments.
LORA_TARGETS = ["query", "key", "value", "out"]


def add_lora(decoder: torch.nn.Module, rank: int, alpha: float) -> int:
    """Low-rank adapters (peft's LoRA, `alpha / rank` scaling) on the decoder's attention
    projections; only the adapters train. Returns how many parameters train.

    The adapters are merged into the weights when a checkpoint is exported or loaded as a base
    model (`merge_lora_state`), so `whisper.load_model` reads the result as a plain Whisper.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:
        raise ImportError(
            "lora_rank > 0 needs peft: pip install -r requirements-optional.txt"
        ) from e
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=LORA_TARGETS, lora_dropout=0.0)
    inject_adapter_in_model(config, decoder)
    for name, parameter in decoder.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return sum(p.numel() for p in decoder.parameters() if p.requires_grad)


def merge_lora_state(state_dict: dict, scaling: float) -> dict:
    """A state dict with peft LoRA layers (`….base_layer.weight`, `….lora_A.default.weight`,
    `….lora_B.default.weight`) as plain Whisper's: W + scaling · B A under the layer's name.
    A state dict without adapters is returned as it is."""
    merged = {}
    for key, value in state_dict.items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            layer, kind = key.split(".base_layer.")
            if kind == "weight":
                a = state_dict[f"{layer}.lora_A.default.weight"].float()
                b = state_dict[f"{layer}.lora_B.default.weight"].float()
                value = (value.float() + scaling * (b @ a)).to(value.dtype)
            key = f"{layer}.{kind}"
        merged[key] = value
    return merged


def checkpoint_blocks(model: torch.nn.Module) -> int:
    """Gradient checkpointing for every `ResidualAttentionBlock` under `model`: in training
    (gradients on, no kv_cache) a block keeps only its input and recomputes its activations
    during backward, trading ~1/3 more compute for activation memory that no longer grows with
    depth; in inference (decoding) blocks run as before. Returns how many blocks it wrapped.
    """
    blocks = [m for m in model.modules() if isinstance(m, ResidualAttentionBlock)]
    for block in blocks:
        forward = block.forward

        def checkpointed(x, xa=None, mask=None, kv_cache=None, forward=forward):
            if kv_cache is None and torch.is_grad_enabled():
                return torch.utils.checkpoint.checkpoint(
                    forward, x, xa, mask, None, use_reentrant=False
                )
            return forward(x, xa, mask, kv_cache)

        block.forward = checkpointed  # this instance only; whisper's class is untouched
    return len(blocks)
